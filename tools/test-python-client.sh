#!/usr/bin/env bash
# Tests of the Python client in deploy/python: the committed stubs must match proto/, and the
# client's unit tests (against an in-process fake server) must pass. Uses a venv in .tools/
# with grpcio-tools at the pin of deploy/python/generate.sh (it brings grpcio and protobuf at the
# client's minimum supported versions).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/client-venv
pin=$(sed -n 's/^GRPCIO_TOOLS_VERSION=//p' deploy/python/generate.sh)
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('grpcio-tools') != '$pin')" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "grpcio-tools==$pin"
fi
PYTHON="$PWD/$venv/bin/python" deploy/python/generate.sh --check
(cd deploy/python && "../../$venv/bin/python" -m unittest discover -s tests)
