"""Render every overlay of deploy/k8s once per session (`kubectl kustomize`), for the checks beside this file.

kubectl is on the development and CI machines. Elsewhere these tests skip, except under CI=true,
where a missing kubectl is a failure, never a silent skip (as with keepalived).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")

Manifest = dict[str, Any]


def render(overlay: str) -> list[Manifest]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is needed to render deploy/k8s (it is on every CI machine)", pytrace=False)
        pytest.skip("kubectl is not installed: deploy/k8s is not rendered here")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Manifest]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: dict[str, list[Manifest]]) -> tuple[str, list[Manifest]]:
    """One overlay's name and objects: a test that takes it runs once per overlay."""
    return request.param, rendered[request.param]


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def workloads(objects: list[Manifest]) -> list[Manifest]:
    """Every object that runs our pods: the services' Deployments and the observer's DaemonSet."""
    return [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]


def named(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"one {kind} {name} expected, found {len(found)}"
    return found[0]


def settings_data(objects: list[Manifest]) -> dict[str, str]:
    """The HAVIP_* settings every service reads (the generated havip-settings ConfigMap)."""
    maps = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith("havip-settings")]
    assert len(maps) == 1, [m["metadata"]["name"] for m in maps]
    return maps[0]["data"]
