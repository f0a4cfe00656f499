"""API tokens: tenants act on their HAVIPs; an agent token speaks for one instance.

Only a SHA-256 of each token is stored, so a database dump leaks no credential.
Each token also has a public `token_id` (`tok-...`) by which it is listed and
revoked; the secret itself is shown once, when it is issued.

A tenant token is looked up here on every request (one indexed query, joined
with the tenant's request rate): revoked, it answers 401 on the very next
request, on every gateway replica. Agent tokens are held in each replica's
agent directory (`services.gateway.directory`), so a VRRP report needs no
database round trip: revoked, an agent token answers 401 on the very next
request on the replica that revoked it, and on the others once the database's
notification reaches them (milliseconds; about 3 s at worst while they can read
the database; see that module for a replica cut off from it).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg

TokenKind = Literal["tenant", "agent"]

# How a secret starts, so a leaked one is recognisable (secret scanners, logs).
_SECRET_PREFIX: dict[str, str] = {"tenant": "hvt", "agent": "hva"}


@dataclass(frozen=True)
class Principal:
    kind: TokenKind
    tenant_id: str
    instance_id: str | None = None
    token_id: str = ""
    # The tenant's own rate; None: the gateway's default for its kind.
    requests_per_second: float | None = None


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token: never its secret nor its hash."""

    token_id: str
    kind: TokenKind
    tenant_id: str
    instance_id: str | None
    description: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedToken:
    token: str  # the secret: shown once, never stored
    info: TokenInfo


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(24)}"


def new_token_id() -> str:
    return f"tok-{secrets.token_hex(10)}"


_INFO_COLUMNS = "token_id, kind, tenant_id, instance_id, description, created_at, revoked_at"


def _info(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(**{key: row[key] for key in _INFO_COLUMNS.split(", ")})


async def store_token(
    conn: asyncpg.Connection | asyncpg.Pool, token: str, principal: Principal, description: str = ""
) -> str:
    """Store a token chosen by the caller (dev seeds, tests); storing it again changes nothing.

    Answers the token's public id (the one it already had, if stored before).
    """
    token_id = principal.token_id or new_token_id()
    stored = await conn.fetchval(
        "INSERT INTO api_tokens (token_sha256, token_id, kind, tenant_id, instance_id, description)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token_sha256) DO NOTHING RETURNING token_id",
        hash_token(token),
        token_id,
        principal.kind,
        principal.tenant_id,
        principal.instance_id,
        description,
    )
    if stored is None:
        stored = await conn.fetchval("SELECT token_id FROM api_tokens WHERE token_sha256 = $1", hash_token(token))
    return str(stored)


async def issue_token(
    conn: asyncpg.Connection | asyncpg.Pool,
    kind: TokenKind,
    tenant_id: str,
    instance_id: str | None = None,
    description: str = "",
) -> IssuedToken:
    """A new random token; the answer is the only place its secret ever appears."""
    if (kind == "agent") != (instance_id is not None):
        raise ValueError("an agent token names exactly one instance; a tenant token none")
    token = new_token(_SECRET_PREFIX[kind])
    row = await conn.fetchrow(
        "INSERT INTO api_tokens (token_sha256, token_id, kind, tenant_id, instance_id, description)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_INFO_COLUMNS}",
        hash_token(token),
        new_token_id(),
        kind,
        tenant_id,
        instance_id,
        description,
    )
    assert row is not None
    return IssuedToken(token=token, info=_info(row))


async def list_tokens(
    db: asyncpg.Connection | asyncpg.Pool, tenant_id: str, *, instance_id: str | None = None
) -> list[TokenInfo]:
    """A tenant's tokens (all kinds), or only the agent tokens of one of its instances; oldest first."""
    rows = await db.fetch(
        f"SELECT {_INFO_COLUMNS} FROM api_tokens WHERE tenant_id = $1 AND ($2::text IS NULL OR instance_id = $2)"
        " ORDER BY created_at, token_id",
        tenant_id,
        instance_id,
    )
    return [_info(row) for row in rows]


async def revoke_token(
    db: asyncpg.Connection | asyncpg.Pool,
    token_id: str,
    *,
    tenant_id: str | None = None,
    instance_id: str | None = None,
) -> TokenInfo | None:
    """Revoke a token, within a scope when given; revoking a revoked token keeps its first revocation time.

    None: no such token in that scope (unknown, another tenant's or another instance's).
    """
    row = await db.fetchrow(
        "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())"
        " WHERE token_id = $1 AND ($2::text IS NULL OR tenant_id = $2) AND ($3::text IS NULL OR instance_id = $3)"
        f" RETURNING {_INFO_COLUMNS}",
        token_id,
        tenant_id,
        instance_id,
    )
    return None if row is None else _info(row)


async def find_principal(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> Principal | None:
    """Who holds this token; None for an unknown or revoked one. A tenant without a `tenants` row
    (seeded before tenants existed) gets the default rate."""
    row = await conn.fetchrow(
        "SELECT t.kind, t.tenant_id, t.instance_id, t.token_id, n.requests_per_second"
        " FROM api_tokens t LEFT JOIN tenants n ON n.tenant_id = t.tenant_id"
        " WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL",
        hash_token(token),
    )
    if row is None:
        return None
    return Principal(
        kind=row["kind"],
        tenant_id=row["tenant_id"],
        instance_id=row["instance_id"],
        token_id=row["token_id"],
        requests_per_second=row["requests_per_second"],
    )


async def agent_principals(
    db: asyncpg.Connection | asyncpg.Pool, token_ids: Sequence[str] | None = None
) -> dict[str, tuple[str, Principal]]:
    """The live agent tokens (of these ids, or all) for the agent directory: token_id -> (sha256, principal)."""
    live = (
        "SELECT token_sha256, token_id, tenant_id, instance_id FROM api_tokens"
        " WHERE kind = 'agent' AND revoked_at IS NULL"
    )
    if token_ids is None:
        rows = await db.fetch(live)
    else:
        rows = await db.fetch(f"{live} AND token_id = ANY($1::text[])", list(token_ids))
    return {
        row["token_id"]: (
            row["token_sha256"],
            Principal("agent", row["tenant_id"], row["instance_id"], token_id=row["token_id"]),
        )
        for row in rows
    }
