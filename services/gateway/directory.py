"""The agent directory: what the gateway needs to take a VRRP report, held in memory.

It answers the two questions of the failover path, who holds this agent token
and is that instance attached to these HAVIPs of its tenant, without a database
round trip, so reports are still accepted while PostgreSQL is away.
`services.gateway.directory_sync` keeps it current; this module only decides.

How stale it may be (also in the README):
- While the replica can read PostgreSQL, a committed change (a token issued or
  revoked, an instance attached or detached, a HAVIP created) is honoured once
  its notification is re-read: milliseconds. A listening connection that stops
  answering is noticed within 2 s (a probe every second, a 1 s timeout), and a
  new one reloads the copy in full a second later, so no replica decides from a
  copy more than about 3 s (plus the reload) behind a database it can read.
- A token revoked through this replica is refused here at once, whatever the copy.
- While PostgreSQL is away nothing can change in it, so the copy stays right; a
  replica cut off alone keeps deciding from its copy for at most `TRUSTED_FOR`
  (10 minutes) after it was last known current, then answers 503 like a miss.

Only answers it holds are decided here. A miss (a token or an attachment too new
for the copy) is asked of the database once; during an outage it answers 503
with Retry-After, because it cannot be decided. Tenant tokens are not held: a
tenant call needs the database anyway, and looking its token up per request
keeps its revocation and its request rate exact on every replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace

from services.gateway.tokens import Principal
from services.readmodel.reporters import ReporterStanding

# A copy last known current longer ago than this is not trusted (see above).
TRUSTED_FOR = 600.0
# Known current within this: the replica is reading the database, so a miss is worth asking it.
FOLLOWING_WITHIN = 3.0


class AgentDirectory:
    """Agent tokens by SHA-256, the tenant of each HAVIP and the HAVIPs each instance is attached to."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        trusted_for: float = TRUSTED_FOR,
        following_within: float = FOLLOWING_WITHIN,
    ) -> None:
        self._clock = clock
        self._trusted_for = trusted_for
        self._following_within = following_within
        self._principals: dict[str, Principal] = {}
        self._hash_of: dict[str, str] = {}  # token_id -> sha256
        # Revoked through this replica. A revocation is permanent, so a read that began before it
        # committed must never bring the token back.
        self._revoked: set[str] = set()
        self._tenant_of: dict[str, str] = {}  # havip_id -> tenant_id
        self._attached: dict[str, frozenset[str]] = {}  # instance_id -> havip_ids
        self._epoch = 0
        self._current_as_of: float | None = None
        self._lost = False

    # --- decisions ---------------------------------------------------------------------------------

    def principal(self, token_sha256: str) -> Principal | None:
        """The agent holding this token, or None: unknown here (ask the database), or the copy is too old."""
        if not self.trusted:
            return None
        return self._principals.get(token_sha256)

    def standing(
        self, tenant_id: str, instance_id: str, havip_ids: Iterable[str]
    ) -> dict[str, ReporterStanding] | None:
        """Each HAVIP's answer from the copy; None when the copy is too old to decide anything.

        Another tenant's HAVIP is UNKNOWN_HAVIP exactly like one that does not exist.
        """
        if not self.trusted:
            return None
        attached = self._attached.get(instance_id, frozenset())
        answers = {}
        for havip_id in havip_ids:
            if self._tenant_of.get(havip_id) != tenant_id:
                answers[havip_id] = ReporterStanding.UNKNOWN_HAVIP
            elif havip_id in attached:
                answers[havip_id] = ReporterStanding.ATTACHED
            else:
                answers[havip_id] = ReporterStanding.NOT_ATTACHED
        return answers

    @property
    def age(self) -> float | None:
        """Seconds since the copy was last known current; None before the first load."""
        return None if self._current_as_of is None else max(0.0, self._clock() - self._current_as_of)

    @property
    def trusted(self) -> bool:
        age = self.age
        return age is not None and age <= self._trusted_for

    @property
    def following(self) -> bool:
        """Known current a moment ago: the database answers, so a miss may ask it."""
        age = self.age
        return not self._lost and age is not None and age <= self._following_within

    @property
    def epoch(self) -> int:
        """Moves with every change applied; `learn_*` ignore what was read before a change."""
        return self._epoch

    def now(self) -> float:
        return self._clock()

    # --- keeping it current ----------------------------------------------------------------------

    def confirm(self, as_of: float) -> None:
        """Everything committed before `as_of` (a `now()` reading) is in the copy."""
        self._lost = False
        if self._current_as_of is None or as_of > self._current_as_of:
            self._current_as_of = as_of

    def lose(self) -> None:
        """The connection that keeps it current failed: not following until the next `confirm`."""
        self._lost = True

    def replace(
        self,
        principals: Mapping[str, Principal],
        tenant_of: Mapping[str, str],
        attached: Mapping[str, Collection[str]],
    ) -> None:
        """A full load: the whole copy at once."""
        self._principals = {}
        self._hash_of = {}
        for token_sha256, principal in principals.items():
            self._put_principal(token_sha256, principal)
        self._tenant_of = dict(tenant_of)
        self._attached = {instance: frozenset(havips) for instance, havips in attached.items() if havips}
        self._epoch += 1

    def update_tokens(self, token_ids: Iterable[str], found: Mapping[str, tuple[str, Principal]]) -> None:
        """Re-read tokens: `found` maps each live one of `token_ids` to (sha256, principal); the rest are gone."""
        for token_id in token_ids:
            previous = self._hash_of.pop(token_id, None)
            if previous is not None:
                self._principals.pop(previous, None)
        for token_sha256, principal in found.values():
            self._put_principal(token_sha256, principal)
        self._epoch += 1

    def update_attachments(self, instance_ids: Iterable[str], found: Mapping[str, Collection[str]]) -> None:
        """Re-read instances: `found` maps each to the HAVIPs it is attached to now (absent: none)."""
        for instance_id in instance_ids:
            havips = frozenset(found.get(instance_id, ()))
            if havips:
                self._attached[instance_id] = havips
            else:
                self._attached.pop(instance_id, None)
        self._epoch += 1

    def update_havips(self, havip_ids: Iterable[str], found: Mapping[str, str]) -> None:
        """Re-read HAVIPs: `found` maps each existing one to its tenant."""
        for havip_id in havip_ids:
            tenant_id = found.get(havip_id)
            if tenant_id is None:
                self._tenant_of.pop(havip_id, None)
            else:
                self._tenant_of[havip_id] = tenant_id
        self._epoch += 1

    def forget_token(self, token_id: str) -> None:
        """Revoked through this replica: refused from the next request on."""
        self._revoked.add(token_id)
        previous = self._hash_of.pop(token_id, None)
        if previous is not None:
            self._principals.pop(previous, None)
        self._epoch += 1

    def learn_token(self, token_sha256: str, principal: Principal, *, read_at_epoch: int) -> None:
        """A miss the database answered. Ignored if anything changed since the read began: the
        notification of a revocation may have been applied after it, and the change's own
        notification brings the token in anyway."""
        if principal.kind == "agent" and read_at_epoch == self._epoch:
            self._put_principal(token_sha256, principal)

    def learn_attachment(self, tenant_id: str, instance_id: str, havip_id: str, *, read_at_epoch: int) -> None:
        """An attachment the database confirmed; ignored if anything changed since (as `learn_token`)."""
        if read_at_epoch != self._epoch:
            return
        self._tenant_of[havip_id] = tenant_id
        self._attached[instance_id] = self._attached.get(instance_id, frozenset()) | {havip_id}

    def _put_principal(self, token_sha256: str, principal: Principal) -> None:
        if principal.token_id in self._revoked:
            return
        # Agents share the gateway's agent rate; a tenant's own rate is for its tenant tokens.
        self._principals[token_sha256] = replace(principal, requests_per_second=None)
        self._hash_of[principal.token_id] = token_sha256

    def size(self) -> dict[str, int]:
        return {"agent_tokens": len(self._principals), "havips": len(self._tenant_of), "instances": len(self._attached)}
