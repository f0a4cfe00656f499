"""What the client prints: pure functions from the gateway's JSON to text, no I/O.

`--output json` is the server's JSON as it came, indented; `--output table`
is aligned columns for people. Tables show "-" for an absent value so that
columns stay countable with `awk`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

EMPTY = "-"
# A tenant chose the name and description: control characters in them must not
# move the cursor or recolour the terminal of whoever lists the HAVIPs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def to_json(data: Any) -> str:
    """Indented JSON, keys in the server's order, non-ASCII kept readable."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def cell(value: Any) -> str:
    """One table cell: "-" for nothing, control characters made visible."""
    if value is None or value == "" or value == []:
        return EMPTY
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    lines = [list(headers), *([cell(v) for v in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def key_values(pairs: Sequence[tuple[str, Any]]) -> str:
    """`KEY: value` lines with the values aligned."""
    width = max((len(key) for key, _ in pairs), default=0) + 1
    return "\n".join(f"{key + ':':<{width}} {cell(value)}" for key, value in pairs)


def eip_addresses(havip: dict[str, Any]) -> str:
    """The HAVIP's public addresses, comma separated."""
    eips = havip.get("eips")
    if eips:
        return ",".join(str(eip.get("ip_address") or eip.get("eip_id")) for eip in eips)
    # Gateways before the `eips` list answered one `eip_address`.
    return havip.get("eip_address") or ""


def _owner_instance(havip: dict[str, Any]) -> str | None:
    owner = havip.get("owner")
    return owner.get("instance_id") if owner else None


def havip_list(havips: Sequence[dict[str, Any]]) -> str:
    """`havips list`: one HAVIP per line."""
    headers = ("ID", "IP", "VSWITCH", "STATUS", "OWNER", "EIPS", "NAME")
    rows = [
        (
            h.get("havip_id"),
            h.get("ip_address"),
            h.get("vswitch_id"),
            h.get("status"),
            _owner_instance(h),
            eip_addresses(h),
            h.get("name"),
        )
        for h in havips
    ]
    return table(headers, rows)


def havip_detail(havip: dict[str, Any]) -> str:
    """`havips show`: key/value lines, then the attachments table."""
    owner = havip.get("owner")
    owner_text = None
    if owner:
        where = ", ".join(str(v) for v in (owner.get("eni_id"), owner.get("private_ip"), owner.get("host_id")) if v)
        owner_text = f"{owner.get('instance_id')} ({where})" if where else owner.get("instance_id")
    pairs = [
        ("ID", havip.get("havip_id")),
        ("IP", havip.get("ip_address")),
        ("STATUS", havip.get("status")),
        ("VPC", havip.get("vpc_id")),
        ("VSWITCH", havip.get("vswitch_id")),
        ("NAME", havip.get("name")),
        ("DESCRIPTION", havip.get("description")),
        ("OWNER", owner_text),
        ("EIPS", _eip_detail(havip)),
        ("VERSION", havip.get("version")),
        ("CREATED_AT", havip.get("created_at")),
    ]
    attachments = havip.get("attachments") or []
    if not attachments:
        return key_values(pairs) + "\n\nno attachments"
    rows = []
    for a in attachments:
        vrrp = a.get("vrrp") or {}
        rows.append(
            (
                a.get("target_id"),
                a.get("instance_id"),
                a.get("eni_id"),
                vrrp.get("state"),
                vrrp.get("priority"),
                vrrp.get("reported_at"),
            )
        )
    attached = table(("TARGET", "INSTANCE", "ENI", "VRRP_STATE", "PRIORITY", "REPORTED_AT"), rows)
    return f"{key_values(pairs)}\n\nATTACHMENTS\n{attached}"


def _eip_detail(havip: dict[str, Any]) -> str:
    eips = havip.get("eips")
    if eips:
        return ", ".join(f"{eip.get('eip_id')} ({eip.get('ip_address')})" for eip in eips)
    return havip.get("eip_address") or ""


def owner_history(changes: Sequence[dict[str, Any]]) -> str:
    """`havips history`: one owner change per line, newest first as the gateway sends them."""
    rows = [
        (c.get("version"), c.get("changed_at"), c.get("previous_instance_id"), c.get("instance_id"), c.get("cause"))
        for c in changes
    ]
    return table(("VERSION", "CHANGED_AT", "FROM", "TO", "CAUSE"), rows)


def operation_detail(operation: dict[str, Any]) -> str:
    """One operation as key/value lines; the error only when there is one."""
    pairs: list[tuple[str, Any]] = [
        ("OPERATION", operation.get("operation_id")),
        ("KIND", operation.get("kind")),
        ("HAVIP", operation.get("havip_id")),
        ("STATUS", operation.get("status")),
    ]
    error = operation.get("error")
    if error:
        pairs.append(("ERROR", f"{error.get('code')}: {error.get('message')}"))
    pairs += [("CREATED_AT", operation.get("created_at")), ("UPDATED_AT", operation.get("updated_at"))]
    return key_values(pairs)


def operation_failure(operation: dict[str, Any]) -> str:
    """The stderr line of a Failed operation."""
    error = operation.get("error") or {}
    code = error.get("code", "Unknown")
    message = error.get("message", "the operation failed")
    return f"error: {code}: {message} (operation {operation.get('operation_id')})"
