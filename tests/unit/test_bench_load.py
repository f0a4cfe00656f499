"""The background load of `havip bench failover`: its hand-written reports and their order."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import topics
from schemas.messages import VrrpReported, VrrpState
from services.dev.bench_load import LoadPlan, due, encode_report


def test_a_hand_written_report_is_a_valid_vrrp_reported() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    key, value = encode_report(7, "i-14", VrrpState.MASTER, 123456, now=now)
    report = topics.VRRP.parse(value)
    assert isinstance(report, VrrpReported)
    assert key == b"havip-7"
    assert (report.havip_id, report.instance_id, report.state, report.seq) == (
        "havip-7",
        "i-14",
        VrrpState.MASTER,
        123456,
    )
    assert report.lease_seconds == 30.0
    assert report.reported_at == report.received_at == report.occurred_at == now
    backup = topics.VRRP.parse(encode_report(7, "i-14", VrrpState.BACKUP, 123457, now=now)[1])
    assert backup.lease_seconds is None
    assert backup.message_id != report.message_id


def test_renewals_and_owner_changes_use_separate_halves_and_growing_seqs() -> None:
    plan = LoadPlan(havips=10)
    renewed = [plan.renewal(now_us=100) for _ in range(6)]
    assert [r[0] for r in renewed] == [0, 1, 2, 3, 4, 0]
    assert all(r[1] == f"i-{2 * r[0]}" and r[2] is VrrpState.MASTER for r in renewed)
    changed = [plan.report(now_us=100) for _ in range(6)]
    assert [c[0] for c in changed] == [5, 6, 7, 8, 9, 5]
    assert [c[2] for c in changed] == [VrrpState.BACKUP] * 5 + [VrrpState.MASTER]
    seqs = [r[3] for r in renewed + changed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 100


def test_pacing_sends_what_is_due_and_makes_up_a_slow_moment() -> None:
    assert due(1000, 0.5, 0) == 500
    assert due(1000, 0.5, 500) == 0
    assert due(1000, 2.0, 900) == 1100
    assert due(1000, 1.0, 1200) == 0
