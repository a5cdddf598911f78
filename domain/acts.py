"""Who acts, in which role, and when the act takes effect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.calendar import local_date
from domain.errors import InvalidInput
from domain.regulations import Regulations, regulations_on


class Role(StrEnum):
    SECRETARIAT = "secretariat"
    NATIONAL_COMMISSION = "national_commission"
    CITY = "city"
    AUDITOR = "auditor"
    SUBSCRIBER = "subscriber"


@dataclass(frozen=True)
class Actor:
    """Who acts, in which role, through which channel (`cli`, `http`, `import`).

    `country` and `city_id` narrow what the actor may touch (a National Commission's country, a
    city's own id); None means no narrowing, as for an operator on the command line.
    """

    name: str
    role: Role
    source: str = "cli"
    country: str | None = None
    city_id: UUID | None = None
    scopes: frozenset[str] = frozenset()
    correlation_id: str | None = None


@dataclass(frozen=True)
class Act:
    """The context of one act: recorded on every event it causes."""

    actor: str
    role: Role
    effective_at: datetime
    timezone: str = "Europe/Berlin"
    clock_overridden: bool = False
    source: str = "cli"
    correlation_id: str | None = None

    def __post_init__(self) -> None:
        if self.effective_at.tzinfo is None:
            raise InvalidInput("effective_at must carry a UTC offset", field="effective_at")
        # Stored in UTC; the business date is derived with the secretariat's time zone.
        object.__setattr__(self, "effective_at", self.effective_at.astimezone(UTC))
        if not self.actor.strip():
            raise InvalidInput("the actor's name must not be empty", field="actor")

    @property
    def day(self) -> date:
        """The business date of the act in the secretariat's time zone."""
        return local_date(self.effective_at, self.timezone)

    @property
    def regulations(self) -> Regulations:
        """The regulations in force on the business date of the act."""
        return regulations_on(self.day)

    def decision_fields(self) -> dict[str, Any]:
        """The audit fields plus the regulation version the decision was checked against."""
        return {**self.event_fields(), "regulation_version": self.regulations.version}

    def event_fields(self) -> dict[str, Any]:
        """The audit fields every event carries."""
        return {
            "actor": {"name": self.actor, "role": str(self.role)},
            "effective_at": self.effective_at,
            "clock_overridden": self.clock_overridden,
            "source": self.source,
            "correlation_id": self.correlation_id,
        }


class AuditedAggregate(Aggregate):
    """An aggregate whose every event records the act that caused it."""

    class Event(Aggregate.Event):
        # v2 added `correlation_id`: the request (HTTP), invocation (CLI) or import run that
        # caused the event. Events stored before it have none.
        class_version = 2

        actor: dict[str, str]
        effective_at: datetime
        clock_overridden: bool
        source: str
        correlation_id: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("correlation_id", None)
