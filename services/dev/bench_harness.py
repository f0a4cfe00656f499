"""What every `havip bench` does around its measurement: its folder, its stack, its own services, /metrics.

benchkit holds the pure side (figures, tables, JSON, PNGs); this module the
processes and HTTP a bench measures through. Every bench starts from
`bench_stack` (or, without PostgreSQL, `bench_workdir`): a fresh temporary
folder for the logs, printed so a failed run can be read afterwards.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx

from services.dev.embedded import free_port
from services.dev.processes import PORT_SETTING, ServiceProcess
from services.dev.stack import DEV_SERVICES, DevStack, dev_stack
from services.runtime.settings import Settings


def bench_workdir(starting: str) -> Path:
    """A fresh folder for a bench's logs, said with what is starting in it."""
    workdir = Path(tempfile.mkdtemp(prefix="havip-bench-"))
    print(f"starting {starting} (logs in {workdir}) ...", flush=True)
    return workdir


def bench_stack(settings: Settings, services: tuple[str, ...] = DEV_SERVICES) -> DevStack:
    """Broker, database and `services` (by default the whole stack) in a fresh folder, not yet started.

    Every service on a free port rather than the configured 8080-8083, which a
    `havip dev up` on this machine may hold. Embedded broker and PostgreSQL
    unless the environment names real ones (dev_stack).
    """
    workdir = bench_workdir("the stack" if services else "broker and database")
    ports = {setting: free_port(settings.http_host) for setting in PORT_SETTING.values()}
    return dev_stack(settings.model_copy(update=ports), workdir, services)


def bench_service(
    service: str, settings: Settings, log_dir: Path, *, name: str | None = None, **update: object
) -> ServiceProcess:
    """One process of `service` that the bench starts and stops itself, on a free port, with `update` to its
    settings; not started."""
    port = {PORT_SETTING[service]: free_port(settings.http_host)}
    return ServiceProcess(service, settings.model_copy(update=port | update), log_dir, name=name)


async def scrape_metrics(http: httpx.AsyncClient) -> str:
    """A service's /metrics text, read with benchkit.metric_value; an error answer is an error, not zero."""
    answer = await http.get("/metrics")
    answer.raise_for_status()
    return answer.text
