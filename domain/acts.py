"""Who acts, in which role, and when the act takes effect."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, CanMutateAggregate

from domain.calendar import local_date
from domain.errors import InvalidInput, InvalidTransition
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
    """An aggregate whose every event records the act that caused it.

    Business time never runs backwards within an aggregate: an act may not precede the last act
    of any aggregate it changes (`InvalidTransition`). The as-of folds rely on it: the events of
    an aggregate that took effect by a day are then a prefix of its stream. Only the history
    import records acts before an aggregate's last one (`historical=True`), after checking that
    they fit where the folds can represent them (see `City.import_membership`).
    """

    # The latest business time among the aggregate's events (None before the first).
    last_act_at: datetime | None = None

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

        def mutate(self, aggregate: Any) -> Any:
            aggregate = super().mutate(aggregate)
            last = aggregate.last_act_at  # inline: every replayed event passes here
            if last is None or self.effective_at > last:
                aggregate.last_act_at = self.effective_at
            return aggregate

        def took_effect_by(self, day: date, timezone: str) -> bool:
            """Whether the act had taken effect at the end of the business day `day` (the as-of
            folds select the events for which this holds)."""
            return local_date(self.effective_at, timezone) <= day

    def trigger_event(
        self, event_class: type[CanMutateAggregate[UUID]], *, historical: bool = False,
        **kwargs: Any,
    ) -> None:
        """Trigger an event, refused if it would precede the aggregate's last act (unless it is
        `historical`: a fact from the history import, whose place the caller has checked)."""
        at = kwargs.get("effective_at")
        last = self.last_act_at
        if not historical and at is not None and last is not None and at < last:
            raise InvalidTransition(
                f"business time never runs backwards: this act at {_moment(at)} would precede "
                f"the last act on this {_kind(self)} at {_moment(last)}",
                field="effective_at",
            )
        super().trigger_event(event_class, **kwargs)


def _moment(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="minutes")


def _kind(aggregate: object) -> str:
    """`CityApplication` -> `city application`."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", type(aggregate).__name__).lower()
