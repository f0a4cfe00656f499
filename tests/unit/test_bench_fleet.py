"""The fleet of agents `havip bench failover` and `havip bench soak` send through the gateway."""

from __future__ import annotations

import json

from pydantic import TypeAdapter

from services.dev.bench_fleet import FleetPlan, fleet_split, report_body
from services.gateway.models import VrrpEventRequest


def test_renewing_masters_renew_in_turn_and_the_others_change_owner() -> None:
    plan = FleetPlan(renewing=3, changing=2)
    renewed = [plan.renewal(now_us=100) for _ in range(4)]
    assert [(n, instance, state, lease) for n, instance, state, _, lease in renewed] == [
        (0, "i-0", "MASTER", 2.5),
        (1, "i-2", "MASTER", 2.5),
        (2, "i-4", "MASTER", 2.5),
        (0, "i-0", "MASTER", 2.5),
    ]
    changed = [plan.report(now_us=100) for _ in range(4)]
    assert [(n, state, lease) for n, _, state, _, lease in changed] == [
        (3, "BACKUP", None),
        (4, "BACKUP", None),
        (3, "MASTER", 30.0),
        (4, "MASTER", 30.0),
    ]
    seqs = [r[3] for r in renewed + changed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 100


def test_a_report_is_what_the_gateway_accepts_from_an_agent() -> None:
    body = report_body(7, "MASTER", 123, 2.5)
    request = TypeAdapter(VrrpEventRequest).validate_json(body)
    assert (request.havip_id, request.seq, request.lease_seconds) == ("havip-7", 123, 2.5)
    assert "lease_seconds" not in json.loads(report_body(7, "BACKUP", 124, None))


def test_renewing_masters_renew_once_a_second_as_far_as_the_havips_go() -> None:
    assert fleet_split(10_000, 5_000) == (5_000, 5_000)
    assert fleet_split(10_000, 1_000) == (1_000, 9_000)
    assert fleet_split(100, 5_000) == (50, 50)
