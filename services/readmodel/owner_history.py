"""Every owner change of a HAVIP with its cause, newest first (`GET /v1/havips/{id}/owner-history`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class OwnerChangeRecord:
    id: int
    version: int
    previous_instance_id: str | None
    instance_id: str | None
    cause: str
    detail: str
    trigger: dict[str, Any]
    changed_at: datetime


async def owner_history(
    db: asyncpg.Pool | asyncpg.Connection, havip_id: str, *, before_id: int | None, limit: int
) -> list[OwnerChangeRecord]:
    """Newest first; `before_id` continues after the last change of the previous page (keyset paging)."""
    rows = await db.fetch(
        "SELECT id, version, previous_instance_id, instance_id, cause, detail, changed_at, trigger_kind,"
        " trigger_message_id, trigger_instance_id, trigger_seq, lease_expired_at"
        " FROM owner_changes WHERE havip_id = $1 AND ($2::bigint IS NULL OR id < $2)"
        " ORDER BY id DESC LIMIT $3",
        havip_id,
        before_id,
        limit,
    )
    return [
        OwnerChangeRecord(
            id=row["id"],
            version=row["version"],
            previous_instance_id=row["previous_instance_id"],
            instance_id=row["instance_id"],
            cause=row["cause"],
            detail=row["detail"],
            trigger=_trigger(row),
            changed_at=row["changed_at"],
        )
        for row in rows
    ]


def _trigger(row: asyncpg.Record) -> dict[str, Any]:
    trigger: dict[str, Any] = {"kind": row["trigger_kind"]}
    for column, name in (
        ("trigger_message_id", "message_id"),
        ("trigger_instance_id", "instance_id"),
        ("trigger_seq", "seq"),
        ("lease_expired_at", "lease_expired_at"),
    ):
        if row[column] is not None:
            trigger[name] = row[column]
    return trigger
