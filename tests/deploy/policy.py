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


def _effective(spec: Manifest, container: Manifest, key: str) -> Any:
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (spec.get("securityContext") or {}).get(key)


def container_problems(spec: Manifest, kind: str, container: Manifest) -> list[str]:
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
    if _effective(spec, container, "runAsNonRoot") is not True or _effective(spec, container, "runAsUser") == 0:
        problems.append(f"{kind} {name}: may run as root (runAsNonRoot is not true)")
    context = container.get("securityContext") or {}
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{kind} {name}: writable root filesystem")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{kind} {name}: privilege escalation allowed")
    if context.get("privileged"):
        problems.append(f"{kind} {name}: privileged")
    if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{kind} {name}: capabilities not all dropped")
    seccomp = (context.get("seccompProfile") or (spec.get("securityContext") or {}).get("seccompProfile") or {}).get(
        "type"
    )
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
            if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
                found.append(f"{where}: shares the host's namespaces")
            for kind, container in containers(spec):
                found += [f"{where}: {p}" for p in container_problems(spec, kind, container)]
        exposed = obj["kind"] == "Service" and obj["spec"].get("type") in ("LoadBalancer", "NodePort")
        if exposed and obj["metadata"]["name"] not in EXPOSABLE:
            found.append(f"{where}: type {obj['spec']['type']} outside the gateway and forwarder")
    return found
