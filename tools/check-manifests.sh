#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/, offline:
#   1. renders every kustomization under deploy/ (deploy/kubernetes, deploy/otel-collector and any
#      overlay added later) with `kubectl kustomize`;
#   2. validates every rendered object against the Kubernetes API's JSON schemas, strictly (an
#      unknown or misplaced field fails), for every Kubernetes version from 1.29 (native sidecars)
#      to the newest the pinned kubernetes-validate bundles; an object it has no schema for fails;
#   3. runs tools/check_restricted.py, after its self-test: every pod spec meets the Pod Security
#      Standards "restricted" profile (baseline included), mounts no service-account token, and
#      uses only images that are digest-pinned or listed in its kustomization's `images:`.
#   4. checks each KServe InferenceService's pod specs as Pods (schemas and restricted), see below.
# Needs kubectl (for `kubectl kustomize`) and python3 >= 3.9. kubernetes-validate and its
# dependencies go into a venv in .tools/ (git-ignored) at the versions pinned below; later runs
# skip the install. Usage: tools/check-manifests.sh   Env: K8S_VERSIONS="1.29 1.33" to narrow.
set -euo pipefail
cd "$(dirname "$0")/.."

# kubernetes-validate and everything it imports (a `pip freeze` of a working install).
PINS=(
  kubernetes-validate==1.37.0
  attrs==26.1.0
  importlib_resources==7.1.0
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  packaging==26.4
  PyYAML==6.0.4
  referencing==0.37.0
  rpds-py==2026.9.1
  typing_extensions==4.16.0
)
# The oldest Kubernetes the manifests support: native sidecars (init containers with
# `restartPolicy: Always`) are on by default from 1.29.
MIN_KUBERNETES=1.29

venv=.tools/manifest-venv
log() { printf '[check-manifests] %s\n' "$*" >&2; }

command -v kubectl >/dev/null || { log "kubectl not found (it renders the kustomizations)"; exit 1; }
if [[ "$(cat "$venv/.pins" 2>/dev/null)" != "${PINS[*]}" ]] || ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  log "installing ${PINS[0]} into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "${PINS[@]}"
  echo "${PINS[*]}" > "$venv/.pins"
fi
py="$venv/bin/python"

if [[ -n "${K8S_VERSIONS:-}" ]]; then
  read -r -a versions <<< "$K8S_VERSIONS"
else
  mapfile -t versions < <("$py" - "$MIN_KUBERNETES" <<'PY'
import sys
from kubernetes_validate.utils import all_versions
low = tuple(int(x) for x in sys.argv[1].split("."))
key = lambda v: tuple(int(x) for x in v.split(".")[:2])
print("\n".join(sorted({".".join(v.split(".")[:2]) for v in all_versions() if key(v) >= low}, key=key)))
PY
  )
fi
[[ ${#versions[@]} -gt 0 ]] || { log "no Kubernetes versions to validate against"; exit 1; }

"$py" tools/check_restricted.py --self-test

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mapfile -t kustomizations < <(find deploy \( -name kustomization.yaml -o -name kustomization.yml -o -name Kustomization \) -printf '%h\n' | sort)
[[ ${#kustomizations[@]} -gt 0 ]] || { log "no kustomization found under deploy/"; exit 1; }

failed=0
for dir in "${kustomizations[@]}"; do
  rendered="$tmp/${dir//\//_}.yaml"
  if ! kubectl kustomize "$dir" > "$rendered"; then
    echo "FAIL $dir: kubectl kustomize failed"
    failed=1
    continue
  fi
  # --quiet prints only warnings and failures; a warning (no schema for a kind) fails too.
  schemas_ok=1
  for v in "${versions[@]}"; do
    if ! out="$("$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$rendered" 2>&1)" || [[ -n "$out" ]]; then
      printf '%s\n' "$out" | sed "s|$rendered|$dir|g"
      echo "FAIL $dir: schema validation against Kubernetes $v"
      schemas_ok=0
      failed=1
    fi
  done
  if [[ $schemas_ok -eq 1 ]]; then
    echo "ok   $dir: $(grep -c '^kind:' "$rendered") objects valid against the schemas of Kubernetes ${versions[0]} to ${versions[-1]} (strict)"
  fi
  if "$py" tools/check_restricted.py --kustomization "$dir" "$rendered"; then
    echo "ok   $dir: Pod Security Standards restricted"
  else
    echo "FAIL $dir: Pod Security Standards restricted (violations above)"
    failed=1
  fi
done

# KServe InferenceServices (deploy/**/*.yaml with `kind: InferenceService`): no Kubernetes schema
# knows the kind, so each component's pod spec (KServe's PredictorSpec, TransformerSpec and
# ExplainerSpec inline a PodSpec) is checked as a Pod: against the schemas, strictly, and by
# tools/check_restricted.py with the images of the kustomization in the same directory. KServe's
# own fields of a component (logger, model, replicas, scaling, ...) are set aside first and are
# not checked; nor are the containers KServe injects (agent, storage initializer).
mapfile -t isvcs < <(grep -rl --include='*.yaml' '^kind: InferenceService' deploy | sort)
for file in "${isvcs[@]}"; do
  pods="$tmp/${file//\//_}.pods.yaml"
  "$py" - "$file" > "$pods" <<'PY'
import sys
import yaml
KSERVE_FIELDS = {"logger", "model", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric",
                 "scaleMetricType", "autoScaling", "containerConcurrency", "timeout",
                 "canaryTrafficPercent", "batcher", "labels", "annotations", "deploymentStrategy",
                 "workerSpec", "storageUri"}
pods = []
with open(sys.argv[1], encoding="utf-8") as f:
    for doc in yaml.safe_load_all(f):
        if not doc or doc.get("kind") != "InferenceService":
            continue
        for component in ("predictor", "transformer", "explainer"):
            spec = (doc.get("spec") or {}).get(component)
            if spec is None:
                continue
            pods.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{doc['metadata']['name']}-{component}"},
                "spec": {k: v for k, v in spec.items() if k not in KSERVE_FIELDS},
            })
if not pods:
    sys.exit(f"{sys.argv[1]}: no InferenceService component found")
yaml.safe_dump_all(pods, sys.stdout, sort_keys=False)
PY
  schemas_ok=1
  for v in "${versions[@]}"; do
    if ! out="$("$venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$pods" 2>&1)" || [[ -n "$out" ]]; then
      printf '%s\n' "$out" | sed "s|$pods|$file|g"
      echo "FAIL $file: its pod specs against the schemas of Kubernetes $v"
      schemas_ok=0
      failed=1
    fi
  done
  if [[ $schemas_ok -eq 1 ]]; then
    echo "ok   $file: $(grep -c '^kind: Pod' "$pods") InferenceService pod specs valid as Pods for Kubernetes ${versions[0]} to ${versions[-1]} (strict)"
  fi
  if "$py" tools/check_restricted.py --kustomization "$(dirname "$file")" "$pods"; then
    echo "ok   $file: Pod Security Standards restricted (its own containers)"
  else
    echo "FAIL $file: Pod Security Standards restricted (violations above)"
    failed=1
  fi
done

if [[ $failed -ne 0 ]]; then
  echo "check-manifests: FAILED"
  exit 1
fi
echo "check-manifests: ${#kustomizations[@]} kustomizations rendered, valid for Kubernetes ${versions[0]}-${versions[-1]} and restricted"
