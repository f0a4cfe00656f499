"""The agent's rules: the lease a spooled claim carries, when to renew, what a new config withdraws."""

from datetime import UTC, datetime

from schemas.messages import VrrpState
from services.agent.claims import LastState, Renewal, lease_for, reconcile, renewals_due, writer_gone
from services.agent.keepalived import Kind, NameKey
from services.agent.reports import Origin, ReportDraft, SpooledReport

MASTER, BACKUP, FAULT, STOP = VrrpState.MASTER, VrrpState.BACKUP, VrrpState.FAULT, VrrpState.STOP
VI_1 = NameKey(Kind.INSTANCE, "VI_1")
VI_2 = NameKey(Kind.INSTANCE, "VI_2")
VG_1 = NameKey(Kind.GROUP, "VG_1")
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LEASE = 2.5


def report(state: VrrpState, seq: int, key: NameKey = VI_1, origin: Origin = Origin.FIFO) -> SpooledReport:
    return ReportDraft("havip-1", state, 100, T0, origin, key).numbered(seq)


# --- the lease of a spooled report -----------------------------------------


def test_a_master_report_that_is_still_the_latest_word_gets_the_full_lease() -> None:
    states = {VI_1: LastState(MASTER, 100, "havip-1", seq=7)}
    assert lease_for(report(MASTER, 7), states, writer_connected=True, lease=LEASE) == LEASE


def test_a_master_report_keepalived_has_since_overruled_gets_lease_zero() -> None:
    states = {VI_1: LastState(BACKUP, 100, "havip-1", seq=8)}
    assert lease_for(report(MASTER, 7), states, writer_connected=True, lease=LEASE) == 0.0


def test_an_older_master_report_behind_a_newer_master_gets_lease_zero() -> None:
    states = {VI_1: LastState(MASTER, 100, "havip-1", seq=9)}
    assert lease_for(report(MASTER, 7), states, writer_connected=True, lease=LEASE) == 0.0


def test_a_master_report_sent_after_keepalived_went_away_gets_lease_zero() -> None:
    states = {VI_1: LastState(MASTER, 100, "havip-1", seq=7)}
    assert lease_for(report(MASTER, 7), states, writer_connected=False, lease=LEASE) == 0.0
    stale = writer_gone(states)
    # A new keepalived connected (it wrote some other line) but has not said MASTER for VI_1 yet.
    assert lease_for(report(MASTER, 7), stale, writer_connected=True, lease=LEASE) == 0.0


def test_a_master_report_from_a_previous_run_gets_lease_zero() -> None:
    assert lease_for(report(MASTER, 7), {}, writer_connected=True, lease=LEASE) == 0.0


def test_reports_that_are_not_master_carry_no_lease() -> None:
    for state in (BACKUP, FAULT, STOP):
        states = {VI_1: LastState(state, 100, "havip-1", seq=7)}
        assert lease_for(report(state, 7), states, writer_connected=True, lease=LEASE) is None


def test_a_notify_script_claim_carries_no_lease_it_lives_until_superseded() -> None:
    states = {VI_1: LastState(MASTER, 100, "havip-1", seq=7)}
    assert lease_for(report(MASTER, 7, origin=Origin.NOTIFY), states, writer_connected=True, lease=LEASE) is None


# --- renewals -----------------------------------------------------------------

TARGETS = {VI_1: "havip-1", VI_2: "havip-2", VG_1: "havip-g"}


def test_every_live_master_is_renewed_with_its_last_priority() -> None:
    states = {
        VI_2: LastState(MASTER, 90, "havip-2", 3),
        VI_1: LastState(MASTER, 100, "havip-1", 4),
        VG_1: LastState(BACKUP, 0, "havip-g", 5),
    }
    assert renewals_due(states, TARGETS, writer_connected=True, spool_empty=True) == [
        Renewal(VI_1, "havip-1", 100),
        Renewal(VI_2, "havip-2", 90),
    ]


def test_no_renewals_while_reports_wait_in_the_spool() -> None:
    states = {VI_1: LastState(MASTER, 100, "havip-1", 4)}
    assert renewals_due(states, TARGETS, writer_connected=True, spool_empty=False) == []


def test_renewals_stop_the_moment_keepalived_goes_away() -> None:
    states = {VI_1: LastState(MASTER, 100, "havip-1", 4)}
    assert renewals_due(states, TARGETS, writer_connected=False, spool_empty=True) == []


def test_after_keepalived_returns_renewals_wait_for_a_new_master_line() -> None:
    states = writer_gone({VI_1: LastState(MASTER, 100, "havip-1", 4), VI_2: LastState(MASTER, 90, "havip-2", 5)})
    # The new keepalived wrote a line for VI_2 only.
    states[VI_2] = LastState(MASTER, 90, "havip-2", 6)
    assert renewals_due(states, TARGETS, writer_connected=True, spool_empty=True) == [Renewal(VI_2, "havip-2", 90)]


def test_nothing_is_renewed_for_names_the_config_does_not_hold() -> None:
    states = {VI_1: LastState(MASTER, 100, None, None), VI_2: LastState(MASTER, 90, "havip-old", 2)}
    assert renewals_due(states, TARGETS, writer_connected=True, spool_empty=True) == []


def test_a_master_that_could_not_be_spooled_is_still_renewed() -> None:
    # A full disk lost the report; keepalived still says MASTER, and renewals say so too.
    states = {VI_1: LastState(MASTER, 100, "havip-1", None)}
    assert renewals_due(states, TARGETS, writer_connected=True, spool_empty=True) == [Renewal(VI_1, "havip-1", 100)]


# --- a new configuration ------------------------------------------------------


def test_a_master_havip_no_longer_named_is_withdrawn_with_stop_and_forgotten() -> None:
    states = {VI_1: LastState(MASTER, 100, "havip-1", 4), VI_2: LastState(MASTER, 90, "havip-2", 5)}
    drafts, updated = reconcile(states, {VI_2: "havip-2"}, writer_connected=True, now=T0)
    assert drafts == [ReportDraft("havip-1", STOP, 100, T0, Origin.FIFO, VI_1)]
    assert updated[VI_1] == LastState(MASTER, 100, None, None)
    assert updated[VI_2] == states[VI_2]
    assert renewals_due(updated, {VI_2: "havip-2"}, writer_connected=True, spool_empty=True) == [
        Renewal(VI_2, "havip-2", 90)
    ]


def test_a_havip_held_as_backup_needs_no_withdrawal() -> None:
    drafts, updated = reconcile({VI_1: LastState(BACKUP, 100, "havip-1", 4)}, {}, writer_connected=True, now=T0)
    assert drafts == []
    assert updated[VI_1].havip_id is None


def test_a_master_is_withdrawn_even_after_keepalived_went_away() -> None:
    # It was killed and left the VIP in place; the tenant removing the name means "not here any more".
    states = writer_gone({VI_1: LastState(MASTER, 100, "havip-1", 4)})
    drafts, _ = reconcile(states, {}, writer_connected=False, now=T0)
    assert [(d.havip_id, d.state) for d in drafts] == [("havip-1", STOP)]


def test_a_name_moved_to_another_havip_withdraws_the_old_and_announces_the_new() -> None:
    states = {VI_1: LastState(MASTER, 100, "havip-1", 4)}
    drafts, updated = reconcile(states, {VI_1: "havip-9"}, writer_connected=True, now=T0)
    assert [(d.havip_id, d.state) for d in drafts] == [("havip-1", STOP), ("havip-9", MASTER)]
    assert updated[VI_1].havip_id is None  # the agent records the new HAVIP once the report is spooled


def test_a_newly_named_instance_reports_what_keepalived_last_said() -> None:
    states = {VI_2: LastState(BACKUP, 90)}  # seen on the FIFO while not configured
    drafts, _ = reconcile(states, {VI_2: "havip-2"}, writer_connected=True, now=T0)
    assert drafts == [ReportDraft("havip-2", BACKUP, 90, T0, Origin.FIFO, VI_2)]


def test_nothing_is_announced_from_a_keepalived_that_has_gone() -> None:
    states = writer_gone({VI_2: LastState(MASTER, 90)})
    assert reconcile(states, {VI_2: "havip-2"}, writer_connected=False, now=T0)[0] == []


def test_an_unchanged_config_changes_nothing() -> None:
    states = {VI_1: LastState(MASTER, 100, "havip-1", 4), VG_1: LastState(BACKUP, 0, "havip-g", 5)}
    assert reconcile(states, TARGETS, writer_connected=True, now=T0) == ([], states)
