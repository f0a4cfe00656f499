"""The ids the gateway makes up: a tenant sees them in every answer and uses them in every call."""

from __future__ import annotations

import secrets
import uuid


def new_havip_id() -> str:
    return f"havip-{secrets.token_hex(8)}"


def new_operation_id() -> str:
    # Also the command's id, so every result on `havip.command-results` finds its operation.
    return f"op-{uuid.uuid4().hex}"
