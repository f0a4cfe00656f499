"""The policy over every rendered overlay, and proof on broken copies that it rejects what it must."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy import policy
from tests.deploy.conftest import Manifest, named, of_kind, settings_data

SERVICES = ("gateway", "quota", "mapping", "forwarder")


def test_every_overlay_passes_the_policy(overlay: tuple[str, list[Manifest]]) -> None:
    name, objects = overlay
    assert policy.problems(objects) == [], name


def test_every_service_runs_with_its_probes_and_security_context(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    for service in SERVICES:
        spec = named(objects, "Deployment", f"havip-{service}")["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert [c["args"] for c in spec["initContainers"]] == [["migrate"]]  # never on an older schema
        (main,) = spec["containers"]
        assert main["args"] == ["serve", service]
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        # SIGTERM's graceful stop (uvicorn's 10 s, a worker's commit and LeaveGroup) fits in the grace.
        assert spec["terminationGracePeriodSeconds"] >= 15


# --- the policy rejects -----------------------------------------------------------------------------


def _main(obj: Manifest) -> Manifest:
    return obj["spec"]["template"]["spec"]["containers"][0]


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    def change(obj: Manifest) -> None:
        *parents, last = path.split(".")
        target = _main(obj)
        for key in parents:
            target = target.setdefault(key, {})
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value

    return change


def _pod_root(obj: Manifest) -> None:
    obj["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 0}
    _main(obj)["securityContext"].pop("runAsNonRoot", None)


BROKEN: dict[str, tuple[Callable[[Manifest], None], str]] = {
    "latest tag": (_set("image", "ghcr.io/edge-havip/havip:latest"), "no pinned tag"),
    "no tag": (_set("image", "ghcr.io/edge-havip/havip"), "no pinned tag"),
    "registry port, no tag": (_set("image", "registry.local:5000/havip"), "no pinned tag"),
    "no liveness probe": (_set("livenessProbe", None), "no livenessProbe"),
    "no readiness probe": (_set("readinessProbe", None), "no readinessProbe"),
    "no requests": (_set("resources.requests", None), "no requests.cpu"),
    "no memory limit": (_set("resources.limits.memory", None), "no limits.memory"),
    "root": (_pod_root, "may run as root"),
    "writable root filesystem": (_set("securityContext.readOnlyRootFilesystem", False), "writable root filesystem"),
    "privilege escalation": (_set("securityContext.allowPrivilegeEscalation", True), "privilege escalation"),
    "capabilities kept": (_set("securityContext.capabilities", None), "capabilities not all dropped"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_policy_rejects_a_broken_deployment(rendered: dict[str, list[Manifest]], case: str) -> None:
    broken = copy.deepcopy(named(rendered["prod"], "Deployment", "havip-quota"))
    change, complaint = BROKEN[case]
    change(broken)
    found = policy.problems([broken])
    assert any(complaint in problem for problem in found), found


def test_the_policy_accepts_digests_and_tags_behind_a_registry_port() -> None:
    assert policy.image_pinned("registry.local:5000/havip:0.1.0")
    assert policy.image_pinned("ghcr.io/edge-havip/havip@sha256:" + "0" * 64)


def test_the_policy_rejects_a_load_balancer_for_anything_but_the_gateway_and_forwarder(
    rendered: dict[str, list[Manifest]],
) -> None:
    gateway = named(rendered["prod"], "Service", "havip-gateway")
    assert gateway["spec"]["type"] == "LoadBalancer" and policy.problems([gateway]) == []
    quota = copy.deepcopy(named(rendered["prod"], "Service", "havip-quota"))
    quota["spec"]["type"] = "LoadBalancer"
    assert policy.problems([quota]) == ["Service/havip-quota: type LoadBalancer outside the gateway and forwarder"]


# --- scaling and disruption ---------------------------------------------------------------------------


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_every_service_has_a_disruption_budget(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    budgets = of_kind(objects, "PodDisruptionBudget")
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if _selects(b["spec"]["selector"], labels)]
        assert [b["spec"].get("maxUnavailable") for b in covering] == [1], deployment["metadata"]["name"]


def test_gateway_and_forwarder_scale_by_replicas_quota_and_mapping_up_to_the_partitions(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["prod"]
    partitions = int(settings_data(objects)["HAVIP_PARTITIONS"])
    scaled = {h["spec"]["scaleTargetRef"]["name"]: h["spec"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert set(scaled) == {"havip-gateway", "havip-forwarder"}
    for name, spec in scaled.items():
        assert 2 <= spec["minReplicas"] < spec["maxReplicas"]
        # The HPA owns the count: a replicas field would reset it on every apply.
        assert "replicas" not in named(objects, "Deployment", name)["spec"], name
    for service in ("quota", "mapping"):
        # Workers beyond the partition count would hold nothing; two so one takes over from the other.
        assert 2 <= named(objects, "Deployment", f"havip-{service}")["spec"]["replicas"] <= partitions
    dev = rendered["dev"]
    assert of_kind(dev, "HorizontalPodAutoscaler") == []
    assert {d["spec"]["replicas"] for d in of_kind(dev, "Deployment")} == {1}


# --- network policies -----------------------------------------------------------------------------------


def _admits_outside_the_namespace(rule: Manifest) -> bool:
    sources = rule.get("from")
    if not sources:
        return True  # no `from`: every source
    return any("namespaceSelector" in peer or "ipBlock" in peer for peer in sources)


def test_only_the_gateway_and_forwarder_take_traffic_from_outside_the_namespace(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    network_policies = of_kind(objects, "NetworkPolicy")
    open_to = set()
    for rule_owner in network_policies:
        if any(_admits_outside_the_namespace(rule) for rule in rule_owner["spec"].get("ingress", [])):
            open_to.add(rule_owner["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name"))
    assert open_to == {"havip-gateway", "havip-forwarder"}
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        applying = [p for p in network_policies if _selects(p["spec"]["podSelector"], labels)]
        # Selected by at least one policy with Ingress, so anything not allowed is denied.
        assert any("Ingress" in p["spec"]["policyTypes"] for p in applying), deployment["metadata"]["name"]
