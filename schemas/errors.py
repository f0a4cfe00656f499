"""Every failure a tenant, an agent or an operator can see, in one place.

    HaVipError                        (code, HTTP status, message)
    ├── NotFound.HaVip / .Instance / .VSwitch / .Attachment / .Eip / .Operation / .Route / .Token   404
    ├── QuotaExceeded.HaVipAssociation / .InstanceHaVip / .HaVipEip / .HaVip   409
    ├── InvalidEip.InUse (another HAVIP holds it)                           409
    ├── InvalidIpAddress.Version / .Malformed / .OutOfRange / .Reserved     400
    ├── InvalidIpAddress.InUse / InvalidVSwitch.Mismatch                    409
    ├── IncorrectInstanceStatus / IncorrectHaVipStatus                      409
    ├── DependencyViolation.HaVip / IdempotentParameterMismatch             409
    ├── InvalidParameter                                                    400
    ├── Unauthorized / Forbidden                                            401 / 403
    ├── NotFound / MethodNotAllowed (no such route or method)               404 / 405
    ├── PayloadTooLarge                                                     413
    ├── Throttling (a token's request rate; with Retry-After)               429
    ├── ServiceUnavailable (with Retry-After)                               503
    ├── InternalError (a bug; logged, never a stack trace)                  500
    └── Unappliable: a record a consumer dead-letters (VrrpReport.NotAttached, ApplyFailed, ...)

    InventoryMiss: quota's inventory copy lacks a resource a command names (wait, then ask again)
    SchemaOutOfDate: a service started against a database `havip migrate` has not brought up to date

The same codes travel in `havip.command-results` (a rejected command) and as
dead-letter reasons, so an operator reading a dead letter and a tenant
reading an operation see the same words.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    NOT_FOUND_HAVIP = "NotFound.HaVip"
    NOT_FOUND_INSTANCE = "NotFound.Instance"
    NOT_FOUND_VSWITCH = "NotFound.VSwitch"
    NOT_FOUND_ATTACHMENT = "NotFound.Attachment"
    NOT_FOUND_OPERATION = "NotFound.Operation"
    NOT_FOUND_ROUTE = "NotFound.Route"
    NOT_FOUND_EIP = "NotFound.Eip"
    NOT_FOUND_TOKEN = "NotFound.Token"
    QUOTA_HAVIP = "QuotaExceeded.HaVip"
    EIP_IN_USE = "InvalidEip.InUse"
    QUOTA_HAVIP_ASSOCIATION = "QuotaExceeded.HaVipAssociation"
    QUOTA_INSTANCE_HAVIP = "QuotaExceeded.InstanceHaVip"
    QUOTA_HAVIP_EIP = "QuotaExceeded.HaVipEip"
    IP_VERSION = "InvalidIpAddress.Version"
    IP_MALFORMED = "InvalidIpAddress.Malformed"
    IP_OUT_OF_RANGE = "InvalidIpAddress.OutOfRange"
    IP_RESERVED = "InvalidIpAddress.Reserved"
    IP_IN_USE = "InvalidIpAddress.InUse"
    IP_EXHAUSTED = "InvalidIpAddress.Exhausted"
    VSWITCH_MISMATCH = "InvalidVSwitch.Mismatch"
    INSTANCE_STATUS = "IncorrectInstanceStatus"
    HAVIP_STATUS = "IncorrectHaVipStatus"
    DEPENDENCY_HAVIP = "DependencyViolation.HaVip"
    ALREADY_ATTACHED = "InvalidAssociation.Duplicate"
    IDEMPOTENT_MISMATCH = "IdempotentParameterMismatch"
    INVALID_PARAMETER = "InvalidParameter"
    UNAUTHORIZED = "Unauthorized"
    FORBIDDEN = "Forbidden"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"
    THROTTLED = "Throttling"
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"
    # what the HTTP layer itself answers
    NOT_FOUND = "NotFound"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    INTERNAL_ERROR = "InternalError"
    # dead-letter reasons
    MALFORMED_MESSAGE = "MalformedMessage"
    REPORTER_NOT_ATTACHED = "VrrpReport.NotAttached"
    SEQ_AHEAD = "VrrpReport.SeqAhead"
    UNKNOWN_HAVIP = "VrrpReport.UnknownHaVip"
    APPLY_FAILED = "ApplyFailed"
    # an observer saw a VRRP advert or gratuitous ARP for a HAVIP's address from an instance that may not claim it
    UNEXPECTED_CLAIMANT = "VrrpReport.UnexpectedClaimant"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.NOT_FOUND_HAVIP: 404,
    ErrorCode.NOT_FOUND_INSTANCE: 404,
    ErrorCode.NOT_FOUND_VSWITCH: 404,
    ErrorCode.NOT_FOUND_ATTACHMENT: 404,
    ErrorCode.NOT_FOUND_OPERATION: 404,
    ErrorCode.NOT_FOUND_ROUTE: 404,
    ErrorCode.NOT_FOUND_EIP: 404,
    ErrorCode.NOT_FOUND_TOKEN: 404,
    ErrorCode.QUOTA_HAVIP: 409,
    ErrorCode.EIP_IN_USE: 409,
    ErrorCode.THROTTLED: 429,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.QUOTA_HAVIP_ASSOCIATION: 409,
    ErrorCode.QUOTA_INSTANCE_HAVIP: 409,
    ErrorCode.QUOTA_HAVIP_EIP: 409,
    ErrorCode.IP_VERSION: 400,
    ErrorCode.IP_MALFORMED: 400,
    ErrorCode.IP_OUT_OF_RANGE: 400,
    ErrorCode.IP_RESERVED: 400,
    ErrorCode.IP_IN_USE: 409,
    ErrorCode.IP_EXHAUSTED: 409,
    ErrorCode.VSWITCH_MISMATCH: 409,
    ErrorCode.INSTANCE_STATUS: 409,
    ErrorCode.HAVIP_STATUS: 409,
    ErrorCode.DEPENDENCY_HAVIP: 409,
    ErrorCode.ALREADY_ATTACHED: 409,
    ErrorCode.IDEMPOTENT_MISMATCH: 409,
    ErrorCode.INVALID_PARAMETER: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.REPORTER_NOT_ATTACHED: 409,
    ErrorCode.SEQ_AHEAD: 409,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.INTERNAL_ERROR: 500,
}


class HaVipError(Exception):
    """A failure with a stable code; raised by rules, mapped once at each edge."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        # Seconds a client should wait before trying again (429, 503): the HTTP edge sends Retry-After.
        self.retry_after = retry_after

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)


class Unappliable(HaVipError):
    """A well-formed record that can never be applied: a consumer dead-letters it with its code."""


class InventoryMiss(Exception):
    """A command names a resource our inventory copy lacks; nothing was stored."""


class SchemaOutOfDate(RuntimeError):
    """The database's schema is older than this code: run `havip migrate` first."""
