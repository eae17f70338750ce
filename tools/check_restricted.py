#!/usr/bin/env python3
"""Check rendered Kubernetes manifests against the Pod Security Standards "restricted" profile.

Reads the YAML that `kubectl kustomize` prints and checks the pod spec of every Pod, Deployment,
StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob and PodTemplate in it:
every control of the baseline profile and of the restricted profile, which includes baseline
(https://kubernetes.io/docs/concepts/security/pod-security-standards/), over every container,
init container (native sidecars included) and ephemeral container. Two project rules come on
top: no service-account token (`automountServiceAccountToken: false`), and every image pinned,
either by digest or through an entry of the kustomization's `images:` (with a tag, not
`latest`), so a deployment can pin its digest in one place.

Where the profile changed between Kubernetes versions, the check takes the strictest reading
over the versions the manifests support (1.29 and later): a spec that passes here passes
restricted at every one of them. So `image` volumes (restricted only from 1.33), the
`container_engine_t` SELinux type (baseline only from 1.31) and the user-namespace relaxations
(`hostUsers: false`, 1.33+) are not allowed. Fields that the Kubernetes API schemas do not know
are left to the schema validation that tools/check-manifests.sh runs first.

Usage:
  check_restricted.py [--kustomization DIR] FILE...   (FILE `-` reads standard input)
  check_restricted.py --self-test

Prints one line per violation, `SOURCE: KIND/NAME: FIELD: PROBLEM [CONTROL]`, and exits 1 if
there is any. Needs PyYAML (the venv of tools/check-manifests.sh has it).
"""

import argparse
import copy
import os
import sys

import yaml

# Where each workload kind keeps its pod template, as a path of keys from the object.
POD_TEMPLATE_PATHS = {
    "Pod": (),
    "PodTemplate": ("template",),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

# Baseline "Capabilities": the only capabilities a container may add.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
# Restricted "Capabilities": drop ALL; add nothing but this one.
RESTRICTED_ADD_CAPABILITY = "NET_BIND_SERVICE"

# Baseline "Sysctls": the safe set as of Kubernetes 1.29 (the last additions were the four TCP
# keepalive/fin sysctls in 1.29, ip_local_reserved_ports in 1.27).
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}

# Baseline "SELinux": allowed seLinuxOptions.type values (container_engine_t only from 1.31).
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t"}

# Restricted "Volume Types": the only inline volume sources allowed (`image` only from 1.33).
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}

SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}
APPARMOR_TYPES = {"RuntimeDefault", "Localhost"}
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_CONTAINER_ANNOTATION_PREFIX = "container.seccomp.security.alpha.kubernetes.io/"


def dig(obj, *keys):
    """obj[k1][k2]..., or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class Findings:
    """Violations of one pod spec, as (field path, problem, control)."""

    def __init__(self):
        self.items = []

    def add(self, field, problem, control):
        self.items.append((field, problem, control))


def containers(spec, base):
    """(field path, container) for every container of every kind in the pod spec."""
    for list_name in CONTAINER_LISTS:
        for i, container in enumerate(spec.get(list_name) or []):
            name = container.get("name", "?")
            yield f"{base}.{list_name}[{i}]({name})", container


def check_pod(meta, spec, base, out):
    """Every baseline and restricted control, plus the project's token rule, on one pod spec.

    `base` is the field path of the spec in its object (for the messages); `meta` is the pod
    template's metadata (for the annotation controls)."""
    meta = meta or {}
    annotations = meta.get("annotations") or {}
    psc = spec.get("securityContext") or {}
    windows = dig(spec, "os", "name") == "windows"
    ctrs = list(containers(spec, base))

    # Project rule: no service-account token in pods that never call the API.
    if spec.get("automountServiceAccountToken") is not False:
        out.add(f"{base}.automountServiceAccountToken", "must be false", "project: no token")

    # --- Baseline ---

    # HostProcess: Windows host-process containers are forbidden.
    if dig(psc, "windowsOptions", "hostProcess") is True:
        out.add(f"{base}.securityContext.windowsOptions.hostProcess", "must not be true",
                "baseline: HostProcess")
    for path, c in ctrs:
        if dig(c, "securityContext", "windowsOptions", "hostProcess") is True:
            out.add(f"{path}.securityContext.windowsOptions.hostProcess", "must not be true",
                    "baseline: HostProcess")

    # Host Namespaces.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field) is True:
            out.add(f"{base}.{field}", "must not be true", "baseline: Host Namespaces")

    # Privileged Containers.
    for path, c in ctrs:
        if dig(c, "securityContext", "privileged") is True:
            out.add(f"{path}.securityContext.privileged", "must not be true",
                    "baseline: Privileged Containers")

    # Capabilities (baseline part: nothing beyond the default set).
    for path, c in ctrs:
        for cap in dig(c, "securityContext", "capabilities", "add") or []:
            if cap not in BASELINE_CAPABILITIES:
                out.add(f"{path}.securityContext.capabilities.add",
                        f"adds {cap}, beyond the default set", "baseline: Capabilities")

    # HostPath Volumes.
    for i, vol in enumerate(spec.get("volumes") or []):
        if "hostPath" in vol:
            out.add(f"{base}.volumes[{i}]({vol.get('name', '?')}).hostPath", "is forbidden",
                    "baseline: HostPath Volumes")

    # Host Ports.
    for path, c in ctrs:
        for j, port in enumerate(c.get("ports") or []):
            if port.get("hostPort") not in (None, 0):
                out.add(f"{path}.ports[{j}].hostPort", f"is {port['hostPort']}, must be unset or 0",
                        "baseline: Host Ports")

    # Host Probes / Lifecycle Hooks (1.34+): no `host` in probes and lifecycle handlers.
    for path, c in ctrs:
        handlers = [(p, c.get(p)) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [(f"lifecycle.{h}", dig(c, "lifecycle", h)) for h in ("postStart", "preStop")]
        for where, handler in handlers:
            for action in ("httpGet", "tcpSocket"):
                host = dig(handler, action, "host")
                if host:
                    out.add(f"{path}.{where}.{action}.host", f"is {host!r}, must be unset",
                            "baseline: Host Probes / Lifecycle Hooks")

    # AppArmor: only RuntimeDefault or Localhost profiles, fields and legacy annotations.
    if dig(psc, "appArmorProfile") is not None and dig(psc, "appArmorProfile", "type") not in APPARMOR_TYPES:
        out.add(f"{base}.securityContext.appArmorProfile.type",
                f"is {dig(psc, 'appArmorProfile', 'type')!r}", "baseline: AppArmor")
    for path, c in ctrs:
        profile = dig(c, "securityContext", "appArmorProfile")
        if profile is not None and profile.get("type") not in APPARMOR_TYPES:
            out.add(f"{path}.securityContext.appArmorProfile.type", f"is {profile.get('type')!r}",
                    "baseline: AppArmor")
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION_PREFIX):
            value = value or ""
            if not (value in ("", "runtime/default") or value.startswith("localhost/")):
                out.add(f"metadata.annotations[{key}]", f"is {value!r}", "baseline: AppArmor")

    # SELinux: a known container type, no user, no role.
    selinux_setters = [(f"{base}.securityContext", psc)]
    selinux_setters += [(f"{path}.securityContext", c.get("securityContext") or {}) for path, c in ctrs]
    for path, sc in selinux_setters:
        opts = sc.get("seLinuxOptions")
        if opts is None:
            continue
        if (opts.get("type") or "") not in SELINUX_TYPES:
            out.add(f"{path}.seLinuxOptions.type", f"is {opts.get('type')!r}", "baseline: SELinux")
        for field in ("user", "role"):
            if opts.get(field):
                out.add(f"{path}.seLinuxOptions.{field}", "must be unset", "baseline: SELinux")

    # /proc Mount Type.
    for path, c in ctrs:
        proc_mount = dig(c, "securityContext", "procMount")
        if proc_mount not in (None, "Default"):
            out.add(f"{path}.securityContext.procMount", f"is {proc_mount!r}, must be Default",
                    "baseline: /proc Mount Type")

    # Seccomp (baseline part: never Unconfined, in fields or legacy annotations).
    if dig(psc, "seccompProfile", "type") == "Unconfined":
        out.add(f"{base}.securityContext.seccompProfile.type", "must not be Unconfined",
                "baseline: Seccomp")
    for path, c in ctrs:
        if dig(c, "securityContext", "seccompProfile", "type") == "Unconfined":
            out.add(f"{path}.securityContext.seccompProfile.type", "must not be Unconfined",
                    "baseline: Seccomp")
    for key, value in annotations.items():
        if (key == SECCOMP_POD_ANNOTATION or key.startswith(SECCOMP_CONTAINER_ANNOTATION_PREFIX)) \
                and value == "unconfined":
            out.add(f"metadata.annotations[{key}]", "must not be unconfined", "baseline: Seccomp")

    # Sysctls.
    for i, sysctl in enumerate(psc.get("sysctls") or []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.add(f"{base}.securityContext.sysctls[{i}]", f"{sysctl.get('name')!r} is not in the safe set",
                    "baseline: Sysctls")

    # --- Restricted ---

    # Volume Types (hostPath is reported above).
    for i, vol in enumerate(spec.get("volumes") or []):
        kinds = [k for k in vol if k != "name"]
        for kind in kinds:
            if kind not in RESTRICTED_VOLUME_TYPES and kind != "hostPath":
                out.add(f"{base}.volumes[{i}]({vol.get('name', '?')}).{kind}",
                        "is not an allowed volume type", "restricted: Volume Types")

    # Privilege Escalation: explicitly false everywhere (Linux pods).
    if not windows:
        for path, c in ctrs:
            if dig(c, "securityContext", "allowPrivilegeEscalation") is not False:
                out.add(f"{path}.securityContext.allowPrivilegeEscalation", "must be false",
                        "restricted: Privilege Escalation")

    # Running as Non-root: true at pod level (and not false in a container), or true in every
    # container.
    pod_non_root = psc.get("runAsNonRoot")
    if pod_non_root is False:
        out.add(f"{base}.securityContext.runAsNonRoot", "must not be false",
                "restricted: Running as Non-root")
    for path, c in ctrs:
        non_root = dig(c, "securityContext", "runAsNonRoot")
        if non_root is False or (non_root is None and pod_non_root is not True):
            out.add(f"{path}.securityContext.runAsNonRoot",
                    "must be true (here or at pod level)", "restricted: Running as Non-root")

    # Running as Non-root user: UID 0 nowhere.
    if psc.get("runAsUser") == 0:
        out.add(f"{base}.securityContext.runAsUser", "must not be 0",
                "restricted: Running as Non-root user")
    for path, c in ctrs:
        if dig(c, "securityContext", "runAsUser") == 0:
            out.add(f"{path}.securityContext.runAsUser", "must not be 0",
                    "restricted: Running as Non-root user")

    # Seccomp (restricted part): RuntimeDefault or Localhost at pod level or in every container
    # (Linux pods). Unconfined is reported above.
    if not windows:
        pod_type = dig(psc, "seccompProfile", "type")
        if pod_type not in (None, "Unconfined") and pod_type not in SECCOMP_TYPES:
            out.add(f"{base}.securityContext.seccompProfile.type", f"is {pod_type!r}",
                    "restricted: Seccomp")
        for path, c in ctrs:
            c_type = dig(c, "securityContext", "seccompProfile", "type")
            if c_type is None:
                if pod_type not in SECCOMP_TYPES:
                    out.add(f"{path}.securityContext.seccompProfile.type",
                            "must be RuntimeDefault or Localhost (here or at pod level)",
                            "restricted: Seccomp")
            elif c_type != "Unconfined" and c_type not in SECCOMP_TYPES:
                out.add(f"{path}.securityContext.seccompProfile.type", f"is {c_type!r}",
                        "restricted: Seccomp")

    # Capabilities (restricted part): drop ALL; add at most NET_BIND_SERVICE (Linux pods).
    if not windows:
        for path, c in ctrs:
            caps = dig(c, "securityContext", "capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                out.add(f"{path}.securityContext.capabilities.drop", "must include ALL",
                        "restricted: Capabilities")
            for cap in caps.get("add") or []:
                if cap in BASELINE_CAPABILITIES and cap != RESTRICTED_ADD_CAPABILITY:
                    out.add(f"{path}.securityContext.capabilities.add",
                            f"adds {cap}; only {RESTRICTED_ADD_CAPABILITY} is allowed",
                            "restricted: Capabilities")


def image_repository(image):
    """(repository, tag, digest) of an image reference; tag and digest may be None."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image, tag = image.rsplit(":", 1)
    return image, tag, digest


def check_images(spec, base, pinned, out):
    """Project rule: every image digest-pinned, or tagged and listed in kustomization images."""
    for path, c in containers(spec, base):
        image = c.get("image") or ""
        repo, tag, digest = image_repository(image)
        if digest and digest.startswith("sha256:"):
            continue
        if repo not in pinned:
            out.add(f"{path}.image", f"{image!r} is neither digest-pinned nor in kustomization images",
                    "project: pinnable images")
        elif tag in (None, "", "latest"):
            out.add(f"{path}.image", f"{image!r} needs a tag other than latest (or a digest)",
                    "project: pinnable images")


def kustomization_images(directory, seen=None):
    """Repositories named by the `images:` of a kustomization and of the bases it includes."""
    seen = seen if seen is not None else set()
    directory = os.path.realpath(directory)
    if directory in seen:
        return set()
    seen.add(directory)
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            break
    else:
        raise SystemExit(f"check_restricted: no kustomization file in {directory}")
    with open(path, encoding="utf-8") as f:
        kustomization = yaml.safe_load(f) or {}
    repos = set()
    for entry in kustomization.get("images") or []:
        repos.add(entry.get("newName") or entry["name"])
    for resource in (kustomization.get("resources") or []) + (kustomization.get("bases") or []):
        sub = os.path.join(directory, resource)
        if os.path.isdir(sub):
            repos |= kustomization_images(sub, seen)
    return repos


def check_objects(objects, pinned, source):
    """Violation lines for a list of rendered objects, and the number of pod specs checked."""
    lines = []
    pods = 0
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        kind = obj.get("kind")
        if kind not in POD_TEMPLATE_PATHS:
            continue
        name = dig(obj, "metadata", "name") or "?"
        template_path = POD_TEMPLATE_PATHS[kind]
        template = dig(obj, *template_path) if template_path else obj
        spec = dig(template, "spec")
        base = ".".join(template_path + ("spec",))
        out = Findings()
        if not isinstance(spec, dict):
            out.add(base, "no pod spec found", "project: readable manifests")
        else:
            pods += 1
            check_pod(dig(template, "metadata"), spec, base, out)
            check_images(spec, base, pinned, out)
        for field, problem, control in out.items:
            lines.append(f"{source}: {kind}/{name}: {field}: {problem} [{control}]")
    return lines, pods


def load(path):
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


# --- Self-test: a restricted pod that must pass, and breakages that must each be flagged ---

GOOD_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "good"},
    "spec": {
        "selector": {"matchLabels": {"app": "good"}},
        "template": {
            "metadata": {"labels": {"app": "good"},
                         "annotations": {APPARMOR_ANNOTATION_PREFIX + "app": "runtime/default"}},
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                    "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                },
                "initContainers": [{
                    "name": "sidecar",
                    "image": "sidecar@sha256:" + "0" * 64,
                    "restartPolicy": "Always",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "runAsUser": 65532,
                    },
                    "startupProbe": {"exec": {"command": ["true"]}},
                }],
                "containers": [{
                    "name": "app",
                    "image": "registry.example.com/app:1.0",
                    "ports": [{"containerPort": 80}],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                        "seccompProfile": {"type": "Localhost", "localhostProfile": "app.json"},
                        "seLinuxOptions": {"type": "container_t"},
                        "procMount": "Default",
                    },
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                }],
                "volumes": [
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "conf", "configMap": {"name": "conf"}},
                    {"name": "token", "projected": {"sources": []}},
                ],
            },
        },
    },
}
SELF_TEST_PINNED = {"registry.example.com/app"}


def _pod(d):
    return d["spec"]["template"]["spec"]


def _app(d):
    return _pod(d)["containers"][0]


def _sidecar(d):
    return _pod(d)["initContainers"][0]


def _set(container_of, key, value):
    """A mutation that sets container.securityContext[key]."""
    return lambda d: container_of(d)["securityContext"].__setitem__(key, value)


# (what the case breaks, mutation of the good Deployment, controls that must be reported)
SELF_TEST_CASES = [
    ("the pause placeholder as it was: no container securityContext",
     lambda d: _app(d).pop("securityContext"),
     {"restricted: Privilege Escalation", "restricted: Capabilities"}),
    ("no runAsNonRoot anywhere",
     lambda d: _pod(d)["securityContext"].pop("runAsNonRoot"),
     {"restricted: Running as Non-root"}),
    ("container sets runAsNonRoot false under a true pod",
     _set(_sidecar, "runAsNonRoot", False), {"restricted: Running as Non-root"}),
    ("runAsUser 0", _set(_sidecar, "runAsUser", 0), {"restricted: Running as Non-root user"}),
    ("sidecar allows privilege escalation", _set(_sidecar, "allowPrivilegeEscalation", True),
     {"restricted: Privilege Escalation"}),
    ("sidecar leaves allowPrivilegeEscalation unset",
     lambda d: _sidecar(d)["securityContext"].pop("allowPrivilegeEscalation"),
     {"restricted: Privilege Escalation"}),
    ("privileged container", _set(_app, "privileged", True), {"baseline: Privileged Containers"}),
    ("drop without ALL", _set(_app, "capabilities", {"drop": ["NET_RAW"]}),
     {"restricted: Capabilities"}),
    ("adds a default capability other than NET_BIND_SERVICE",
     _set(_app, "capabilities", {"drop": ["ALL"], "add": ["CHOWN"]}), {"restricted: Capabilities"}),
    ("adds SYS_ADMIN", _set(_app, "capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
     {"baseline: Capabilities"}),
    ("no seccomp profile anywhere",
     lambda d: (_pod(d)["securityContext"].pop("seccompProfile"), _app(d)["securityContext"].pop("seccompProfile")),
     {"restricted: Seccomp"}),
    ("seccomp Unconfined in a container", _set(_sidecar, "seccompProfile", {"type": "Unconfined"}),
     {"baseline: Seccomp"}),
    ("legacy seccomp annotation unconfined",
     lambda d: d["spec"]["template"]["metadata"]["annotations"].__setitem__(SECCOMP_POD_ANNOTATION, "unconfined"),
     {"baseline: Seccomp"}),
    ("hostNetwork", lambda d: _pod(d).__setitem__("hostNetwork", True), {"baseline: Host Namespaces"}),
    ("hostPID", lambda d: _pod(d).__setitem__("hostPID", True), {"baseline: Host Namespaces"}),
    ("hostIPC", lambda d: _pod(d).__setitem__("hostIPC", True), {"baseline: Host Namespaces"}),
    ("hostPath volume", lambda d: _pod(d)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
     {"baseline: HostPath Volumes"}),
    ("nfs volume", lambda d: _pod(d)["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}),
     {"restricted: Volume Types"}),
    ("image volume (restricted only from 1.33)",
     lambda d: _pod(d)["volumes"].append({"name": "i", "image": {"reference": "x:1"}}),
     {"restricted: Volume Types"}),
    ("hostPort", lambda d: _app(d)["ports"][0].__setitem__("hostPort", 80), {"baseline: Host Ports"}),
    ("probe with a host", lambda d: _app(d)["readinessProbe"]["httpGet"].__setitem__("host", "10.0.0.1"),
     {"baseline: Host Probes / Lifecycle Hooks"}),
    ("unsafe sysctl",
     lambda d: _pod(d)["securityContext"]["sysctls"].append({"name": "kernel.msgmax", "value": "1"}),
     {"baseline: Sysctls"}),
    ("unmasked /proc", _set(_app, "procMount", "Unmasked"), {"baseline: /proc Mount Type"}),
    ("SELinux type spc_t", _set(_app, "seLinuxOptions", {"type": "spc_t"}), {"baseline: SELinux"}),
    ("SELinux user", _set(_app, "seLinuxOptions", {"user": "system_u"}), {"baseline: SELinux"}),
    ("AppArmor Unconfined field", _set(_app, "appArmorProfile", {"type": "Unconfined"}), {"baseline: AppArmor"}),
    ("AppArmor unconfined annotation",
     lambda d: d["spec"]["template"]["metadata"]["annotations"].__setitem__(APPARMOR_ANNOTATION_PREFIX + "app", "unconfined"),
     {"baseline: AppArmor"}),
    ("Windows HostProcess",
     lambda d: _pod(d)["securityContext"].__setitem__("windowsOptions", {"hostProcess": True}),
     {"baseline: HostProcess"}),
    ("ephemeral container without a securityContext",
     lambda d: _pod(d).__setitem__("ephemeralContainers", [{"name": "debug", "image": "sidecar@sha256:" + "1" * 64}]),
     {"restricted: Privilege Escalation", "restricted: Capabilities"}),
    ("service-account token mounted (field unset)",
     lambda d: _pod(d).pop("automountServiceAccountToken"), {"project: no token"}),
    ("image neither digest-pinned nor in kustomization images",
     lambda d: _app(d).__setitem__("image", "docker.io/library/nginx:1.27"), {"project: pinnable images"}),
    ("listed image on latest", lambda d: _app(d).__setitem__("image", "registry.example.com/app:latest"),
     {"project: pinnable images"}),
]


def self_test():
    failures = []
    lines, pods = check_objects([copy.deepcopy(GOOD_DEPLOYMENT)], SELF_TEST_PINNED, "self-test")
    if lines or pods != 1:
        failures.append(f"the restricted Deployment was flagged: {lines}")
    # The same pod as a bare Pod and inside a CronJob: found, checked, and as clean.
    good = copy.deepcopy(GOOD_DEPLOYMENT)
    template = good["spec"]["template"]
    bare = {"kind": "Pod", "metadata": {"name": "bare", **template["metadata"]}, "spec": template["spec"]}
    cron = {"kind": "CronJob", "metadata": {"name": "cron"},
            "spec": {"jobTemplate": {"spec": {"template": template}}}}
    lines, pods = check_objects([bare, cron], SELF_TEST_PINNED, "self-test")
    if lines or pods != 2:
        failures.append(f"Pod/CronJob forms: {pods} pod specs, {lines}")
    for what, mutate, expected in SELF_TEST_CASES:
        bad = copy.deepcopy(GOOD_DEPLOYMENT)
        mutate(bad)
        lines, _ = check_objects([bad], SELF_TEST_PINNED, "self-test")
        found = {line.rsplit("[", 1)[1].rstrip("]") for line in lines}
        if found != expected:
            failures.append(f"{what}: expected {sorted(expected)}, got {sorted(found)}: {lines}")
    for failure in failures:
        print(f"check_restricted self-test FAILED: {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"check_restricted self-test: 3 good pod specs pass, {len(SELF_TEST_CASES)} bad ones "
          "each flagged with exactly the expected controls")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="rendered manifests (YAML); - for standard input")
    parser.add_argument("--kustomization", metavar="DIR",
                        help="the kustomization that rendered FILEs: its images: entries (and its "
                             "bases') are the pinnable images")
    parser.add_argument("--self-test", action="store_true", help="check the checker, then exit")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    if not args.files:
        parser.error("no manifest files given")
    pinned = kustomization_images(args.kustomization) if args.kustomization else set()
    failed = False
    for path in args.files:
        source = args.kustomization or path
        objects = load(path)
        lines, pods = check_objects(objects, pinned, source)
        for line in lines:
            print(line)
        failed |= bool(lines)
        verdict = f"{len(lines)} violation(s)" if lines else "restricted, no token, images pinnable"
        print(f"check_restricted: {source}: {len(objects)} objects, {pods} pod specs: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
