"""The route table: every HAVIP's latest published state, indexed for lookups.

Pure and synchronous: the follower feeds it states, the HTTP API reads it.
A lookup is one dict hit on an answer already encoded as JSON bytes, because
it sits on the data plane's hot path. All the work (ordering by version,
moving index entries when an address changes, encoding the answer) happens
on `apply`, which is off that path.

Compact on purpose: a forwarder holds every HAVIP of the cloud, so per HAVIP
it keeps one small `HeldRoute` (what lookups, the watch stream and ordering
need), not the whole published message.

Ordering: `havip.mappings` carries the full state of a HAVIP with a version,
so a state replaces what the table holds only when its version is newer.
That makes replays, redeliveries and the snapshot/stream overlap at start-up
harmless. A `Deleted` HAVIP leaves the indexes but its version is kept, so a
late, older record cannot bring it back.

Every change bumps the table's `revision`, a position in this process's
sequence of changes; with the table's `epoch` (new in every process) it is
what a watcher resumes from (services/forwarder/watch.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import NamedTuple

from schemas.ipv4 import is_ipv4_text, parse_ipv4
from schemas.messages import HaVipMappingChanged, HaVipStatus, Route

PrivateKey = tuple[str, str]  # (vpc_id, canonical IPv4 text)

# The C string encoder json.dumps uses; without ensure_ascii, as Starlette's JSONResponse encodes.
_quote: Callable[[str], str] = json.encoder.encode_basestring


class RouteState(NamedTuple):
    """A HAVIP's published state, reduced to what the forwarder needs (a row of the snapshot or a record)."""

    havip_id: str
    version: int
    vpc_id: str
    ip: str
    eips: tuple[str, ...]
    deleted: bool
    instance_id: str | None = None
    eni_id: str | None = None
    private_ip: str | None = None
    host_id: str | None = None

    @classmethod
    def of(cls, mapping: HaVipMappingChanged) -> RouteState:
        owner = mapping.owner
        return cls(
            mapping.havip_id,
            mapping.version,
            mapping.vpc_id,
            mapping.ip_address,
            tuple(eip.ip_address for eip in mapping.eips),
            mapping.status is HaVipStatus.DELETED,
            owner.instance_id if owner else None,
            owner.eni_id if owner else None,
            owner.private_ip if owner else None,
            owner.host_id if owner else None,
        )


class HeldRoute:
    """One live HAVIP in the table. Never changed once built: a newer version gets a new one,
    so a reader (a batch, a watcher sending a snapshot) may keep it across an await."""

    __slots__ = ("havip_id", "version", "private_key", "eips", "host_id", "answer")

    def __init__(
        self, havip_id: str, version: int, private_key: PrivateKey, eips: tuple[str, ...], host_id: str | None
    ) -> None:
        self.havip_id = havip_id
        self.version = version
        self.private_key = private_key
        self.eips = eips
        self.host_id = host_id  # the owner's host, or None when traffic is dropped
        self.answer = b""  # the lookup's JSON answer: {havip_id, version, instance_id, eni_id, private_ip, host_id}

    @property
    def vpc_id(self) -> str:
        return self.private_key[0]

    @property
    def ip(self) -> str:
        return self.private_key[1]

    @property
    def owner(self) -> Route | None:
        """Who receives the traffic, decoded from the answer (for tests and tools; lookups send the bytes)."""
        fields = json.loads(self.answer)
        if fields["instance_id"] is None:
            return None
        return Route(**{name: fields[name] for name in ("instance_id", "eni_id", "private_ip", "host_id")})

    def __repr__(self) -> str:
        return f"HeldRoute({self.answer.decode()})"


class RouteChange(NamedTuple):
    """One applied change, for watchers: the route now (None when deleted) and where it was before."""

    revision: int
    havip_id: str
    version: int
    route: HeldRoute | None
    previous: HeldRoute | None


def canonical_ip(text: str) -> str:
    """The one textual form of an address, so '10.0.0.5' is found however it was written.

    Raises HaVipError for anything that is not an IPv4 address.
    """
    if is_ipv4_text(text):  # the pattern admits only the canonical form
        return text
    return str(parse_ipv4(text))  # raises: the two accept the same texts (tests/unit/test_ipv4.py)


class RouteTable:
    def __init__(self) -> None:
        self._held: dict[str, HeldRoute] = {}
        # The versions of deleted HAVIPs: the ordering guard for what is no longer held.
        self._deleted: dict[str, int] = {}
        self._by_private: dict[PrivateKey, HeldRoute] = {}
        self._by_public: dict[str, HeldRoute] = {}
        # The indexes' own lookups, for a caller that looks up many keys in a row (a batch):
        # `lookup` and `lookup_public` without the call in between. Keys in canonical form.
        self.by_private: Callable[[PrivateKey], HeldRoute | None] = self._by_private.get
        self.by_public: Callable[[str], HeldRoute | None] = self._by_public.get
        self.epoch = uuid.uuid4().hex
        self.revision = 0
        # Told of every change, after it is applied (the watch hub).
        self.on_change: Callable[[RouteChange], None] | None = None

    def apply(self, mapping: HaVipMappingChanged) -> bool:
        """Take a published record; see `apply_state`."""
        return self.apply_state(RouteState.of(mapping))

    def apply_state(self, state: RouteState) -> bool:
        """Take `state` if it is newer than what the table holds; True when it changed something.

        Raises HaVipError (and changes nothing) when an address is not an IPv4 address.
        """
        havip_id = state.havip_id
        previous = self._held.get(havip_id)
        known = previous.version if previous is not None else self._deleted.get(havip_id)
        if known is not None and state.version <= known:
            return False
        private_key = (state.vpc_id, canonical_ip(state.ip))
        eips = tuple(canonical_ip(eip) for eip in state.eips)

        if previous is not None:
            self._unindex(previous)
        if state.deleted:
            self._deleted[havip_id] = state.version
            route = None
        else:
            self._deleted.pop(havip_id, None)
            owned = state.instance_id is not None and state.private_ip is not None and state.host_id is not None
            route = HeldRoute(havip_id, state.version, private_key, eips, state.host_id if owned else None)
            route.answer = _encode_answer(state, owned)
            self._held[havip_id] = route
            # The mapping service never gives one address to two live HAVIPs; during a
            # transient overlap (a delete and a create on different partitions) the
            # state applied last wins, and `_unindex` never removes another HAVIP's entry.
            self._by_private[private_key] = route
            # The same object: an EIP follows every failover in the very update the private address does.
            for eip in eips:
                self._by_public[eip] = route
        self.revision += 1
        if self.on_change is not None:
            self.on_change(RouteChange(self.revision, havip_id, state.version, route, previous))
        return True

    def lookup(self, vpc_id: str, ip: str) -> HeldRoute | None:
        """`ip` must be in canonical form (see `canonical_ip`)."""
        return self._by_private.get((vpc_id, ip))

    def lookup_public(self, ip: str) -> HeldRoute | None:
        """`ip` must be in canonical form (see `canonical_ip`)."""
        return self._by_public.get(ip)

    def get(self, havip_id: str) -> HeldRoute | None:
        """The route of a live HAVIP."""
        return self._held.get(havip_id)

    def routes(self) -> list[HeldRoute]:
        """Every live route, as of now: a consistent copy, since routes are never changed in place."""
        return list(self._held.values())

    def version_of(self, havip_id: str) -> int | None:
        """The newest version applied, also for a deleted HAVIP."""
        held = self._held.get(havip_id)
        return held.version if held is not None else self._deleted.get(havip_id)

    def __len__(self) -> int:
        return len(self._held)

    def _unindex(self, held: HeldRoute) -> None:
        del self._held[held.havip_id]
        if self._by_private.get(held.private_key) is held:
            del self._by_private[held.private_key]
        for eip in held.eips:
            if self._by_public.get(eip) is held:
                del self._by_public[eip]


def _encode_answer(state: RouteState, owned: bool) -> bytes:
    # The same bytes FastAPI's JSONResponse made of the dict, field for field, built without the dict.
    if not owned:
        owner = '"instance_id":null,"eni_id":null,"private_ip":null,"host_id":null'
    else:
        assert state.instance_id is not None and state.private_ip is not None and state.host_id is not None
        eni = "null" if state.eni_id is None else _quote(state.eni_id)
        owner = (
            f'"instance_id":{_quote(state.instance_id)},"eni_id":{eni},'
            f'"private_ip":{_quote(state.private_ip)},"host_id":{_quote(state.host_id)}'
        )
    return f'{{"havip_id":{_quote(state.havip_id)},"version":{state.version},{owner}}}'.encode()
