"""Kafka topics and access in deploy/k8s agree with the topic registry (schemas/topics.py).

Every registry topic is a Strimzi KafkaTopic with the partitions the services are configured
for; each service's KafkaUser may write exactly the topics the registry says it produces and
read exactly those it consumes; the observers' user and the outside platforms' user likewise.
"""

from __future__ import annotations

from collections import defaultdict

from schemas.topics import ALL, OBSERVER, PLATFORM, SERVICES
from tests.deploy.conftest import Manifest, named, of_kind, settings_data

# Consumer groups by principal (services/runtime/worker.py group_id, services/gateway/results.py);
# the forwarder and the observer assign partitions themselves and have none.
GROUPS = {"gateway": "havip-gateway", "quota": "havip-quota", "mapping": "havip-mapping", PLATFORM: "havip-platform"}


def _kafka_name(objects: list[Manifest]) -> str:
    (kafka,) = of_kind(objects, "Kafka")
    return str(kafka["metadata"]["name"])


def _brokers(objects: list[Manifest]) -> int:
    return sum(p["spec"]["replicas"] for p in of_kind(objects, "KafkaNodePool") if "broker" in p["spec"]["roles"])


def test_every_registry_topic_is_a_kafka_topic_laid_out_as_the_services_expect(
    overlay: tuple[str, list[Manifest]],
) -> None:
    name, objects = overlay
    topics = {t["spec"]["topicName"]: t for t in of_kind(objects, "KafkaTopic")}
    assert sorted(topics) == sorted(t.name for t in ALL)
    partitions = int(settings_data(objects)["HAVIP_PARTITIONS"])
    replicas, min_insync = (3, 2) if name == "prod" else (1, 1)
    assert replicas <= _brokers(objects)
    for topic in ALL:
        manifest = topics[topic.name]
        assert manifest["metadata"]["labels"]["strimzi.io/cluster"] == _kafka_name(objects)
        spec, config = manifest["spec"], manifest["spec"]["config"]
        # Every topic keyed by havip_id has the same count, so one HAVIP's records share a worker.
        assert spec["partitions"] == partitions, topic.name
        assert (spec["replicas"], config["min.insync.replicas"]) == (replicas, min_insync), topic.name
        if topic.compacted:
            assert config["cleanup.policy"] == "compact", topic.name
            assert "retention.ms" not in config, topic.name
        else:
            assert config["cleanup.policy"] == "delete", topic.name
            assert int(config["retention.ms"]) >= 24 * 3600 * 1000, topic.name


def expected_acls() -> dict[str, set[tuple[str, str, str, str]]]:
    """(resource type, name, pattern, operation) per KafkaUser, from the registry alone."""
    acls: dict[str, set[tuple[str, str, str, str]]] = defaultdict(set)
    for topic in ALL:
        for principal in (*SERVICES, OBSERVER, PLATFORM):
            operations = set()
            if principal in topic.producers:
                operations.add("Write")
            if principal in topic.consumers:
                operations.add("Read")
            # Services look at every topic (it exists; its log was not lost): Describe reads no record.
            # The observers, a credential on every hypervisor host, describe only the four they use.
            if operations or principal in SERVICES:
                operations.add("Describe")
            acls[f"havip-{principal}"] |= {("topic", topic.name, "literal", op) for op in operations}
    for principal, group in GROUPS.items():
        # A prefix: a worker's group takes a suffix after the broker lost its topics (-g1, -g2, ...).
        acls[f"havip-{principal}"] |= {("group", group, "prefix", op) for op in ("Read", "Describe")}
    return acls


def granted_acls(user: Manifest) -> set[tuple[str, str, str, str]]:
    assert user["spec"]["authorization"]["type"] == "simple"
    granted = set()
    for rule in user["spec"]["authorization"]["acls"]:
        assert rule.get("type", "allow") == "allow" and rule.get("host", "*") == "*"
        resource = rule["resource"]
        for operation in rule["operations"]:
            granted.add((resource["type"], resource.get("name", ""), resource.get("patternType", "literal"), operation))
    return granted


def test_each_user_may_write_what_it_produces_and_read_what_it_consumes_nothing_more(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    users = {u["metadata"]["name"]: u for u in of_kind(objects, "KafkaUser")}
    expected = expected_acls()
    assert sorted(users) == sorted(expected)
    for name, user in users.items():
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == _kafka_name(objects)
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        assert granted_acls(user) == expected[name], name


def test_nothing_but_quota_can_write_accepted_commands(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    writers = {
        user["metadata"]["name"]
        for user in of_kind(objects, "KafkaUser")
        for kind, name, pattern, operation in granted_acls(user)
        if kind == "topic" and operation in ("Write", "All") and (name in ("havip.commands.accepted", "*"))
    }
    assert writers == {"havip-quota"}


def test_the_platform_writes_commands_and_inventory_and_reads_outcomes() -> None:
    granted = expected_acls()["havip-platform"]
    topics = {(name, op) for kind, name, _, op in granted if kind == "topic" and op != "Describe"}
    assert topics == {("havip.commands", "Write"), ("ens.inventory", "Write"), ("havip.command-results", "Read")}


def test_the_observer_reports_and_dead_letters_reads_inventory_and_mappings_and_has_no_group(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    granted = granted_acls(named(objects, "KafkaUser", f"havip-{OBSERVER}"))
    topics = {(name, op) for kind, name, _, op in granted if kind == "topic" and op != "Describe"}
    assert topics == {
        ("vrrp.events", "Write"),
        ("havip.dead-letters", "Write"),
        ("ens.inventory", "Read"),
        ("havip.mappings", "Read"),
    }
    assert {kind for kind, *_ in granted} == {"topic"}  # manual assignment: no group, nothing on the cluster


def test_each_service_signs_in_as_its_own_user_over_the_listener_it_is_configured_for(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, objects = overlay
    settings = settings_data(objects)
    kafka = named(objects, "Kafka", _kafka_name(objects))
    host, _, port = settings["HAVIP_KAFKA_BOOTSTRAP"].rpartition(":")
    assert host == f"{kafka['metadata']['name']}-kafka-bootstrap"
    (listener,) = [li for li in kafka["spec"]["kafka"]["listeners"] if li["port"] == int(port)]
    protocol = settings["HAVIP_KAFKA_SECURITY_PROTOCOL"]
    assert protocol == ("SASL_SSL" if listener["tls"] else "SASL_PLAINTEXT")
    assert listener["authentication"]["type"] == "scram-sha-512" == settings["HAVIP_KAFKA_SASL_MECHANISM"].lower()
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"  # else the ACLs are not enforced
    workloads = [("Deployment", f"havip-{s}", f"havip-{s}") for s in SERVICES]
    workloads.append(("DaemonSet", "havip-observe", f"havip-{OBSERVER}"))
    for kind, name, user in workloads:
        workload = named(objects, kind, name)
        (main,) = workload["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in main["env"]}
        assert env["HAVIP_KAFKA_SASL_USERNAME"]["value"] == user, name
        # Strimzi's User Operator writes the password into a Secret named after the KafkaUser.
        assert env["HAVIP_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": user, "key": "password"}
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == f"{kafka['metadata']['name']}-cluster-ca-cert"
        mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
        assert settings["HAVIP_KAFKA_SSL_CAFILE"] == f"{mounts['kafka-ca']}/ca.crt", name


def test_the_observer_may_reach_the_brokers_it_is_configured_for(overlay: tuple[str, list[Manifest]]) -> None:
    """Its egress policy (declared, though most CNIs do not police the host network) lets it reach Kafka."""
    _, objects = overlay
    port = int(settings_data(objects)["HAVIP_KAFKA_BOOTSTRAP"].rpartition(":")[2])
    policy = named(objects, "NetworkPolicy", "havip-observe-egress")
    (to_kafka,) = [r for r in policy["spec"]["egress"] if "strimzi.io/cluster" in str(r["to"])]
    (peer,) = to_kafka["to"]
    assert peer["podSelector"]["matchLabels"]["strimzi.io/cluster"] == _kafka_name(objects)
    assert port in {p["port"] for p in to_kafka["ports"]}
