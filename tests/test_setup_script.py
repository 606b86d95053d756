"""scripts/setup.sh tells what it is doing (issue 12: it used to run for minutes in silence):
run against a stand-in venv whose python records how pip was called."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fake_venv(root: Path) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$@" >> {root}/calls\n')
    (bin_dir / "mergenet").write_text("#!/bin/sh\necho mergenet 0.0-test\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return root


def test_setup_prints_each_step_and_lets_pip_show_progress(tmp_path):
    venv = fake_venv(tmp_path / "venv")
    res = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, env={**os.environ, "VENV": str(venv)},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    steps = [line for line in res.stdout.splitlines() if line.startswith("==>")]
    assert len(steps) == 4 and "torch" in steps[1] and "mergenet 0.0-test" in steps[-1]
    installs = [c for c in (venv / "calls").read_text().splitlines() if "--upgrade pip" not in c]
    assert len(installs) == 2 and all("-q" not in c.split() and "--progress-bar on" in c for c in installs)

    quiet = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, env={**os.environ, "VENV": str(venv), "QUIET": "1"},
                           capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and (venv / "calls").read_text().splitlines()[-1].split()[3] == "-q"
