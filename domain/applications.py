"""The application of a city to one intake, from submission to decision (and corrigendum)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.acts import Act, AuditedAggregate
from domain.errors import InvalidInput, InvalidTransition, NotEndorsed
from domain.quotas import QuotaLedger

Jury = Literal["recommended", "not_recommended"]
JURY_VALUES = ("recommended", "not_recommended")


class Status(StrEnum):
    SUBMITTED = "submitted"
    ENDORSED = "endorsed"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"
    ADMITTED = "admitted"
    REJECTED = "rejected"
    RETRACTED = "retracted"


OPEN_STATUSES = (Status.SUBMITTED, Status.ENDORSED)


def _reason(reason: str | None, required: bool = True) -> str | None:
    if reason is not None and not reason.strip():
        reason = None
    if required and reason is None:
        raise InvalidInput("a reason is required", field="reason")
    return reason


class CityApplication(AuditedAggregate):
    """Part 1 signed by the mayor, Part 2 by the National Commission, decided by the secretariat."""

    class Submitted(AuditedAggregate.Event, Aggregate.Created):
        city_id: UUID
        city: str
        country: str
        intake_year: int
        form: dict[str, Any]
        regulation_version: str

    def __init__(
        self, city_id: UUID, city: str, country: str, intake_year: int,
        effective_at: datetime, form: dict[str, Any] | None = None, **_audit: Any,
    ) -> None:
        self.city_id = city_id
        self.city = city
        self.country = country
        self.intake_year = intake_year
        self.form = form or {}
        self.status = Status.SUBMITTED
        self.steps: dict[str, datetime] = {"submitted": effective_at}
        self.reasons: dict[str, str | None] = {}
        self.jury: str | None = None
        self.admitted_on: date | None = None
        self.quota: dict[str, Any] | None = None

    @classmethod
    def submit(
        cls, act: Act, application_id: UUID, city_id: UUID, intake_year: int,
        form: dict[str, Any],
    ) -> CityApplication:
        return cls._create(
            cls.Submitted,
            id=application_id,
            city_id=city_id,
            city=form["city"],
            country=form["country"],
            intake_year=intake_year,
            form=form,
            **act.decision_fields(),
        )

    class Imported(AuditedAggregate.Event, Aggregate.Created):
        """An admission made before this registry existed, imported from the network's records."""

        city_id: UUID
        city: str
        country: str
        intake_year: int
        admitted_on: date
        used_before: int
        limit: int | None
        source_url: str | None
        regulation_version: str

        def apply(self, application: CityApplication) -> None:
            application.status = Status.ADMITTED
            application.steps = {"admitted": self.effective_at}
            application.admitted_on = self.admitted_on
            application.reasons["admitted"] = "imported" + (
                f" from {self.source_url}" if self.source_url else "")
            application.quota = {
                "country": self.country, "year": self.intake_year,
                "used": self.used_before + 1, "limit": self.limit,
                "regulation_version": self.regulation_version,
            }

    @classmethod
    def import_admission(
        cls, act: Act, application_id: UUID, city_id: UUID, city: str, country: str,
        intake_year: int, source_url: str | None, place: QuotaLedger.PlaceTaken,
    ) -> CityApplication:
        """A historical admission: the quota check it passed is that of its own date."""
        return cls._create(
            cls.Imported, id=application_id, city_id=city_id, city=city, country=country,
            intake_year=intake_year, admitted_on=act.day, used_before=place.used_before,
            limit=place.limit, source_url=source_url, **act.decision_fields(),
        )

    # --- events -------------------------------------------------------------------------------

    class StatusChanged(AuditedAggregate.Event):
        """Base of the events that move the application to a new status."""

        new_status = Status.SUBMITTED
        regulation_version: str

        def apply(self, application: CityApplication) -> None:
            application.status = self.new_status
            application.steps[str(self.new_status)] = self.effective_at

    class Endorsed(StatusChanged):
        new_status = Status.ENDORSED

    class Declined(StatusChanged):
        new_status = Status.DECLINED
        reason: str

        def apply(self, application: CityApplication) -> None:
            super().apply(application)
            application.reasons["declined"] = self.reason

    class Withdrawn(StatusChanged):
        new_status = Status.WITHDRAWN
        reason: str

        def apply(self, application: CityApplication) -> None:
            super().apply(application)
            application.reasons["withdrawn"] = self.reason

    class Admitted(StatusChanged):
        new_status = Status.ADMITTED
        reason: str | None
        jury: str | None
        admitted_on: date
        quota_year: int
        used_before: int
        limit: int | None

        def apply(self, application: CityApplication) -> None:
            super().apply(application)
            application.reasons["admitted"] = self.reason
            application.jury = self.jury
            application.admitted_on = self.admitted_on
            application.quota = {
                "country": application.country,
                "year": self.quota_year,
                "used": self.used_before + 1,
                "limit": self.limit,
                "regulation_version": self.regulation_version,
            }

    class Rejected(StatusChanged):
        new_status = Status.REJECTED
        reason: str
        jury: str | None

        def apply(self, application: CityApplication) -> None:
            super().apply(application)
            application.reasons["rejected"] = self.reason
            application.jury = self.jury

    class AdmissionRetracted(StatusChanged):
        new_status = Status.RETRACTED
        reason: str

        def apply(self, application: CityApplication) -> None:
            super().apply(application)
            application.reasons["retracted"] = self.reason

    # --- commands -----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def endorse(self, act: Act) -> None:
        self._require(Status.SUBMITTED, "endorse")
        self.trigger_event(self.Endorsed, **act.decision_fields())

    def decline(self, act: Act, reason: str) -> None:
        self._require(Status.SUBMITTED, "decline")
        self.trigger_event(self.Declined, reason=_reason(reason), **act.decision_fields())

    def withdraw(self, act: Act, reason: str) -> None:
        if not self.is_open:
            raise InvalidTransition(f"cannot withdraw an application that is {self.status}")
        self.trigger_event(self.Withdrawn, reason=_reason(reason), **act.decision_fields())

    def check_decidable(self) -> None:
        """The secretariat decides only on applications the National Commission endorsed."""
        if self.status == Status.SUBMITTED:
            raise NotEndorsed("the National Commission has not endorsed this application")
        self._require(Status.ENDORSED, "decide on")

    def admit(
        self, act: Act, reason: str | None, jury: str | None, place: QuotaLedger.PlaceTaken
    ) -> None:
        """Record the admission with the quota check it passed (`place`, the ledger's event)."""
        self.check_decidable()
        assert place.regulation_version == act.regulations.version
        self.trigger_event(
            self.Admitted,
            reason=_reason(reason, required=False),
            jury=_jury(jury),
            admitted_on=act.day,
            quota_year=self.intake_year,
            used_before=place.used_before,
            limit=place.limit,
            **act.decision_fields(),
        )

    def reject(self, act: Act, reason: str, jury: str | None) -> None:
        self.check_decidable()
        self.trigger_event(
            self.Rejected, reason=_reason(reason), jury=_jury(jury), **act.decision_fields()
        )

    def retract(self, act: Act, reason: str) -> None:
        """A corrigendum: the admission is as if it had not happened (the log keeps it)."""
        self._require(Status.ADMITTED, "retract")
        self.trigger_event(self.AdmissionRetracted, reason=_reason(reason), **act.decision_fields())

    def _require(self, status: Status, verb: str) -> None:
        if self.status != status:
            raise InvalidTransition(f"cannot {verb} an application that is {self.status}")


def _jury(jury: str | None) -> str | None:
    if jury is not None and jury not in JURY_VALUES:
        raise InvalidInput(
            f"jury must be one of {', '.join(JURY_VALUES)}, got {jury!r}", field="jury"
        )
    return jury
