#!/usr/bin/env bash
# Regenerate protos/mergenet_pb2.py and protos/mergenet_pb2_grpc.py from protos/mergenet.proto.
# Usage: scripts/gen_protos.sh [OUT_DIR]   (default: protos/; the staleness test uses a temp dir)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/protos}"
python="${PYTHON:-python}"
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I "$root/protos" --python_out="$out" --grpc_python_out="$out" \
    "$root/protos/mergenet.proto"
# protoc writes `import mergenet_pb2`, which only works with protos/ on sys.path; make it relative.
sed -i 's/^import mergenet_pb2 as /from . import mergenet_pb2 as /' "$out/mergenet_pb2_grpc.py"
