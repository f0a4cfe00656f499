"""Every rendered object is valid: built-in kinds against the Kubernetes OpenAPI schemas shipped in
the kubernetes-validate package (offline, strict: an unknown field fails), Strimzi and
CloudNativePG objects against what those operators require (operator_schemas.py)."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.conftest import Manifest
from tests.deploy.operator_schemas import SCHEMAS

# The oldest Kubernetes these manifests support (a preStop `sleep` needs 1.30), and the newest
# the installed package knows.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())


def _built_in(obj: Manifest) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_built_in_object_is_valid_kubernetes(overlay: tuple[str, list[Manifest]], version: str) -> None:
    _, objects = overlay
    failures = []
    for obj in filter(_built_in, objects):
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not failures, "\n".join(failures)


def test_every_operator_object_has_what_its_operator_requires(overlay: tuple[str, list[Manifest]]) -> None:
    _, objects = overlay
    failures = []
    for obj in objects:
        if _built_in(obj):
            continue
        schema = SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if schema is None:
            failures.append(f"{obj['apiVersion']} {obj['kind']}: no check for this kind (add it to operator_schemas)")
            continue
        for error in jsonschema.Draft202012Validator(schema).iter_errors(obj):
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("KafkaTopic", ("spec", "partitions"), 0),
        ("KafkaUser", ("spec", "authentication", "type"), "scram-sha-256"),
        ("Kafka", ("spec", "kafka", "listeners", 0, "name"), "SCRAM_LISTENER"),
        ("Cluster", ("spec", "instancess"), 3),
    ],
)
def test_the_operator_checks_reject_a_broken_object(
    rendered: dict[str, list[Manifest]], kind: str, path: tuple[Any, ...], value: object
) -> None:
    (obj,) = [copy.deepcopy(o) for o in rendered["prod"] if o["kind"] == kind][:1]
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    schema = SCHEMAS[(obj["apiVersion"], kind)]
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(obj))


@pytest.mark.parametrize("kind", ["Deployment", "DaemonSet"])
def test_the_kubernetes_check_rejects_an_unknown_field(rendered: dict[str, list[Manifest]], kind: str) -> None:
    (workload,) = [copy.deepcopy(o) for o in rendered["prod"] if o["kind"] == kind][:1]
    workload["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(workload, KUBERNETES_VERSIONS[0], strict=True)
