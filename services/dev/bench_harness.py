"""What every `havip bench` does around its measurement: its stack, its own service processes, /metrics.

benchkit holds the pure side (figures, tables, JSON, PNGs); this module the
processes and HTTP they are measured through.
"""

from __future__ import annotations

import httpx


async def scrape_metrics(http: httpx.AsyncClient) -> str:
    """A service's /metrics text, read with benchkit.metric_value; an error answer is an error, not zero."""
    answer = await http.get("/metrics")
    answer.raise_for_status()
    return answer.text
