"""The HTTP API's request and response bodies: the CLI's field names, as pydantic models."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.forms import IsoDate, ShortText, Text


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


Reason = Text
Year = Field(ge=1900, le=9998)


class IntakeRequest(Body):
    year: int = Year
    opens: IsoDate | None = None
    closes: IsoDate | None = None


class ExtensionRequest(Body):
    closes: IsoDate
    reason: Reason


class Empty(Body):
    pass


class ReasonRequest(Body):
    reason: Reason


class ErasureRequest(Body):
    reason: Reason
    persons: list[Literal["mayor", "contact"]] | None = Field(
        default=None, min_length=1, description="whose data to erase; default: both")


class AdmissionRequest(Body):
    reason: Reason | None = None
    jury: Literal["recommended", "not_recommended"] | None = None


class RejectionRequest(Body):
    reason: Reason
    jury: Literal["recommended", "not_recommended"] | None = None


class MembershipEndRequest(Body):
    reason: Literal["not_reporting", "withdrawn_by_city", "other"]
    note: ShortText | None = None


# --- responses -------------------------------------------------------------------------------

class Written(BaseModel):
    position: int | None = Field(
        description="log position of the command's last event; pass it as min_position to a "
                    "GET to read your own write")


class IntakeWritten(Written):
    year: int
    opens: date
    closes: date


class Submitted(Written):
    application_id: UUID
    city_id: UUID


class StatusWritten(Written):
    application_id: UUID
    status: str


class QuotaUse(BaseModel):
    country: str
    year: int
    used: int
    limit: int | None


class Admitted(StatusWritten):
    city_id: UUID
    quota: QuotaUse


class ReportWritten(Written):
    city_id: UUID
    cycle: int
    due: date
    late: bool


class ContactsWritten(Written):
    city_id: UUID
    updated: list[Literal["mayor", "contact"]]


class ErasureWritten(Written):
    city_id: UUID
    persons: list[Literal["mayor", "contact"]]
    recorded: bool = Field(description="false: every key was gone already, nothing recorded")
    erased_key_ids: list[str]
    erased_before: list[str] = Field(description="keys of these persons erased before")
    plaintext_events: int = Field(description=(
        "events of these persons stored in the clear before values were sealed, which no "
        "erasure can reach (README, Personal data)"))
    message: str | None = None


class MembershipEnded(Written):
    city_id: UUID
    status: Literal["ended"]


class MemberRow(BaseModel):
    city_id: UUID
    name: str
    country: str
    status: str
    admitted_on: date
    intake_year: int
    periods: int
    reports_submitted: int
    next_report_due: date | None
    days_overdue: int | None
    flagged_for_review: bool
    ended_on: date | None
    contacts: dict[Literal["mayor", "contact"], dict[str, Any]] = Field(
        default_factory=dict, description=(
            "the current mayor and contact person (from the latest application or contact "
            "update), with `since` and `source`; names, e-mail, phone and postal address are "
            "null without the personal_data scope, and `erased` is true once erased"))


class QuotaRow(BaseModel):
    country: str
    year: int
    limit: int | None
    admitted: int
    retracted: int
    remaining: int | None
    pending: int


class DeadlineRow(BaseModel):
    city_id: UUID
    name: str
    country: str
    period: int
    cycle: int
    due: date
    submitted_on: date | None
    late: bool | None
    status: str
    days_overdue: int | None


class ApplicationRow(BaseModel):
    application_id: UUID
    city_id: UUID
    city: str
    country: str
    intake_year: int
    status: str
    submitted_on: date | None
    endorsed_on: date | None
    declined_on: date | None
    withdrawn_on: date | None
    admitted_on: date | None
    rejected_on: date | None
    retracted_on: date | None


class Paged(BaseModel):
    total: int = Field(description="rows in the whole answer, every page together")
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page")


class MemberPage(Paged):
    items: list[MemberRow]


class QuotaPage(Paged):
    items: list[QuotaRow]


class DeadlinePage(Paged):
    items: list[DeadlineRow]


class ApplicationPage(Paged):
    items: list[ApplicationRow]


class ApplicationView(BaseModel):
    application_id: UUID
    city_id: UUID
    city: str
    country: str
    intake_year: int
    status: str
    steps: dict[str, datetime]
    reasons: dict[str, Any]
    jury: str | None
    admitted_on: date | None
    quota: dict[str, Any] | None
    form: dict[str, Any]
    version: int


class MembershipView(BaseModel):
    period: int
    application_id: UUID
    intake_year: int
    admitted_on: date
    admitted_at: datetime
    ended_at: datetime | None
    ended_on: date | None
    end_reason: str | None
    retracted: bool
    reports: list[dict[str, Any]]
    status: str


class CityView(BaseModel):
    city_id: UUID
    name: str
    country: str
    status: str
    open_application_id: UUID | None
    memberships: list[MembershipView]
    version: int


class EventView(BaseModel):
    position: int
    type: str
    recorded_at: datetime
    effective_at: datetime
    actor: dict[str, str]
    clock_overridden: bool
    source: str
    correlation_id: str | None
    data: dict[str, Any]


class ProjectionState(BaseModel):
    # The age of the oldest event the projection has not applied (0 when it is at the head).
    lag_seconds: float


class Readiness(BaseModel):
    """Unauthenticated: up or down, and lag in seconds; no positions, no audit head."""

    ready: bool
    projections: dict[str, ProjectionState]


class Health(BaseModel):
    status: Literal["ok"]


class Problem(BaseModel):
    """An RFC 9457 problem; `type` ends with the CLI's error code."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None
