#!/usr/bin/env bash
# Create (or reuse) a virtual environment with mergenet and its test tools.
# torch goes in first and pinned: an unpinned torch would pull a multi-GB CUDA build.
# Each step says what it does and pip shows what it fetches (the first run takes a few minutes);
# QUIET=1 keeps pip to errors only.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PIP_FLAGS=(--progress-bar on)
[ "${QUIET:-0}" = 1 ] && PIP_FLAGS=(-q)
step() { printf '==> [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
if [ ! -x "$VENV/bin/python" ]; then
    step "creating the virtual environment $VENV"
    python3 -m venv "$VENV"
fi
step "upgrading pip"
"$VENV/bin/python" -m pip install -q --upgrade pip
step "installing torch ${TORCH_VERSION:-2.13.0} (CPU build)"
"$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" "torch==${TORCH_VERSION:-2.13.0}"
step "installing mergenet and its test tools"
"$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" -e ".[test]"

# The status-page browser test drives the system's Chromium; install it (Debian packages) when
# it is missing and we may (root, as in CI). Elsewhere that one test skips, saying how to install it.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
        && command -v apt-get >/dev/null; then
    apt-get update -q && apt-get install -y -q chromium chromium-driver
fi
step "done: $VENV/bin/mergenet --version → $("$VENV/bin/mergenet" --version)"
