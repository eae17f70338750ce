#!/usr/bin/env bash
# Tests of the Python client in deploy/python: the committed stubs must match proto/, the native
# extension (deploy/python/native) must build, and the client's unit tests (against an in-process
# fake server) must pass for both implementations, the native one and the pure-Python one.
#
# Uses a venv in .tools/ with grpcio-tools at the pin of deploy/python/generate.sh (it brings
# grpcio and protobuf at the client's minimum supported versions) and maturin at the pin below.
# The extension is built by `maturin develop --profile ci` (deploy/python/native/Cargo.toml: no
# LTO, opt-level 1; fast to compile, not for measuring) into the sidecar's target directory, and
# installed into the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=.tools/client-venv
MATURIN_VERSION=1.16.0
pin=$(sed -n 's/^GRPCIO_TOOLS_VERSION=//p' deploy/python/generate.sh)
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('grpcio-tools') != '$pin' or m.version('maturin') != '$MATURIN_VERSION')" 2>/dev/null; then
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "grpcio-tools==$pin" "maturin==$MATURIN_VERSION"
fi
PYTHON="$PWD/$venv/bin/python" deploy/python/generate.sh --check

start=$(date +%s)
(cd deploy/python/native && VIRTUAL_ENV="$root/$venv" PATH="$root/$venv/bin:$PATH" \
  CARGO_TARGET_DIR="$root/target" "$root/$venv/bin/maturin" develop --quiet --profile ci --locked)
echo "test-python-client: native extension built and installed in $(( $(date +%s) - start )) s"

(cd deploy/python && INFERSCOPE_REQUIRE_NATIVE=1 "../../$venv/bin/python" -m unittest discover -s tests)
