"""The committed generated code must be what scripts/gen_protos.sh makes from mergenet.proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("mergenet_pb2.py", "mergenet_pb2_grpc.py")


def test_generated_code_is_up_to_date(tmp_path):
    res = subprocess.run(["bash", str(REPO / "scripts" / "gen_protos.sh"), str(tmp_path)], cwd=REPO,
                         env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    for name in GENERATED:
        fresh = (tmp_path / name).read_text()
        committed = (REPO / "protos" / name).read_text()
        assert fresh == committed, f"protos/{name} is stale: run scripts/gen_protos.sh and commit the result"


def test_generated_grpc_module_imports_its_messages_relatively():
    text = (REPO / "protos" / "mergenet_pb2_grpc.py").read_text()
    assert "from . import mergenet_pb2" in text and "\nimport mergenet_pb2" not in text
    from protos import mergenet_pb2, mergenet_pb2_grpc

    assert mergenet_pb2_grpc.mergenet__pb2 is mergenet_pb2
    assert mergenet_pb2.DESCRIPTOR.package == "mergenet.v1"
    assert {"Registry", "Transfer"} <= set(mergenet_pb2.DESCRIPTOR.services_by_name)
