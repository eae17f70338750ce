#!/usr/bin/env bash
# Fetch the real backends used by the end-to-end tests into .tools/ (git-ignored):
#   .tools/bin/victoria-metrics  VictoriaMetrics single-node, from Debian trixie's `victoria-metrics` .deb
#   .tools/bin/phoenix           Arize Phoenix, from PyPI into .tools/phoenix-venv
#   .tools/bin/redis-server      Redis (fleet label store), from the machine's own Debian release:
#   .tools/bin/redis-cli         `redis-server` + `redis-tools` .debs and the libraries a bare machine
#   .tools/bin/redis-benchmark   lacks, extracted into .tools/redis; bin/ holds wrapper scripts
#   .tools/capture-venv          the OpenTelemetry Python SDK + OTLP exporters and the cloudevents SDK,
#                                pinned (CAPTURE_PACKAGES), for the no-code capture tests (tests/capture/)
#   .tools/mlserver-venv         MLServer + its scikit-learn runtime, pinned (MLSERVER_PACKAGES): the real
#                                Open Inference Protocol server behind the tap in tests/tap.rs
# Idempotent: each part is skipped when its binary already runs. Usage:
#   tools/install-backends.sh [vm|phoenix|redis|capture|mlserver|all]      (default: all)
# Env: PHOENIX_VERSION (pinned default below), PYTHON (default python3, needs >= 3.11), FORCE=1 to redo.
# Phoenix's transitive dependencies are pinned by the constraints list at the bottom of this file
# (a `pip freeze` of a working install); it is only applied with the default PHOENIX_VERSION.
# No host names are written anywhere: the apt URI is copied from /etc/apt/sources.list.d/*.sources.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
PHOENIX_DEFAULT_VERSION=20.26.1
PHOENIX_VERSION="${PHOENIX_VERSION:-$PHOENIX_DEFAULT_VERSION}"
PYTHON="${PYTHON:-python3}"
FORCE="${FORCE:-0}"
WHAT="${1:-all}"

log() { printf '[install-backends] %s\n' "$*" >&2; }
mkdir -p "$BIN"

install_vm() {
  local link="$BIN/victoria-metrics"
  if [[ "$FORCE" != 1 && -x "$link" ]] && "$link" -version >/dev/null 2>&1; then
    log "victoria-metrics already installed ($(cat "$TOOLS/victoria-metrics/.deb-version" 2>/dev/null || echo unknown version))"
    return 0
  fi
  command -v apt-get >/dev/null && command -v dpkg >/dev/null || { log "need apt-get and dpkg"; exit 1; }

  # Copy URI + Signed-By of the main (non-security) Debian entry out of the deb822 .sources file(s).
  local uri="" signed=""
  read -r uri signed < <(
    awk '
      function flush() { if (uri != "" && suites ~ /(^| )(bookworm|trixie|stable)( |$)/ && !found) { print uri, signed; found=1 } uri=""; suites=""; signed="" }
      /^[[:space:]]*$/ { flush(); next }
      /^#/ { next }
      tolower($1) == "uris:"      { uri=$2 }
      tolower($1) == "suites:"    { $1=""; suites=$0; sub(/^ /, "", suites) }
      tolower($1) == "signed-by:" { signed=$2 }
      END { flush() }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null
  ) || true
  if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
    # One-line format fallback: "deb [signed-by=...] URI bookworm main"
    uri="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) ~ /^(bookworm|trixie|stable)$/) { print $i; exit } } }' /etc/apt/sources.list)"
  fi
  if [[ -z "$uri" ]]; then log "no Debian entry found in /etc/apt/sources.list.d/*.sources or sources.list"; exit 1; fi
  if [[ -z "$signed" ]]; then signed=/usr/share/keyrings/debian-archive-keyring.gpg; fi
  log "using apt URI from the system sources (Signed-By: $signed)"

  local apt="$TOOLS/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
  cat > "$apt/trixie.sources" <<SRC
Types: deb
URIs: $uri
Suites: trixie
Components: main
Signed-By: $signed
SRC
  local opts=(
    -o "Dir::Etc::SourceList=$apt/trixie.sources"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt/lists"
    -o "Dir::Cache=$apt/cache"
    -o "Dir::Cache::archives=$apt/cache/archives"
    -o "APT::Sandbox::User=root"
    -o "Acquire::Retries=3"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
  )
  log "apt-get update (trixie only, private lists)"
  apt-get "${opts[@]}" -q update >&2
  log "apt-get download victoria-metrics"
  ( cd "$apt/debs" && rm -f victoria-metrics_*.deb && apt-get "${opts[@]}" -q download victoria-metrics >&2 )
  local deb
  deb="$(ls -1 "$apt/debs"/victoria-metrics_*.deb | head -n1)"
  log "extracting $(basename "$deb")"
  rm -rf "$TOOLS/victoria-metrics"
  mkdir -p "$TOOLS/victoria-metrics"
  dpkg -x "$deb" "$TOOLS/victoria-metrics"
  local exe=""
  for c in usr/bin/victoria-metrics usr/bin/victoria-metrics-prod usr/bin/victoriametrics; do
    if [[ -x "$TOOLS/victoria-metrics/$c" ]]; then exe="$c"; break; fi
  done
  [[ -n "$exe" ]] || { log "victoria-metrics binary not found in $deb"; exit 1; }
  # Relative links, so the checkout can move. (Debian's build prints an empty -version.)
  ln -sfn "../victoria-metrics/$exe" "$link"
  # vmagent ships in the same package; link it too (bridge OTLP -> Prometheus remote write).
  if [[ -x "$TOOLS/victoria-metrics/usr/bin/vmagent" ]]; then
    ln -sfn ../victoria-metrics/usr/bin/vmagent "$BIN/vmagent"
  fi
  basename "$deb" .deb > "$TOOLS/victoria-metrics/.deb-version"
  rm -f "$deb"   # 41 MB; the extracted tree is all we need
  "$link" -version >/dev/null 2>&1 || { log "$link does not run"; exit 1; }
  log "victoria-metrics installed from $(cat "$TOOLS/victoria-metrics/.deb-version")"
}

install_phoenix() {
  local venv="$TOOLS/phoenix-venv" link="$BIN/phoenix"
  if [[ "$FORCE" != 1 && -x "$link" && -f "$venv/.phoenix-version" ]] \
     && [[ "$(cat "$venv/.phoenix-version")" == "$PHOENIX_VERSION" ]]; then
    log "arize-phoenix $PHOENIX_VERSION already installed"
    return 0
  fi
  "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || { log "arize-phoenix needs Python >= 3.11 ($PYTHON is $("$PYTHON" -V 2>&1))"; exit 1; }
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
  fi
  local cons=()
  if [[ "$PHOENIX_VERSION" == "$PHOENIX_DEFAULT_VERSION" ]]; then
    sed -n '/^# BEGIN PHOENIX CONSTRAINTS$/,/^# END PHOENIX CONSTRAINTS$/{/^#/d;p}' "${BASH_SOURCE[0]}" > "$TOOLS/phoenix-constraints.txt"
    cons=(-c "$TOOLS/phoenix-constraints.txt")
  fi
  log "pip install arize-phoenix==$PHOENIX_VERSION (heavy: ~1.5 min, ~850 MB)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${cons[@]}" "arize-phoenix==$PHOENIX_VERSION" >&2
  ln -sfn ../phoenix-venv/bin/phoenix "$link"
  echo "$PHOENIX_VERSION" > "$venv/.phoenix-version"
  log "arize-phoenix installed: $("$venv/bin/python" -c 'import phoenix; print(phoenix.__version__)' 2>/dev/null || echo "$PHOENIX_VERSION")"
}

# Redis from the machine's configured Debian release (bookworm: 7.0), through the system's own apt
# lists (refreshed only when they lack redis-server or are too old to download from). Nothing is
# installed system-wide: the .debs are extracted into .tools/redis together with every shared
# library they need that this machine lacks (libjemalloc2 and liblzf1 always: they are not part of
# a Debian base system), and .tools/bin gets wrapper scripts that put those libraries on LD_LIBRARY_PATH.
REDIS_PACKAGES=(redis-server redis-tools)
REDIS_ALWAYS_LIBS=(libjemalloc2 liblzf1)
REDIS_PROGRAMS=(redis-server redis-cli redis-benchmark)

install_redis() {
  local dir="$TOOLS/redis"
  if [[ "$FORCE" != 1 && -f "$dir/.deb-version" ]] \
     && "$BIN/redis-server" --version >/dev/null 2>&1 && "$BIN/redis-cli" --version >/dev/null 2>&1; then
    log "redis already installed ($(head -n1 "$dir/.deb-version"))"
    return 0
  fi
  command -v apt-get >/dev/null && command -v dpkg >/dev/null || { log "need apt-get and dpkg"; exit 1; }

  local candidate
  candidate="$(apt-cache policy redis-server 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')"
  if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
    log "apt-get update (the system's lists have no redis-server; needs root)"
    apt-get -q update >&2
  fi

  # The packages to extract: redis itself, then the library dependencies (transitively) that are
  # not installed here. Scripts and services they depend on (adduser, lsb-base) are not needed.
  local want=("${REDIS_PACKAGES[@]}" "${REDIS_ALWAYS_LIBS[@]}") queue=(redis-tools "${REDIS_ALWAYS_LIBS[@]}") pkg dep
  while ((${#queue[@]})); do
    pkg="${queue[0]}"; queue=("${queue[@]:1}")
    # "Depends: a (>= 1), b | c, d:any" -> a b d (first alternative, no versions or arch qualifiers)
    for dep in $(apt-cache show --no-all-versions "$pkg" | sed -n 's/^Depends: //p' | tr ',' '\n' \
                 | sed 's/|.*//; s/(.*)//; s/:.*//; s/[[:space:]]//g'); do
      [[ "$dep" == lib* ]] || continue
      [[ " ${want[*]} " == *" $dep "* ]] && continue
      [[ "$(dpkg-query -W -f='${Status}' "$dep" 2>/dev/null)" == "install ok installed" ]] && continue
      want+=("$dep"); queue+=("$dep")
    done
  done

  local debs="$TOOLS/redis-debs"
  rm -rf "$debs"; mkdir -p "$debs"
  local download=(apt-get -o "APT::Sandbox::User=root" -o "Acquire::Retries=3" -q download "${want[@]}")
  log "apt-get download ${want[*]}"
  if ! ( cd "$debs" && "${download[@]}" >&2 ); then
    # Lists older than the mirror name .debs that are gone (a security update replaced them).
    log "download failed; apt-get update (the system's lists) and retry"
    apt-get -q update >&2
    ( cd "$debs" && "${download[@]}" >&2 )
  fi

  rm -rf "$dir"; mkdir -p "$dir"
  local deb
  for deb in "$debs"/*.deb; do
    log "extracting $(basename "$deb")"
    dpkg -x "$deb" "$dir"
  done
  [[ -x "$dir/usr/bin/redis-server" && -x "$dir/usr/bin/redis-cli" ]] || { log "redis binaries not found in the .debs"; exit 1; }

  # Directories holding the extracted shared libraries, for LD_LIBRARY_PATH: as the wrappers
  # spell them (from their own location) and as absolute paths (for the check below).
  local libdirs="" libpath="" d
  while read -r d; do
    libdirs+="${libdirs:+:}\$tools/${d#"$TOOLS/"}"
    libpath+="${libpath:+:}$d"
  done < <(find "$dir" -name 'lib*.so*' -printf '%h\n' | sort -u)
  local prog
  for prog in "${REDIS_PROGRAMS[@]}"; do
    [[ -x "$dir/usr/bin/$prog" ]] || continue
    rm -f "$BIN/$prog"
    # Paths relative to the script, so the checkout can move. redis-server is Debian's link to
    # redis-check-rdb: Redis picks its mode from argv[0]'s name, so exec through the link.
    cat > "$BIN/$prog" <<WRAPPER
#!/bin/sh
# Written by tools/install-backends.sh: Debian's $prog from .tools/redis with its libraries.
tools="\$(cd "\$(dirname "\$0")/.." && pwd)"
LD_LIBRARY_PATH="$libdirs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "\$tools/redis/usr/bin/$prog" "\$@"
WRAPPER
    chmod +x "$BIN/$prog"
  done

  # Every library resolves (a missing one would only show when the server is started).
  local missing
  missing="$(LD_LIBRARY_PATH="$libpath" ldd "$dir/usr/bin/redis-server" "$dir/usr/bin/redis-cli" \
    | awk '/not found/ { print $1 }' | sort -u | tr '\n' ' ')"
  [[ -z "$missing" ]] || { log "redis needs libraries that are not here: $missing"; exit 1; }

  # First line: redis-server's package; then every other extracted .deb (basenames, epoch decoded).
  { for deb in "$debs"/redis-server_*.deb "$debs"/*.deb; do basename "$deb" .deb; done \
      | sed 's/%3a/:/' | awk '!seen[$0]++'; } > "$dir/.deb-version"
  rm -rf "$debs"
  "$BIN/redis-server" --version >/dev/null 2>&1 || { log "$BIN/redis-server does not run"; exit 1; }
  log "redis installed from $(head -n1 "$dir/.deb-version"): $("$BIN/redis-server" --version)"
}

# The clients of the no-code capture tests (issue 12): OpenTelemetry's Python SDK sending spans over
# OTLP/gRPC and OTLP/HTTP (tests/capture/send_genai_spans.py) and the CloudEvents SDK posting
# KServe-shaped events. Exact versions; their own dependencies are whatever pip resolves for these.
CAPTURE_PACKAGES=(
  opentelemetry-sdk==1.39.1
  opentelemetry-exporter-otlp-proto-grpc==1.39.1
  opentelemetry-exporter-otlp-proto-http==1.39.1
  cloudevents==2.2.0
)

install_capture() {
  local venv="$TOOLS/capture-venv" want="${CAPTURE_PACKAGES[*]}"
  if [[ "$FORCE" != 1 && -f "$venv/.capture-packages" && "$(cat "$venv/.capture-packages")" == "$want" ]] \
     && "$venv/bin/python" -c 'import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, cloudevents' >/dev/null 2>&1; then
    log "capture clients already installed ($want)"
    return 0
  fi
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
  fi
  log "pip install ${CAPTURE_PACKAGES[*]}"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${CAPTURE_PACKAGES[@]}" >&2
  echo "$want" > "$venv/.capture-packages"
  log "capture clients installed into $venv"
}

# The Open Inference Protocol server behind the tap's tests (issue 13): MLServer with its
# scikit-learn runtime. uvloop 0.21.0: MLServer 1.7.1 does not start with a later uvloop here.
# scikit-learn and joblib pinned so that the model tests/tap/train.py writes loads in the server.
MLSERVER_PACKAGES=(
  mlserver==1.7.1
  mlserver-sklearn==1.7.1
  uvloop==0.21.0
  scikit-learn==1.6.1
  joblib==1.4.2
)

install_mlserver() {
  local venv="$TOOLS/mlserver-venv" want="${MLSERVER_PACKAGES[*]}"
  if [[ "$FORCE" != 1 && -f "$venv/.mlserver-packages" && "$(cat "$venv/.mlserver-packages")" == "$want" ]] \
     && "$venv/bin/python" -c 'import mlserver, mlserver_sklearn, sklearn' >/dev/null 2>&1; then
    log "mlserver already installed ($want)"
    return 0
  fi
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv $venv"
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
  fi
  log "pip install ${MLSERVER_PACKAGES[*]}"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${MLSERVER_PACKAGES[@]}" >&2
  echo "$want" > "$venv/.mlserver-packages"
  log "mlserver installed into $venv"
}

case "$WHAT" in
  vm|victoria-metrics) install_vm ;;
  phoenix) install_phoenix ;;
  redis) install_redis ;;
  capture) install_capture ;;
  mlserver) install_mlserver ;;
  all) install_vm; install_phoenix; install_redis; install_capture; install_mlserver ;;
  *) echo "usage: $0 [vm|phoenix|redis|capture|mlserver|all]" >&2; exit 2 ;;
esac
exit 0

# Pinned dependency set for arize-phoenix 20.26.1 on CPython 3.11 (pip freeze of a working install).
# BEGIN PHOENIX CONSTRAINTS
aiofile==3.12.3
aioitertools==0.13.0
aiosqlite==0.22.1
alembic==1.20.1
annotated-doc==0.0.7
annotated-types==0.8.0
anthropic==1.17.0
anyio==4.16.0
arize-phoenix-client==3.5.0
arize-phoenix-evals==3.9.4
arize-phoenix-otel==0.17.2
arize-phoenix-sqlean==0.2.1
attrs==26.1.0
Authlib==1.9.9
backports.tarfile==1.2.0
bashkit==0.20.1
beartype==0.23.1
boto3==1.44.5
botocore==1.44.5
cachetools==8.0.1
caio==0.12.10
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
click==8.5.1
cross-web==0.9.0
cryptography==50.0.2
cyclopts==5.4.0
distro==1.9.0
dnspython==2.9.2
docstring_parser==0.18.0
email-validator==2.4.0
exceptiongroup==1.3.1
fastapi==0.165.0
fastmcp-slim==4.1.2
genai-prices==0.2.3
google-auth==2.62.2
google-genai==2.34.0
googleapis-common-protos==1.76.0
graphql-core==3.3.2
greenlet==3.5.6
griffelib==2.4.1
grpc-interceptor==0.15.4
grpcio==1.85.1
h11==0.16.0
h2==4.4.1
hpack==4.2.0
httpcore==1.0.9
httpcore2==2.16.2
httpx==0.28.1
httpx2==2.16.2
hyperframe==6.1.0
idna==3.20
importlib_metadata==10.2.0
jaraco.classes==3.4.0
jaraco.context==6.1.2
jaraco.functools==4.6.0
jeepney==0.9.0
Jinja2==3.1.6
jiter==0.19.0
jmespath==1.1.0
joserfc==1.8.0
jsonpath-ng==1.16.0
jsonref==1.1.0
jsonschema==4.26.0
jsonschema-path==0.5.0
jsonschema-specifications==2025.9.1
keyring==25.7.0
lazy-importer==0.1.0
ldap3==2.9.1
logfire-api==5.6.0
Mako==1.4.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mcp==2.3.0
mcp-types==2.3.0
mdurl==0.1.2
more-itertools==11.2.1
numpy==2.4.6
openai==3.54.0
openapi-pydantic==0.6.0
openinference-instrumentation==0.1.72
openinference-instrumentation-openai==0.1.66
openinference-semantic-conventions==0.1.42
opentelemetry-api==1.45.2
opentelemetry-exporter-http-transport==0.66b2
opentelemetry-exporter-otlp==1.45.2
opentelemetry-exporter-otlp-common==0.66b2
opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-otlp-proto-grpc==1.45.2
opentelemetry-exporter-otlp-proto-http==1.45.2
opentelemetry-instrumentation==0.66b2
opentelemetry-proto==1.45.2
opentelemetry-sdk==1.45.2
opentelemetry-semantic-conventions==0.66b2
orjson==3.13.0
packaging==26.3
pandas==3.1.1
pathable==0.6.0
platformdirs==4.14.7
prometheus_client==0.26.0
protobuf==7.36.2
psutil==7.2.2
py-key-value-aio==0.4.6
pyarrow==26.0.1
pyasn1==0.6.5
pyasn1_modules==0.4.2
pycparser==3.12
pydantic==2.14.3
pydantic-ai-slim==2.68.0
pydantic-graph==2.68.0
pydantic-monty==1.1.0
pydantic-monty-client==1.1.0
pydantic-monty-runtime==1.1.0
pydantic-settings==2.16.3
pydantic_core==2.50.4
Pygments==2.21.0
PyJWT==2.15.1
pyperclip==1.11.0
pystache==0.6.8
python-dateutil==2.9.0.post0
python-dotenv==1.2.4
python-multipart==0.0.34
PyYAML==6.0.3
referencing==0.37.0
regex==2026.11.15
requests==2.34.2
rich==15.0.0
rich-rst==2.2.0
rpds-py==2026.9.1
s3transfer==0.19.3
SecretStorage==3.5.0
six==1.17.0
sniffio==1.3.1
snowballstemmer==3.1.1
SQLAlchemy==2.1.9
sqlglot==30.21.0
sse-starlette==3.7.0
starlette==1.10.0
strawberry-graphql==0.335.0
tenacity==9.1.4
tiktoken==0.14.0
tqdm==4.70.1
truststore==0.10.5
typing-inspection==0.4.5
typing_extensions==4.16.0
uncalled-for==0.6.1
urllib3==2.8.0
uvicorn==0.54.0
watchfiles==1.3.0
websockets==17.4
wrapt==2.5.2
zipp==4.1.2
# END PHOENIX CONSTRAINTS
