"""The policy over every rendered overlay, and proof on broken copies that it rejects what it must."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy import policy
from tests.deploy.conftest import Manifest, named, of_kind, settings_data, workloads

SERVICES = ("gateway", "quota", "mapping", "forwarder")
OBSERVE = "havip-observe"


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


def _millicores(quantity: str) -> float:
    return float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000


def test_the_observer_runs_on_every_host_with_raw_sockets_and_nothing_more(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    daemon_set = named(objects, "DaemonSet", OBSERVE)
    spec = daemon_set["spec"]["template"]["spec"]
    # The host's network, so it sees the host's ports; still the cluster's DNS, for the brokers.
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert not spec.get("hostPID") and not spec.get("hostIPC")
    assert {"operator": "Exists"} in spec["tolerations"]  # every node, tainted or not
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "initContainers" not in spec  # no migration step: it has no database
    (main,) = spec["containers"]
    assert main["args"] == ["observe"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # Root only to hold NET_RAW (policy.HOST_OBSERVER): every other capability dropped, none to gain.
    context = main["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_RAW"]}
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert not context.get("privileged")
    # No database: no DSN, and no Secret but its Kafka password and the Kafka CA.
    env = {e["name"]: e for e in main["env"]}
    assert "HAVIP_DATABASE_URL" not in env and "HAVIP_DATABASE_URL" not in settings_data(objects)
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in env.values() if "secretKeyRef" in e.get("valueFrom", {})}
    secrets |= {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    secrets |= {v["secretRef"]["name"] for v in main.get("envFrom", []) if "secretRef" in v}
    (kafka,) = of_kind(objects, "Kafka")
    assert secrets == {"havip-observer", f"{kafka['metadata']['name']}-cluster-ca-cert"}
    # It watches the instances of the node it runs on.
    assert env["HAVIP_OBSERVE_HOST_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # Modest: one per hypervisor host, beside the tenants' instances.
    assert _millicores(main["resources"]["requests"]["cpu"]) <= 50
    assert _millicores(main["resources"]["limits"]["cpu"]) <= 500
    # A rollout takes some hosts' observers away at a time, never all.
    rolling = daemon_set["spec"]["updateStrategy"]
    assert rolling["type"] == "RollingUpdate" and rolling["rollingUpdate"]["maxUnavailable"] not in ("100%", 0, "0%")


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


def _pod(key: str, value: Any) -> Callable[[Manifest], None]:
    def change(obj: Manifest) -> None:
        obj["spec"]["template"]["spec"][key] = value

    return change


def _host_port(obj: Manifest) -> None:
    _main(obj)["ports"][0]["hostPort"] = _main(obj)["ports"][0]["containerPort"]


def _root_init_container(obj: Manifest) -> None:
    init = copy.deepcopy(_main(obj))
    init["name"] = "setup"
    obj["spec"]["template"]["spec"]["initContainers"] = [init]


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
    "raw sockets": (_set("securityContext.capabilities.add", ["NET_RAW"]), "capabilities added: NET_RAW"),
    "host network": (_pod("hostNetwork", True), "shares the host's namespaces"),
    "host port": (_host_port, "host port"),
}

# The observer's exception covers the host network, root and NET_RAW in its main container: nothing else.
BROKEN_OBSERVER: dict[str, tuple[Callable[[Manifest], None], str]] = {
    "another capability": (_set("securityContext.capabilities.add", ["NET_RAW", "SYS_ADMIN"]), "added: SYS_ADMIN"),
    "capabilities kept": (_set("securityContext.capabilities.drop", None), "capabilities not all dropped"),
    "privileged": (_set("securityContext.privileged", True), "privileged"),
    "writable root filesystem": (_set("securityContext.readOnlyRootFilesystem", False), "writable root filesystem"),
    "privilege escalation": (_set("securityContext.allowPrivilegeEscalation", True), "privilege escalation"),
    "no seccomp": (_pod("securityContext", {"runAsUser": 0}), "seccomp profile is None"),
    "host PID": (_pod("hostPID", True), "shares the host's namespaces"),
    "host IPC": (_pod("hostIPC", True), "shares the host's namespaces"),
    "a root init container": (_root_init_container, "init container setup: may run as root"),
    "no liveness probe": (_set("livenessProbe", None), "no livenessProbe"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_policy_rejects_a_broken_deployment(rendered: dict[str, list[Manifest]], case: str) -> None:
    broken = copy.deepcopy(named(rendered["prod"], "Deployment", "havip-quota"))
    change, complaint = BROKEN[case]
    change(broken)
    found = policy.problems([broken])
    assert any(complaint in problem for problem in found), found


@pytest.mark.parametrize("case", sorted(BROKEN_OBSERVER))
def test_the_policy_rejects_a_broken_observer(rendered: dict[str, list[Manifest]], case: str) -> None:
    broken = copy.deepcopy(named(rendered["prod"], "DaemonSet", OBSERVE))
    assert policy.problems([broken]) == []
    change, complaint = BROKEN_OBSERVER[case]
    change(broken)
    found = policy.problems([broken])
    assert any(complaint in problem for problem in found), found


@pytest.mark.parametrize(("kind", "name"), [("DaemonSet", "havip-observe-copy"), ("Deployment", OBSERVE)])
def test_the_observers_exception_is_its_own(rendered: dict[str, list[Manifest]], kind: str, name: str) -> None:
    """The same pod under another name or kind gets none of it."""
    other = copy.deepcopy(named(rendered["prod"], "DaemonSet", OBSERVE))
    other["kind"], other["metadata"]["name"] = kind, name
    where = f"{kind}/{name}"
    assert set(policy.problems([other])) == {
        f"{where}: shares the host's namespaces",
        f"{where}: container havip: may run as root (runAsNonRoot is not true)",
        f"{where}: container havip: host port 8084",
        f"{where}: container havip: capabilities added: NET_RAW",
    }


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
    for workload in workloads(objects):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        applying = [p for p in network_policies if _selects(p["spec"]["podSelector"], labels)]
        # Selected by at least one policy with Ingress, so anything not allowed is denied.
        assert any("Ingress" in p["spec"]["policyTypes"] for p in applying), workload["metadata"]["name"]


def test_the_observer_may_reach_kafka_and_dns_only(overlay: tuple[str, list[Manifest]]) -> None:
    """Declared for it alone (the services' egress is not restricted). Its pods use the host's
    network, which most implementations do not police: the policy states intent there."""
    _, objects = overlay
    labels = named(objects, "DaemonSet", OBSERVE)["spec"]["template"]["metadata"]["labels"]
    egress = [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if "Egress" in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)
    ]
    assert [p["metadata"]["name"] for p in egress] == ["havip-observe-egress"]
    (kafka,) = of_kind(objects, "Kafka")
    allowed = []
    for rule in egress[0]["spec"]["egress"]:
        assert rule.get("to") and rule.get("ports"), rule  # no rule open to every peer or every port
        for peer in rule["to"]:
            assert "ipBlock" not in peer, peer
            pods = peer["podSelector"]["matchLabels"]
            if "namespaceSelector" in peer:
                assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
                assert pods == {"k8s-app": "kube-dns"}
                assert {p["port"] for p in rule["ports"]} == {53}
                allowed.append("dns")
            else:
                assert pods == {"strimzi.io/cluster": kafka["metadata"]["name"], "strimzi.io/kind": "Kafka"}
                allowed.append("kafka")
    assert sorted(allowed) == ["dns", "kafka"]
    # The services' egress stays open (deploy/README.md: a PostgreSQL elsewhere needs nothing more).
    for workload in of_kind(objects, "Deployment"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert not [
            p
            for p in of_kind(objects, "NetworkPolicy")
            if "Egress" in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)
        ], workload["metadata"]["name"]


# --- pod security admission -----------------------------------------------------------------------------


def test_the_namespace_enforces_the_strictest_pod_security_level_our_pods_allow(
    overlay: tuple[str, list[Manifest]],
) -> None:
    """Every pod of ours meets `restricted` but the observer's; it needs `privileged` for the host's
    network and port and NET_RAW, so the namespace enforces that (Pod Security admission has no
    per-workload exception), never less than `baseline` (Strimzi's and CloudNativePG's pods)."""
    _, objects = overlay
    levels = {}
    for workload in workloads(objects):
        spec = policy.pod_spec(workload)
        assert spec is not None, workload
        level, reasons = policy.pod_security(spec)
        levels[workload["metadata"]["name"]] = level
        if workload["metadata"]["name"] == OBSERVE:
            assert (level, sorted(reasons)) == (
                "privileged",
                ["havip: capability NET_RAW", "havip: host port 8084", "hostNetwork"],
            )
        else:
            assert level == "restricted", (workload["metadata"]["name"], reasons)
    needed = max(("baseline", *levels.values()), key=policy.LEVELS.index)
    (namespace,) = of_kind(objects, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == needed
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"


def test_the_pod_security_levels_are_told_apart(rendered: dict[str, list[Manifest]]) -> None:
    quota = policy.pod_spec(copy.deepcopy(named(rendered["prod"], "Deployment", "havip-quota")))
    assert quota is not None and policy.pod_security(quota) == ("restricted", [])
    quota["securityContext"]["runAsNonRoot"] = False
    quota["securityContext"]["runAsUser"] = 0
    assert policy.pod_security(quota)[0] == "baseline"
    quota["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert policy.pod_security(quota) == ("privileged", ["volume host: hostPath"])
