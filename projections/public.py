"""The public event contract: stable type names and versions, and a pydantic model per type.

Downstream services (website, newsletters, statistics) see these, never the Python classes: a
class may be renamed or moved (with a topic alias) without changing what they receive. A change to
what an event carries is a new version of its public type, with an upcaster for stored events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, ConfigDict, Field

from domain.applications import CityApplication
from domain.cities import City
from domain.intakes import IntakeCalendar
from domain.personal import PERSONS, Person, shown_part
from domain.quotas import QuotaLedger

Jury = Literal["recommended", "not_recommended"]


class Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoData(Data):
    pass


class IntakeOpened(Data):
    year: int
    opens: date
    closes: date
    timezone: str
    regulation_version: str


class IntakeExtended(Data):
    year: int
    previous_closes: date
    closes: date
    reason: str


class ApplicationSubmitted(Data):
    city_id: UUID
    city: str
    country: str
    intake_year: int
    form: dict[str, Any] = Field(description=(
        "Part 1 of the form; the mayor's and contact person's names, e-mail and phone are null "
        "unless the reader holds the personal_data scope"))
    regulation_version: str


class ApplicationImported(Data):
    """An admission from before the registry, imported from the network's records."""

    city_id: UUID
    city: str
    country: str
    intake_year: int
    admitted_on: date
    used_before: int
    limit: int | None
    source_url: str | None
    regulation_version: str


class StatusChanged(Data):
    regulation_version: str


class WithReason(StatusChanged):
    reason: str


class ApplicationAdmitted(StatusChanged):
    reason: str | None
    jury: Jury | None
    admitted_on: date
    quota_year: int
    used_before: int
    limit: int | None


class ApplicationRejected(WithReason):
    jury: Jury | None


class CityRegistered(Data):
    country: str
    name: str


class ApplicationLodged(Data):
    application_id: UUID


class ApplicationClosed(Data):
    application_id: UUID
    outcome: str


class MembershipStarted(Data):
    regulation_version: str
    application_id: UUID
    period: int
    intake_year: int
    admitted_on: date


class MembershipRetracted(Data):
    regulation_version: str
    application_id: UUID
    period: int
    reason: str


class ReportSubmittedV1(Data):
    regulation_version: str
    period: int
    cycle: int
    due: date
    submitted_on: date
    late: bool
    report: dict[str, Any]


class ReportSubmitted(ReportSubmittedV1):
    """v2: `days_late`, whole days after the due date (0 if on time)."""

    days_late: int


class MembershipEnded(Data):
    regulation_version: str
    period: int
    reason: Literal["not_reporting", "withdrawn_by_city", "other"]
    note: str | None
    ended_on: date


class ContactUpdated(Data):
    """A new mayor or contact person of the city."""

    person: Person
    details: dict[str, Any] = Field(description=(
        "The person's part of the form (as in application.submitted); their name, e-mail, "
        "phone and postal address are null unless the reader holds the personal_data scope, "
        "and `erased` is true once they were erased"))


class PersonalDataErased(Data):
    """The personal data of persons of the city were erased (their data keys destroyed)."""

    persons: list[Person]
    key_ids: list[str]
    reason: str
    plaintext_events: int = Field(description=(
        "events of these persons stored in the clear before values were sealed, which the "
        "erasure cannot reach (see the README, Personal data)"))


class QuotaOpened(Data):
    country: str
    year: int


class PlaceTaken(Data):
    application_id: UUID
    city_id: UUID
    used_before: int
    limit: int | None
    regulation_version: str


class PlaceFreed(Data):
    application_id: UUID
    reason: str


@dataclass(frozen=True)
class PublicType:
    name: str
    version: int
    model: type[Data]


CONTRACT: dict[type, PublicType] = {
    IntakeCalendar.Created: PublicType("intake_calendar.created", 1, NoData),
    IntakeCalendar.IntakeOpened: PublicType("intake.opened", 1, IntakeOpened),
    IntakeCalendar.IntakeExtended: PublicType("intake.extended", 1, IntakeExtended),
    CityApplication.Submitted: PublicType("application.submitted", 1, ApplicationSubmitted),
    CityApplication.Imported: PublicType("application.imported", 1, ApplicationImported),
    CityApplication.Endorsed: PublicType("application.endorsed", 1, StatusChanged),
    CityApplication.Declined: PublicType("application.declined", 1, WithReason),
    CityApplication.Withdrawn: PublicType("application.withdrawn", 1, WithReason),
    CityApplication.Admitted: PublicType("application.admitted", 1, ApplicationAdmitted),
    CityApplication.Rejected: PublicType("application.rejected", 1, ApplicationRejected),
    CityApplication.AdmissionRetracted: PublicType(
        "application.admission_retracted", 1, WithReason),
    City.Registered: PublicType("city.registered", 1, CityRegistered),
    City.ApplicationLodged: PublicType("city.application_lodged", 1, ApplicationLodged),
    City.ApplicationClosed: PublicType("city.application_closed", 1, ApplicationClosed),
    City.MembershipStarted: PublicType("membership.started", 1, MembershipStarted),
    City.MembershipRetracted: PublicType("membership.retracted", 1, MembershipRetracted),
    City.ReportSubmitted: PublicType("report.submitted", 2, ReportSubmitted),
    City.MembershipEnded: PublicType("membership.ended", 1, MembershipEnded),
    City.ContactUpdated: PublicType("city.contact_updated", 1, ContactUpdated),
    City.PersonalDataErased: PublicType("city.personal_data_erased", 1, PersonalDataErased),
    QuotaLedger.Opened: PublicType("quota.opened", 1, QuotaOpened),
    QuotaLedger.PlaceTaken: PublicType("quota.place_taken", 1, PlaceTaken),
    QuotaLedger.PlaceFreed: PublicType("quota.place_freed", 1, PlaceFreed),
}
BY_NAME = {t.name: t for t in CONTRACT.values()}
# Versions no longer emitted (stored events are upcast), kept so their schemas stay published.
SUPERSEDED = (PublicType("report.submitted", 1, ReportSubmittedV1),)

# Fields every stored event has; the rest is the event's public data.
ENVELOPE = frozenset({
    "originator_id", "originator_version", "originator_topic", "timestamp",
    "actor", "effective_at", "clock_overridden", "source", "correlation_id",
})


def event_id(originator_id: UUID, originator_version: int) -> UUID:
    """An event's public id: the same for the same stored event, forever."""
    return uuid5(NAMESPACE_URL, f"gnlc:event:{originator_id}:{originator_version}")


def data_of(event: Any) -> dict[str, Any]:
    """The event's own fields, without the envelope every event has."""
    return {k: v for k, v in vars(event).items() if k not in ENVELOPE}


def masked(type_name: str, data: dict[str, Any]) -> dict[str, Any]:
    """The data with personal fields set to null and no sealed values (a copy)."""
    if type_name == "application.submitted":
        return {**data, "form": masked_form(data["form"])}
    if type_name == "city.contact_updated" and isinstance(data.get("details"), dict):
        return {**data, "details": shown_part(data["person"], data["details"], None, False)}
    return data


def masked_form(form: dict[str, Any]) -> dict[str, Any]:
    """Part 1 of the form with the persons' names, e-mail, phone and address set to null."""
    masked = dict(form)
    for person in PERSONS:
        if isinstance(masked.get(person), dict):
            masked[person] = shown_part(person, masked[person], None, False)
    return masked


def schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every public type's data, keyed `<type>.v<version>`."""
    return {f"{t.name}.v{t.version}": {
        **t.model.model_json_schema(), "title": t.name, "version": t.version}
        for t in (*SUPERSEDED, *CONTRACT.values())}
