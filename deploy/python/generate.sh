#!/usr/bin/env bash
# Regenerates the protobuf and gRPC stubs in inferscope_client/inferscope/v1/ from the repository's
# proto/ folder, and fixes their imports so they load as part of the inferscope_client package.
#
#   deploy/python/generate.sh           # regenerate in place
#   deploy/python/generate.sh --check   # fail if the committed stubs differ from a fresh run (CI)
#
# grpcio-tools is pinned: the generated code refuses to load on runtimes older than the tools that
# generated it (protobuf gencode 5.29.0 and grpcio 1.71.2 for the pin below), so pyproject.toml's
# lower bounds follow this pin. Raise them together. Older stubs load on newer runtimes.
#
# Set PYTHON to an interpreter that already has grpcio-tools==$GRPCIO_TOOLS_VERSION to skip the
# throwaway virtual environment.
set -euo pipefail

GRPCIO_TOOLS_VERSION=1.71.2

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
proto_root=$(cd "$here/../../proto" && pwd)
dest="$here/inferscope_client/inferscope/v1"
check=false
[[ "${1:-}" == "--check" ]] && check=true

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python=${PYTHON:-}
if [[ -z "$python" ]]; then
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" install --quiet --disable-pip-version-check "grpcio-tools==$GRPCIO_TOOLS_VERSION"
  python="$tmp/venv/bin/python"
fi
have=$("$python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))')
if [[ "$have" != "$GRPCIO_TOOLS_VERSION" ]]; then
  echo "generate.sh: need grpcio-tools==$GRPCIO_TOOLS_VERSION, $python has $have" >&2
  exit 1
fi

mkdir -p "$tmp/out"
"$python" -m grpc_tools.protoc \
  -I"$proto_root" \
  --python_out="$tmp/out" --pyi_out="$tmp/out" --grpc_python_out="$tmp/out" \
  "$proto_root/inferscope/v1/ingest.proto"

gen="$tmp/out/inferscope/v1"
# protoc writes `from inferscope.v1 import ingest_pb2`, which only works with the output folder on
# sys.path; inside the package the import must be relative.
sed -i 's/^from inferscope\.v1 import ingest_pb2 as /from . import ingest_pb2 as /' "$gen/ingest_pb2_grpc.py"
if grep -n '^from inferscope\|^import inferscope' "$gen"/*.py "$gen"/*.pyi; then
  echo "generate.sh: an absolute inferscope import is left in the generated code" >&2
  exit 1
fi

if $check; then
  status=0
  for f in ingest_pb2.py ingest_pb2.pyi ingest_pb2_grpc.py; do
    diff -u "$dest/$f" "$gen/$f" || status=1
  done
  if [[ $status -ne 0 ]]; then
    echo "generate.sh: stubs are stale; run deploy/python/generate.sh" >&2
  fi
  exit $status
fi

mkdir -p "$dest"
cp "$gen/ingest_pb2.py" "$gen/ingest_pb2.pyi" "$gen/ingest_pb2_grpc.py" "$dest/"
echo "generated $dest/{ingest_pb2.py,ingest_pb2.pyi,ingest_pb2_grpc.py} with grpcio-tools $GRPCIO_TOOLS_VERSION"
