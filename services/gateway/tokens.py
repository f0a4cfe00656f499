"""API tokens: tenants act on their HAVIPs; an agent token speaks for one instance.

Only a SHA-256 of each token is stored, so a database dump leaks no credential.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

import asyncpg


@dataclass(frozen=True)
class Principal:
    kind: Literal["tenant", "agent"]
    tenant_id: str
    instance_id: str | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(24)}"


async def store_token(conn: asyncpg.Connection | asyncpg.Pool, token: str, principal: Principal) -> None:
    await conn.execute(
        "INSERT INTO api_tokens (token_sha256, kind, tenant_id, instance_id) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (token_sha256) DO NOTHING",
        hash_token(token),
        principal.kind,
        principal.tenant_id,
        principal.instance_id,
    )


async def find_principal(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> Principal | None:
    row = await conn.fetchrow(
        "SELECT kind, tenant_id, instance_id FROM api_tokens WHERE token_sha256 = $1", hash_token(token)
    )
    if row is None:
        return None
    return Principal(kind=row["kind"], tenant_id=row["tenant_id"], instance_id=row["instance_id"])
