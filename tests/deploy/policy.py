"""The deployment policy, as pure functions over rendered objects: each returns what it rejects.

test_policy.py runs it over every overlay and shows on broken copies that it does reject.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Manifest = dict[str, Any]

# The only services that may be exposed outside the cluster: tenants and agents call the
# gateway, the data plane calls the forwarder.
EXPOSABLE = frozenset({"havip-gateway", "havip-forwarder"})
WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})

# The one exception: `havip observe` (deploy/k8s/base/observe.yaml) watches its host's ports with
# raw sockets, so it shares the host's network (and so its port is a host port), and its main
# container runs as root holding NET_RAW (Kubernetes gives an added capability to a non-root
# process only through file capabilities, which the image does not set). Named by kind and name;
# its init containers (it has none) and every other rule (read-only root, no escalation, all else
# dropped, not privileged, no host PID or IPC, seccomp) still apply.
HOST_OBSERVER = ("DaemonSet", "havip-observe")
HOST_OBSERVER_CAPABILITIES = frozenset({"NET_RAW"})


def pod_spec(obj: Manifest) -> Manifest | None:
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] in WORKLOADS:
        return obj["spec"]["template"]["spec"]
    return None


def containers(spec: Manifest) -> Iterator[tuple[str, Manifest]]:
    """(kind, container): kind is "container" or "init container"."""
    for container in spec.get("initContainers", []):
        yield "init container", container
    for container in spec.get("containers", []):
        yield "container", container


def image_pinned(image: str) -> bool:
    """A digest, or a tag other than latest (a registry port is not a tag)."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def _effective(spec: Manifest, container: Manifest, key: str, default: Any = None) -> Any:
    """The container's securityContext field, else the pod's, else `default`."""
    own = (container.get("securityContext") or {}).get(key)
    if own is not None:
        return own
    pod = (spec.get("securityContext") or {}).get(key)
    return pod if pod is not None else default


def _seccomp(spec: Manifest, container: Manifest) -> Any:
    return _effective(spec, container, "seccompProfile", {}).get("type")


def container_problems(spec: Manifest, kind: str, container: Manifest, *, host_observer: bool = False) -> list[str]:
    """What the policy rejects in one container; `host_observer`: the observer's exception applies."""
    excepted = host_observer and kind == "container"
    problems = []
    name = container.get("name", "?")
    image = container.get("image", "")
    if not image_pinned(image):
        problems.append(f"{kind} {name}: image {image!r} has no pinned tag or digest")
    if kind == "container":
        for probe in ("livenessProbe", "readinessProbe"):
            if not container.get(probe):
                problems.append(f"{kind} {name}: no {probe}")
    resources = container.get("resources") or {}
    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if not (resources.get(section) or {}).get(resource):
                problems.append(f"{kind} {name}: no {section}.{resource}")
    root = _effective(spec, container, "runAsNonRoot") is not True or _effective(spec, container, "runAsUser") == 0
    if root and not excepted:
        problems.append(f"{kind} {name}: may run as root (runAsNonRoot is not true)")
    for port in container.get("ports") or []:
        if port.get("hostPort") and not excepted:
            problems.append(f"{kind} {name}: host port {port['hostPort']}")
    context = container.get("securityContext") or {}
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{kind} {name}: writable root filesystem")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{kind} {name}: privilege escalation allowed")
    if context.get("privileged"):
        problems.append(f"{kind} {name}: privileged")
    if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{kind} {name}: capabilities not all dropped")
    allowed = HOST_OBSERVER_CAPABILITIES if excepted else frozenset()
    added = set((context.get("capabilities") or {}).get("add") or []) - allowed
    if added:
        problems.append(f"{kind} {name}: capabilities added: {', '.join(sorted(added))}")
    seccomp = _seccomp(spec, container)
    if seccomp != "RuntimeDefault":
        problems.append(f"{kind} {name}: seccomp profile is {seccomp}, not RuntimeDefault")
    return problems


def problems(objects: list[Manifest]) -> list[str]:
    """Everything the policy rejects in a rendered overlay; empty when it passes."""
    found = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        spec = pod_spec(obj)
        if spec is not None:
            host_observer = (obj["kind"], obj["metadata"]["name"]) == HOST_OBSERVER
            if (spec.get("hostNetwork") and not host_observer) or spec.get("hostPID") or spec.get("hostIPC"):
                found.append(f"{where}: shares the host's namespaces")
            for kind, container in containers(spec):
                problems = container_problems(spec, kind, container, host_observer=host_observer)
                found += [f"{where}: {p}" for p in problems]
        exposed = obj["kind"] == "Service" and obj["spec"].get("type") in ("LoadBalancer", "NodePort")
        if exposed and obj["metadata"]["name"] not in EXPOSABLE:
            found.append(f"{where}: type {obj['spec']['type']} outside the gateway and forwarder")
    return found


# --- Pod Security Standards ---------------------------------------------------------------------------
# The least Pod Security level (kubernetes.io/docs/concepts/security/pod-security-standards) a pod
# spec meets, for the namespace's `enforce` label: the controls these manifests can touch, not all.

LEVELS = ("restricted", "baseline", "privileged")
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
RESTRICTED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)


def pod_security(spec: Manifest) -> tuple[str, list[str]]:
    """The most restrictive level the pod meets, and what keeps it from the next one up."""
    baseline = [key for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    restricted: list[str] = []
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            baseline.append(f"volume {volume['name']}: hostPath")
        elif not kinds <= RESTRICTED_VOLUMES:
            restricted.append(f"volume {volume['name']}: {', '.join(sorted(kinds))}")
    for _, container in containers(spec):
        name = container.get("name", "?")
        context = container.get("securityContext") or {}
        capabilities = context.get("capabilities") or {}
        if context.get("privileged"):
            baseline.append(f"{name}: privileged")
        baseline += [f"{name}: host port {p['hostPort']}" for p in container.get("ports") or [] if p.get("hostPort")]
        added = set(capabilities.get("add") or [])
        baseline += [f"{name}: capability {c}" for c in sorted(added - BASELINE_CAPABILITIES)]
        seccomp = _seccomp(spec, container)
        if seccomp == "Unconfined":
            baseline.append(f"{name}: seccomp Unconfined")
        elif seccomp not in ("RuntimeDefault", "Localhost"):
            restricted.append(f"{name}: no seccomp profile")
        if _effective(spec, container, "runAsNonRoot") is not True or _effective(spec, container, "runAsUser") == 0:
            restricted.append(f"{name}: may run as root")
        if context.get("allowPrivilegeEscalation") is not False:
            restricted.append(f"{name}: privilege escalation")
        if "ALL" not in (capabilities.get("drop") or []):
            restricted.append(f"{name}: capabilities not all dropped")
        restricted += [f"{name}: capability {c}" for c in sorted(added & BASELINE_CAPABILITIES - {"NET_BIND_SERVICE"})]
    if baseline:
        return "privileged", baseline
    if restricted:
        return "baseline", restricted
    return "restricted", []
