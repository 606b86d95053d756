#!/usr/bin/env bash
# Create (or reuse) a virtual environment with mergenet and its test tools.
# torch goes in first and pinned: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
"$VENV/bin/python" -m pip install -q -e ".[test]"

# The status-page browser test drives the system's Chromium; install it (Debian packages) when
# it is missing and we may (root, as in CI). Elsewhere that one test skips, saying how to install it.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
        && command -v apt-get >/dev/null; then
    apt-get update -q && apt-get install -y -q chromium chromium-driver
fi
