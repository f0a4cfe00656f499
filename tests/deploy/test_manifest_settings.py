"""The services are configured by the environment the manifests give them, and nothing else."""

from __future__ import annotations

import pytest

from services.runtime.settings import Settings
from tests.deploy.conftest import Manifest, named, of_kind, settings_data, workloads

SERVICES = ("gateway", "quota", "mapping", "forwarder")
SECRET = "from-a-secret"


def container_env(objects: list[Manifest], container: Manifest) -> dict[str, str]:
    """What the container's environment holds: the settings ConfigMap, then its own entries. A
    Secret's value reads SECRET, the downward API's `fieldRef:<path>`."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(settings_data(objects) if "configMapRef" in source else {})
    for entry in container.get("env", []):
        field = entry.get("valueFrom", {}).get("fieldRef")
        env[entry["name"]] = f"fieldRef:{field['fieldPath']}" if field else entry.get("value", SECRET)
    return env


def test_every_havip_variable_the_manifests_set_is_a_setting(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    known = {f"HAVIP_{name.upper()}" for name in Settings.model_fields}
    for workload in workloads(objects):
        spec = workload["spec"]["template"]["spec"]
        for container in (*spec.get("initContainers", []), *spec["containers"]):
            unknown = {n for n in container_env(objects, container) if n.startswith("HAVIP_")} - known
            assert not unknown, f"{workload['metadata']['name']}/{container['name']}: {unknown} (a typo?)"


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_loads_its_settings_from_that_environment_and_listens_on_its_port(
    overlay: tuple[str, list[Manifest]], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, objects = overlay
    spec = named(objects, "Deployment", f"havip-{service}")["spec"]["template"]["spec"]
    (main,) = spec["containers"]
    for name, value in container_env(objects, main).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.database_url == SECRET and settings.kafka_sasl_password.get_secret_value() == SECRET
    assert settings.http_host == "0.0.0.0"  # reachable by the kubelet's probes and the Service
    assert settings.create_topics is False  # Strimzi owns the topics
    (port,) = main["ports"]
    assert port == {"name": "http", "containerPort": getattr(settings, f"{service}_port")}
    service_object = named(objects, "Service", f"havip-{service}")
    assert service_object["spec"]["ports"][0]["targetPort"] == "http"


def test_the_observer_loads_its_settings_from_that_environment_and_listens_on_its_port(
    overlay: tuple[str, list[Manifest]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, objects = overlay
    (main,) = named(objects, "DaemonSet", "havip-observe")["spec"]["template"]["spec"]["containers"]
    env = container_env(objects, main)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert "HAVIP_DATABASE_URL" not in env  # no database: the default DSN, never used
    assert settings.database_url == Settings.model_fields["database_url"].default
    assert settings.kafka_sasl_username == "havip-observer"
    assert settings.kafka_sasl_password.get_secret_value() == SECRET
    assert settings.create_topics is False  # Strimzi owns the topics
    # Its host's instances: the node it runs on; in the host's own network namespace.
    assert settings.observe_host_id == "fieldRef:spec.nodeName"
    assert settings.observe_netns == ""
    # The host's network: it listens on the node's address, not on every interface of the host.
    assert settings.http_host == "fieldRef:status.podIP"
    (port,) = main["ports"]
    assert port == {"name": "http", "containerPort": settings.observe_port, "hostPort": settings.observe_port}
    # A claim survives a lost renewal or two before its lease runs out.
    assert 2 * settings.observe_renew_seconds <= settings.observe_lease_seconds


def test_the_dsn_comes_from_the_postgres_cluster_secret(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    (cluster,) = of_kind(objects, "Cluster")
    for deployment in of_kind(objects, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        for container in (*spec["initContainers"], *spec["containers"]):
            (dsn,) = [e for e in container["env"] if e["name"] == "HAVIP_DATABASE_URL"]
            # CloudNativePG writes the application user's connection URI into <cluster>-app.
            assert dsn["valueFrom"]["secretKeyRef"] == {"name": f"{cluster['metadata']['name']}-app", "key": "uri"}


def test_no_secret_value_is_committed(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    assert of_kind(objects, "Secret") == []
    for value in settings_data(objects).values():
        assert "password" not in value.lower() and "@" not in value
