"""A VRRP report on the wire from an agent to the gateway: the body of `POST /v1/vrrp-events`.

The gateway parses it (services/gateway/models.py, intake.py); the agent's
reports (services/agent/reports.py, `VrrpReport.wire`) are sent in its shape.
It lives here, with pydantic alone, so the agent can name it without the
gateway's web framework or database client.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.messages import MAX_LEASE_SECONDS, Id, VrrpState

# The largest seq the API documents: the largest integer a JSON number holds exactly (2^53 - 1, about
# the year 2255 in microseconds), rather than the messages' int64 MAX_SEQ, which a client's doubles
# round to 2^63 (out of range). Either is far above what _not_far_ahead lets through today.
MAX_REQUEST_SEQ = 2**53 - 1


# One report as `POST /v1/vrrp-events` takes it, alone or as an item of `{"reports": [...]}`. (A comment,
# not a docstring: that would become the schema's description and change the published document.)
class VrrpEventRequest(BaseModel):
    # A typo in a field name must be a 400, not a silently ignored option.
    model_config = ConfigDict(extra="forbid")

    havip_id: Id
    state: VrrpState
    priority: int = Field(ge=0, le=255)
    seq: int = Field(
        ge=0,
        le=MAX_REQUEST_SEQ,
        description="Grows with every report of this instance: a counter, or microseconds since the epoch"
        " (at most one day ahead of the gateway's clock).",
    )
    reported_at: datetime | None = None
    lease_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_LEASE_SECONDS,
        description="A MASTER claim stays live this long unless renewed; null: until another state is reported.",
    )

    @field_validator("reported_at")
    @classmethod
    def _naive_means_utc(cls, value: datetime | None) -> datetime | None:
        # Agents on instances with a naive clock string still mean UTC; a
        # report must never be compared across offsets by accident.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value
