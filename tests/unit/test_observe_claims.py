"""The observer's claim book: what adverts and gratuitous ARPs make of an instance's claim."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.messages import VrrpState
from services.observe.claims import GARP_HOLD_SECONDS, LOWEST_PRIORITY, ClaimBook, ClaimKey

KEY = ClaimKey("hv-1", "i-1", "t-1")
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_first_advert_claims_and_its_repeats_publish_nothing() -> None:
    book = ClaimBook()
    first = book.advert(KEY, 100, 1.0, 0.0, at(0))
    assert first is not None
    assert (first.state, first.priority, first.lease_seconds) == (VrrpState.MASTER, 100, None)
    assert [book.advert(KEY, 100, 1.0, float(n), at(n)) for n in range(1, 10)] == [None] * 9
    (live,) = book.live_claims()
    assert (live.key, live.priority, live.seen_at) == (KEY, 100, at(9))


def test_a_new_priority_is_a_new_claim() -> None:
    book = ClaimBook()
    book.advert(KEY, 100, 1.0, 0.0, at(0))
    change = book.advert(KEY, 50, 1.0, 1.0, at(1))
    assert change is not None and change.priority == 50 and "was 100" in change.why


def test_adverts_stopping_lapse_the_claim_when_a_backup_of_its_priority_would_take_over() -> None:
    book = ClaimBook()
    book.advert(KEY, 100, 1.0, 0.0, at(0))
    # RFC 5798 Master_Down_Interval for priority 100 at 1 s: 3 + 156/256 = 3.61 s.
    assert book.lapse(3.6, at(3.6)) == []
    (lapsed,) = book.lapse(3.62, at(3.62))
    assert (lapsed.state, lapsed.priority, lapsed.lease_seconds) == (VrrpState.MASTER, 100, 0.0)
    assert book.lapse(10.0, at(10.0)) == [], "a lapse is published once"
    assert book.live_claims() == []
    again = book.advert(KEY, 100, 1.0, 11.0, at(11))
    assert again is not None and again.lease_seconds is None and "again" in again.why


def test_a_slower_advert_interval_waits_longer_before_the_lapse() -> None:
    book = ClaimBook()
    book.advert(KEY, 255, 3.0, 0.0, at(0))
    assert book.lapse(9.0, at(9.0)) == []
    assert len(book.lapse(9.02, at(9.02))) == 1


def test_priority_zero_resigns_at_once_and_once() -> None:
    book = ClaimBook()
    book.advert(KEY, 100, 1.0, 0.0, at(0))
    resigned = book.advert(KEY, 0, 1.0, 0.5, at(0.5))
    assert resigned is not None and resigned.state is VrrpState.STOP
    assert book.advert(KEY, 0, 1.0, 0.6, at(0.6)) is None
    assert book.live_claims() == [] and book.lapse(100.0, at(100.0)) == []
    # keepalived starting again claims again.
    assert book.advert(KEY, 100, 1.0, 5.0, at(5)) is not None


def test_a_resignation_is_published_even_for_a_claim_this_observer_never_saw() -> None:
    # A restarted observer must still release at once what keepalived gives up.
    resigned = ClaimBook().advert(KEY, 0, 1.0, 0.0, at(0))
    assert resigned is not None and resigned.state is VrrpState.STOP


def test_a_gratuitous_arp_claims_at_the_last_priority_seen_or_the_lowest() -> None:
    book = ClaimBook()
    fresh = book.gratuitous_arp(KEY, 0.0, at(0))
    assert fresh is not None
    assert (fresh.priority, fresh.lease_seconds) == (LOWEST_PRIORITY, GARP_HOLD_SECONDS)
    other = ClaimKey("hv-1", "i-2", "t-1")
    book.advert(other, 90, 1.0, 0.0, at(0))
    book.lapse(10.0, at(10.0))
    garp = book.gratuitous_arp(other, 10.0, at(10))
    assert garp is not None and garp.priority == 90


def test_a_garp_burst_is_one_claim_and_it_ends_after_its_hold_without_a_lapse_record() -> None:
    book = ClaimBook()
    assert book.gratuitous_arp(KEY, 0.0, at(0)) is not None
    assert [book.gratuitous_arp(KEY, 0.2 * n, at(0.2 * n)) for n in range(1, 5)] == [None] * 4
    assert book.live_claims() == [], "a GARP claim is never renewed: its lease ends it"
    assert book.lapse(0.8 + GARP_HOLD_SECONDS + 0.01, at(0.8 + GARP_HOLD_SECONDS + 0.01)) == []
    assert book.gratuitous_arp(KEY, 10.0, at(10)) is not None, "announced again: claimed again"


def test_a_garp_beside_live_adverts_changes_nothing() -> None:
    book = ClaimBook()
    book.advert(KEY, 100, 1.0, 0.0, at(0))
    assert book.gratuitous_arp(KEY, 0.1, at(0.1)) is None
    (live,) = book.live_claims()
    assert live.priority == 100


def test_forget_drops_claims_no_longer_possible() -> None:
    book = ClaimBook()
    other = ClaimKey("hv-2", "i-1", "t-1")
    book.advert(KEY, 100, 1.0, 0.0, at(0))
    book.advert(other, 100, 1.0, 0.0, at(0))
    book.forget(lambda key: key != other)
    assert [c.key for c in book.live_claims()] == [KEY]


def test_the_next_lapse_is_when_the_earliest_claim_would_lapse() -> None:
    book = ClaimBook()
    assert book.next_lapse() is None
    book.advert(KEY, 255, 1.0, 0.0, at(0))
    book.advert(ClaimKey("hv-2", "i-1", "t-1"), 100, 1.0, 0.5, at(0.5))
    assert book.next_lapse() == 3.0 + 1 / 256
    book.advert(KEY, 255, 1.0, 1.0, at(1))  # an advert moves it on
    assert book.next_lapse() == 1.0 + 3.0 + 1 / 256
    book.lapse(10.0, at(10))
    assert book.next_lapse() is None
