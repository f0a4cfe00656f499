"""Schemathesis against the gateway with the real backend: every check, no 5xx, no failure.

The four services run as processes on a fresh database and topics; tenant A
holds a HAVIP with an attachment and an EIP (so answers carry full views),
and `schemathesis run` walks the gateway's live `/openapi.json` in every
phase (examples, coverage, fuzzing, stateful) and both generation modes,
with `--checks all` minus the checks named in `DISABLED_CHECKS` with why.

The CLI runs as a subprocess rather than `schemathesis.openapi.from_url` +
`@schema.parametrize()`: it is the only way to get the coverage and
stateful phases and the run-level summary (the number of cases) in one go,
it needs nothing from our session-scoped asyncio loop, and a failure prints
Schemathesis' own report with a curl reproducer for each problem.

Auth: `tests/schemathesis.toml` points at a Web Fuzzing Commons auth file
written here with three identities (tenant A, tenant B, the agent of A's
instance i-1). Schemathesis moves an operation on to the next identity
when one is refused, so `POST /v1/vrrp-events` ends up with the agent token,
and tenant A and B are peers for `object_level_authorization`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas import topics
from schemas.messages import EipChanged
from services.gateway.tokens import Principal, store_token
from services.runtime.db import connect_pool
from tests.conftest import Infra
from tests.inventory_tools import TENANT, Publisher, instance, vswitch
from tests.pipeline_tools import Pipeline, running_pipeline, settled_operation, succeeded

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = REPO / "tests" / "schemathesis.toml"

A_TOKEN = "tok-schemathesis-tenant-a"
B_TENANT = "tenant-schemathesis-b"
B_TOKEN = "tok-schemathesis-tenant-b"
AGENT_TOKEN = "tok-schemathesis-agent-a-i-1"

# Every check runs (`--checks all`) except these, each with the reason it cannot hold for this API.
DISABLED_CHECKS: dict[str, str] = {
    # Deletion is asynchronous: DELETE /v1/havips/{id} answers 202 with an operation, and the HAVIP
    # is `Deleting` (then `Deleted`) and still readable by GET until and after the mapping service
    # applies it; DELETE .../associations/{target} and DELETE .../eip likewise answer 202 with an
    # operation. A read after a successful DELETE is therefore not a use after free.
    "use_after_free": "deletes are asynchronous (202 + operation); the HAVIP stays readable as Deleting/Deleted",
    # Creation is asynchronous too: POST /v1/havips answers 202 with the HAVIP as `Creating` and an
    # operation, and quota decides afterwards (vSwitch known, address free, limits). A create it
    # refuses leaves no HAVIP: GET then answers 404 NotFound.HaVip and the operation says why
    # (Failed, with its code). A 404 after a 202 is therefore not a created resource gone missing.
    "ensure_resource_availability": "creates are asynchronous (202 + operation); a refused create leaves no HAVIP",
}

# Deterministic, so CI repeats the same run; sized for well under a minute of Schemathesis (about 2,500-3,000
# cases) against the real backend.
SEED = 20240917
MAX_EXAMPLES = 100
# One worker: with several, Hypothesis' strategy descriptions call ast.parse from threads at once,
# which CPython 3.11 can fail with "AST constructor recursion depth mismatch" (a Runtime Error of the run).
WORKERS = 1
# GET /v1/operations/{id}?wait= may hold an answer up to 30 s (the gateway's maximum).
REQUEST_TIMEOUT_SECONDS = 35
RUN_TIMEOUT_SECONDS = 600


@dataclass
class Target:
    pipeline: Pipeline
    havip_id: str


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def wait_operation(gateway: httpx.AsyncClient, operation_id: str) -> dict[str, Any]:
    return await settled_operation(gateway, A_TOKEN, operation_id)


async def submit(gateway: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    return await succeeded(gateway, A_TOKEN, method, url, **kwargs)


@pytest.fixture(scope="module")
async def target(infra: Infra, workdir: Path) -> AsyncIterator[Target]:
    # Throttling (429 + Retry-After, documented) is tested elsewhere; here it would only turn most of
    # the generated cases into 429s, so the rates are raised out of the way.
    rates = {
        "tenant_requests_per_second": 10_000.0,
        "tenant_request_burst": 10_000,
        "agent_requests_per_second": 10_000.0,
        "agent_request_burst": 10_000,
    }
    async with running_pipeline(infra, workdir, "schemathesis", **rates) as pipeline:
        db = await connect_pool(pipeline.settings.database_url, max_size=2)
        try:
            await store_token(db, A_TOKEN, Principal("tenant", TENANT))
            await store_token(db, B_TOKEN, Principal("tenant", B_TENANT))
            await store_token(db, AGENT_TOKEN, Principal("agent", TENANT, "i-1"))
        finally:
            await db.close()
        async with Publisher(pipeline.settings) as publisher:
            await publisher.inventory([vswitch(), instance(1), instance(2)])
            for n in (1, 2):
                eip = EipChanged(eip_id=f"eip-a{n}", tenant_id=TENANT, ip_address=f"198.51.100.{n}", revision=1)
                await publisher.send(topics.INVENTORY, eip.eip_id, eip)
        async with httpx.AsyncClient(base_url=pipeline.gateway_url, timeout=60) as gateway:
            created = await gateway.post("/v1/havips", json={"vswitch_id": "vsw-a"}, headers=auth(A_TOKEN))
            assert created.status_code == 202, created.text
            havip_id = created.json()["havip"]["havip_id"]
            assert (await wait_operation(gateway, created.json()["operation"]["operation_id"]))["status"] == "Succeeded"
            await submit(gateway, "POST", f"/v1/havips/{havip_id}/associations", json={"instance_id": "i-1"})
            await submit(gateway, "PUT", f"/v1/havips/{havip_id}/eip", json={"eip_id": "eip-a1"})
        yield Target(pipeline, havip_id)


def auth_file(path: Path) -> Path:
    """The identities, as a Web Fuzzing Commons auth document (tenant A first: the default one)."""
    users = [("tenant-a", A_TOKEN), ("tenant-b", B_TOKEN), ("agent-a-i-1", AGENT_TOKEN)]
    document = {
        "schemaVersion": "0.1.0",
        "auth": [
            {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {token}"}]}
            for name, token in users
        ],
    }
    path.write_text(json.dumps(document, indent=2))
    return path


def schemathesis_command(gateway_url: str, junit: Path) -> list[str]:
    return [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{gateway_url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(DISABLED_CHECKS),
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        str(WORKERS),
        "--request-timeout",
        str(REQUEST_TIMEOUT_SECONDS),
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
        "--output-truncate",
        "false",
        # The tokens are this test's own: show them, so each reproducer curl runs as printed.
        "--output-sanitize",
        "false",
    ]


def cases_run(output: str) -> int | None:
    """The number of test cases from the summary (`Test cases: N generated, ...`)."""
    match = re.search(r"Test cases:\s*(\d+) generated", output)
    return int(match[1]) if match else None


def junit_summary(junit: Path) -> str:
    if not junit.exists():
        return "no junit report"
    root = ElementTree.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    return ", ".join(f"{value} {key}" for key, value in counts.items()) + " (operations, in the junit report)"


async def test_schemathesis_finds_nothing(target: Target, workdir: Path) -> None:
    run_dir = workdir / f"schemathesis-{target.pipeline.settings.topic_prefix}run"
    run_dir.mkdir()
    junit = run_dir / "junit.xml"
    command = schemathesis_command(target.pipeline.gateway_url, junit)
    env = {**os.environ, "HAVIP_SCHEMATHESIS_AUTH_FILE": str(auth_file(run_dir / "auth.json"))}
    print("\n$", " ".join(command))
    for name, reason in DISABLED_CHECKS.items():
        print(f"disabled check {name}: {reason}")
    started = time.monotonic()
    # cwd: the run's own directory, so nothing Schemathesis writes lands in the working tree.
    completed = await asyncio.to_thread(
        subprocess.run,
        command,
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    elapsed = time.monotonic() - started
    output = completed.stdout + completed.stderr
    print(output)
    print(f"schemathesis: exit {completed.returncode} after {elapsed:.0f}s; {cases_run(output)} test cases run")
    print(f"schemathesis: {junit_summary(junit)}")
    print(f"service logs: {target.pipeline.logs}")
    assert completed.returncode == 0, f"schemathesis found problems (exit {completed.returncode}); see above"
    assert cases_run(output), "no test case ran"
