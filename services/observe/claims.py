"""What an observer makes of the adverts and gratuitous ARPs it sees: claims that start, end and lapse.

Pure: every call is given the moment (monotonic seconds for timers, the wall clock for what
is published). One `ClaimBook` per observer, keyed by (havip_id, instance_id); the instance
is the one that owns the port the frame arrived on, already checked to be attached to the
HAVIP (services/observe/hostview.py).

The rules, and why:
- **An advert is a live MASTER claim at its priority**, renewed by each advert: keepalived
  sends one every `advert_int` while it is MASTER and none otherwise. Only a change is
  published (a first claim, a new priority, a claim after a lapse); the repeats are renewed
  together, a few records every few seconds (`live_claims`), never one record per advert.
- **Adverts stopping lapse the claim** after as long as a backup of the same priority waits
  before it takes over (RFC 5798 §6.1 Master_Down_Interval: three intervals plus the skew
  (256 - priority) / 256 of one). Every backup keepalived would promote waits at least that
  long, so by the time its first advert is seen the lapse is already published. A lapse is
  a claim "no longer known to be live" (lease 0): it keeps the HAVIP where it is until
  another instance claims it, as an agent's lapsed lease does.
- **Priority 0 resigns at once** (RFC 5798 §6.4.3: a master that stops sends it; keepalived
  does on a graceful stop and when it leaves MASTER for FAULT).
- **A gratuitous ARP** (Heartbeat, Pacemaker's IPaddr2: software that announces an address
  without VRRP) is a claim at the last priority seen from that instance, or the lowest. It
  has no renewals, so it is published with a short lease: the last announcer then wins
  once earlier announcements ran out, as on clouds that learn from ARP alone. A GARP from
  an instance whose VRRP claim is live changes nothing: keepalived sends both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from schemas.messages import VrrpState

# The priority a GARP claims with when its instance never advertised (RFC 5798: 1 is the lowest a backup may have).
LOWEST_PRIORITY = 1
# How long a GARP claim is live, locally (repeats within it are one claim) and at the mapping service (its lease).
GARP_HOLD_SECONDS = 3.0


class ClaimKind(StrEnum):
    VRRP = "vrrp"
    GARP = "garp"


@dataclass(frozen=True, slots=True)
class ClaimKey:
    havip_id: str
    instance_id: str
    tenant_id: str


@dataclass(slots=True)
class _Claim:
    kind: ClaimKind
    priority: int
    interval: float  # seconds between adverts (VRRP); the hold (GARP)
    last_seen: float  # monotonic
    seen_at: datetime  # wall clock of the last frame
    lapsed: bool = False

    def lapses_at(self) -> float:
        if self.kind is ClaimKind.GARP:
            return self.last_seen + GARP_HOLD_SECONDS
        skew = (256 - self.priority) / 256 * self.interval
        return self.last_seen + 3 * self.interval + skew


@dataclass(frozen=True, slots=True)
class Observed:
    """A state change to publish: the observer's report for one instance and HAVIP."""

    key: ClaimKey
    state: VrrpState
    priority: int
    seen_at: datetime
    # None: the observer's standing lease (renewed with the others); 0: no longer known to be live.
    lease_seconds: float | None
    why: str


@dataclass(frozen=True, slots=True)
class LiveClaim:
    key: ClaimKey
    priority: int
    seen_at: datetime


class ClaimBook:
    def __init__(self) -> None:
        self._claims: dict[ClaimKey, _Claim] = {}
        # The last priority each instance advertised for each HAVIP: what its GARPs claim with.
        self._priorities: dict[tuple[str, str], int] = {}
        self._resigned: set[ClaimKey] = set()

    def advert(self, key: ClaimKey, priority: int, interval: float, now: float, at: datetime) -> Observed | None:
        """An advert listing the HAVIP's address arrived from the instance; the change to publish, if any."""
        if priority == 0:
            self._claims.pop(key, None)
            if key in self._resigned:
                return None  # keepalived repeats its resignation; once is enough
            self._resigned.add(key)
            return Observed(key, VrrpState.STOP, 0, at, None, "advert with priority 0: the master resigned")
        self._resigned.discard(key)
        self._priorities[(key.havip_id, key.instance_id)] = priority
        claim = self._claims.get(key)
        if claim is not None and claim.kind is ClaimKind.VRRP and claim.priority == priority and not claim.lapsed:
            claim.last_seen, claim.seen_at, claim.interval = now, at, interval
            return None
        why = "adverts again" if claim is not None and claim.lapsed else "advertises"
        if claim is not None and not claim.lapsed and claim.priority != priority:
            why = f"advertises a new priority (was {claim.priority})"
        self._claims[key] = _Claim(ClaimKind.VRRP, priority, interval, now, at)
        return Observed(key, VrrpState.MASTER, priority, at, None, f"{why} with priority {priority}")

    def gratuitous_arp(self, key: ClaimKey, now: float, at: datetime) -> Observed | None:
        """A GARP for the HAVIP's address arrived from the instance; the change to publish, if any."""
        claim = self._claims.get(key)
        if claim is not None and not claim.lapsed:
            if claim.kind is ClaimKind.GARP:
                claim.last_seen, claim.seen_at = now, at
            return None
        priority = self._priorities.get((key.havip_id, key.instance_id), LOWEST_PRIORITY)
        self._resigned.discard(key)
        self._claims[key] = _Claim(ClaimKind.GARP, priority, GARP_HOLD_SECONDS, now, at)
        return Observed(
            key, VrrpState.MASTER, priority, at, GARP_HOLD_SECONDS, f"gratuitous ARP, claimed at priority {priority}"
        )

    def lapse(self, now: float, at: datetime) -> list[Observed]:
        """Claims whose adverts stopped: a lapse to publish for each VRRP claim; GARP claims just end.

        A lapse is the instance's word as of `at` (when the observer concluded it), so it is later
        than anything another source said while the adverts were still coming.
        """
        lapsed = []
        for key, claim in list(self._claims.items()):
            if claim.lapsed or now < claim.lapses_at():
                continue
            if claim.kind is ClaimKind.GARP:
                del self._claims[key]  # its lease at the mapping service ends it too
                continue
            claim.lapsed = True
            missed = now - claim.last_seen
            lapsed.append(
                Observed(
                    key,
                    VrrpState.MASTER,
                    claim.priority,
                    at,
                    0.0,
                    f"no advert for {missed:.1f} s (interval {claim.interval:g} s): the claim lapsed",
                )
            )
        return lapsed

    def next_lapse(self) -> float | None:
        """The monotonic moment the next claim lapses unless an advert comes first; None: no claim to lapse."""
        return min((claim.lapses_at() for claim in self._claims.values() if not claim.lapsed), default=None)

    def live_claims(self) -> list[LiveClaim]:
        """Every VRRP claim still advertised, to renew together."""
        return [
            LiveClaim(key, claim.priority, claim.seen_at)
            for key, claim in self._claims.items()
            if claim.kind is ClaimKind.VRRP and not claim.lapsed
        ]

    def forget(self, possible: Callable[[ClaimKey], bool]) -> None:
        """Drop what is known of claims no longer possible (detached, HAVIP deleted, port gone)."""
        for key in [key for key in self._claims if not possible(key)]:
            del self._claims[key]
        self._resigned = {key for key in self._resigned if possible(key)}
