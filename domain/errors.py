"""Named refusals of the domain; only the edges map them to exit codes or HTTP statuses."""

from __future__ import annotations


class GnlcError(Exception):
    """Base of every refusal the registry reports to a user."""

    code = "error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(GnlcError):
    """The input breaks a format or content rule; `field` names the offending field."""

    code = "invalid_input"


class NotFound(GnlcError):
    code = "not_found"


class Conflict(GnlcError):
    """Concurrent writers kept winning; nothing was written."""

    code = "conflict"


class RuleViolation(GnlcError):
    """A business rule refused the act."""

    code = "rule_violation"


class WindowClosed(RuleViolation):
    code = "window_closed"


class QuotaExhausted(RuleViolation):
    code = "quota_exhausted"


class NotEndorsed(RuleViolation):
    code = "not_endorsed"


class DuplicateApplication(RuleViolation):
    code = "duplicate_application"


class AlreadyMember(RuleViolation):
    code = "already_member"


class NotAMember(RuleViolation):
    code = "not_a_member"


class InvalidTransition(RuleViolation):
    code = "invalid_transition"


class NotAuthenticated(GnlcError):
    """No valid credentials: a missing, malformed, unknown or revoked token."""

    code = "unauthenticated"


class Forbidden(GnlcError):
    """The actor's role or scope does not allow the act; nothing was written."""

    code = "forbidden"
