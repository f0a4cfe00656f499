"""The route table: every HAVIP's latest published state, indexed for lookups.

Pure and synchronous: the follower feeds it records, the HTTP API reads it.
A lookup is one dict hit on a pre-built answer, because it sits on the data
plane's hot path. All the work (ordering by version, moving index entries
when an address changes) happens on `apply`, which is off that path.

Ordering: `havip.mappings` carries the full state of a HAVIP with a version,
so a record replaces what the table holds only when its version is newer.
That makes replays, redeliveries and the snapshot/stream overlap at start-up
harmless. A `Deleted` HAVIP leaves the indexes but its version is kept, so a
late, older record cannot bring it back.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.ipv4 import parse_ipv4
from schemas.messages import HaVipMappingChanged, HaVipStatus, Route

PrivateKey = tuple[str, str]  # (vpc_id, canonical IPv4 text)


@dataclass(frozen=True, slots=True)
class RouteAnswer:
    """Who receives traffic for an address; `owner` is None when traffic is dropped."""

    havip_id: str
    version: int
    owner: Route | None


@dataclass(frozen=True, slots=True)
class _Held:
    mapping: HaVipMappingChanged
    private_key: PrivateKey
    public_keys: tuple[str, ...]


def canonical_ip(text: str) -> str:
    """The one textual form of an address, so '10.0.0.5' is found however it was written.

    Raises HaVipError for anything that is not an IPv4 address.
    """
    return str(parse_ipv4(text))


class RouteTable:
    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}
        # Every HAVIP ever applied, deleted ones included: the ordering guard.
        self._versions: dict[str, int] = {}
        self._by_private: dict[PrivateKey, RouteAnswer] = {}
        self._by_public: dict[str, RouteAnswer] = {}

    def apply(self, mapping: HaVipMappingChanged) -> bool:
        """Take `mapping` if it is newer than what the table holds; True when it changed something.

        Raises HaVipError (and changes nothing) when an address is not an IPv4 address.
        """
        known = self._versions.get(mapping.havip_id)
        if known is not None and mapping.version <= known:
            return False
        private_key = (mapping.vpc_id, canonical_ip(mapping.ip_address))
        public_keys = tuple(canonical_ip(eip.ip_address) for eip in mapping.eips)

        self._unindex(mapping.havip_id)
        self._versions[mapping.havip_id] = mapping.version
        if mapping.status is HaVipStatus.DELETED:
            return True

        answer = RouteAnswer(havip_id=mapping.havip_id, version=mapping.version, owner=mapping.owner)
        self._held[mapping.havip_id] = _Held(mapping, private_key, public_keys)
        # The mapping service never gives one address to two live HAVIPs; during a
        # transient overlap (a delete and a create on different partitions) the
        # record applied last wins, and `_unindex` never removes another HAVIP's entry.
        self._by_private[private_key] = answer
        # The same answer object: an EIP follows every failover in the very update the private address does.
        for public_key in public_keys:
            self._by_public[public_key] = answer
        return True

    def lookup(self, vpc_id: str, ip: str) -> RouteAnswer | None:
        """`ip` must be in canonical form (see `canonical_ip`)."""
        return self._by_private.get((vpc_id, ip))

    def lookup_public(self, ip: str) -> RouteAnswer | None:
        """`ip` must be in canonical form (see `canonical_ip`)."""
        return self._by_public.get(ip)

    def get(self, havip_id: str) -> HaVipMappingChanged | None:
        """The latest state of a live HAVIP."""
        held = self._held.get(havip_id)
        return held.mapping if held is not None else None

    def version_of(self, havip_id: str) -> int | None:
        """The newest version applied, also for a deleted HAVIP."""
        return self._versions.get(havip_id)

    def __len__(self) -> int:
        return len(self._held)

    def _unindex(self, havip_id: str) -> None:
        held = self._held.pop(havip_id, None)
        if held is None:
            return
        if (current := self._by_private.get(held.private_key)) and current.havip_id == havip_id:
            del self._by_private[held.private_key]
        for public_key in held.public_keys:
            if (current := self._by_public.get(public_key)) and current.havip_id == havip_id:
                del self._by_public[public_key]
