#!/usr/bin/env bash
# Tests of the alert rules in deploy/prometheus: vmalert validates the rule file (expressions and
# annotation templates), then `vmalert-tool unittest` runs every deploy/prometheus/tests/*.yaml
# against the rules. Both binaries come from Debian's victoria-metrics package, extracted into
# .tools/ by tools/install-backends.sh (CI runs it first). Exits non-zero on any failure.
# vmalert-tool serves its test storage on :8880 and keeps it in $TMPDIR/vmalert-unittest: run one
# at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.tools/victoria-metrics/usr/bin
rules=deploy/prometheus/inferscope-rules.yaml
for exe in vmalert vmalert-tool; do
  if [[ ! -x "$bin/$exe" ]]; then
    echo "test-alert-rules: $bin/$exe not found; install it with: tools/install-backends.sh vm" >&2
    exit 1
  fi
done
shopt -s nullglob
tests=(deploy/prometheus/tests/*.yaml)
if (( ${#tests[@]} == 0 )); then
  echo "test-alert-rules: no test files in deploy/prometheus/tests/" >&2
  exit 1
fi

# -dryRun: parse and validate, without a datasource. Its log goes to a file, shown on failure.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "$bin/vmalert" -rule="$rules" -dryRun >"$log" 2>&1; then
  cat "$log" >&2
  echo "test-alert-rules: vmalert cannot load $rules" >&2
  exit 1
fi
echo "vmalert: $rules loads"

files=()
for t in "${tests[@]}"; do files+=(--files "$t"); done
# vmalert-tool prints SUCCESS/FAILED per file; its exit status is checked, and so is its output
# (a test file that fails to parse must not pass unnoticed).
out=$(mktemp)
trap 'rm -f "$log" "$out"' EXIT
status=0
"$bin/vmalert-tool" unittest "${files[@]}" 2>&1 | tee "$out" || status=$?
if (( status != 0 )) || grep -q 'FAILED' "$out" || (( $(grep -c 'SUCCESS' "$out") != ${#tests[@]} )); then
  echo "test-alert-rules: FAILED" >&2
  exit 1
fi
echo "test-alert-rules: ${#tests[@]} test files passed"
