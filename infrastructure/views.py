"""Plain, JSON-ready views of aggregates and events, shared by every edge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields, is_dataclass
from datetime import date, datetime
from enum import Enum
from typing import Any
from uuid import UUID

from application.registry import PersonalDataKeys, RecordedEvent, Registry
from domain.acts import Actor
from domain.applications import CityApplication
from domain.calendar import local_date
from domain.cities import City
from domain.intakes import Intake
from domain.personal import PERSONS
from infrastructure.eventstore.recorded_times import RecordedTimes
from infrastructure.readmodels.read_side import ReadSide
from projections.base import Row
from projections.public import ENVELOPE


def plain(value: Any) -> Any:
    """Convert to JSON-ready values: UUIDs and dates as strings, datetimes in UTC."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (date, UUID)):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def intake_view(intake: Intake) -> dict[str, Any]:
    return {"year": intake.year, "opens": str(intake.opens), "closes": str(intake.closes)}


def application_view(keys: PersonalDataKeys, application: CityApplication,
                     personal: bool = True) -> dict[str, Any]:
    """The application; its form's personal values opened with `personal`, null without,
    marked `erased` once erased."""
    view: dict[str, Any] = plain(
        {
            "application_id": application.id,
            "city_id": application.city_id,
            "city": application.city,
            "country": application.country,
            "intake_year": application.intake_year,
            "status": application.status,
            "steps": application.steps,
            "reasons": application.reasons,
            "jury": application.jury,
            "admitted_on": application.admitted_on,
            "quota": application.quota,
            "form": application.form,
            "version": application.version,
        }
    )
    view["form"] = keys.shown([{"form": view["form"]}], personal)[0]["form"]
    return view


def city_view(city: City) -> dict[str, Any]:
    return plain(
        {
            "city_id": city.id,
            "name": city.name,
            "country": city.country,
            "status": city.status,
            "open_application_id": city.open_application_id,
            "memberships": [
                {**asdict(m), "status": m.status} for m in city.memberships
            ],
            "version": city.version,
        }
    )


def audit_state_view(keys: PersonalDataKeys, city: City | None,
                     applications: list[CityApplication], personal: bool = True
                     ) -> dict[str, Any]:
    """A city's state at a past point: the city and its applications (None before it existed).
    Personal values are shown as they are now: erased ones erased, at any past point."""
    return {"city": city_view(city) if city is not None else None,
            "applications": [application_view(keys, a, personal) for a in applications]}


def history_view(registry: Registry, history: Sequence[RecordedEvent],
                 personal: bool = True) -> list[dict[str, Any]]:
    """Events in history, each with its chain row's recorded time (what `known_at` compares)."""
    times = RecordedTimes(registry.recorder).of([r.position for r in history])
    views = [event_view(r, times.get(r.position)) for r in history]
    shown = registry.personal_data.shown([v["data"] for v in views], personal)
    for view, data in zip(views, shown, strict=True):
        view["data"] = data
    return views


def event_view(recorded: RecordedEvent, recorded_at: str | None = None) -> dict[str, Any]:
    """An event in history, its personal values as stored (sealed): see `history_view`.

    `recorded_at`: its chain row's time (see `history_view`); the event's own timestamp, taken
    before the write lock, only for an event without one (a log that does not verify)."""
    event = recorded.event
    data = {
        f.name: getattr(event, f.name) for f in fields(event) if f.name not in ENVELOPE
    }
    return plain(
        {
            "position": recorded.position,
            "type": type(event).__qualname__,
            "recorded_at": event.timestamp if recorded_at is None else recorded_at,
            "effective_at": event.effective_at,
            "actor": event.actor,
            "clock_overridden": event.clock_overridden,
            "source": event.source,
            "correlation_id": event.correlation_id,
            "data": data,
        }
    )


def with_contacts(registry: Registry, read_side: ReadSide, actor: Actor, members: list[Row],
                  personal: bool, as_of: date | None = None, known_at: datetime | None = None
                  ) -> list[Row]:
    """Members, each with its current mayor and contact person: the later of its latest contact
    update (the `contacts` read model) and its latest application's form; as of a past point
    when asked. Personal values opened with `personal`, null without, marked `erased` once
    erased."""
    ids = [str(m["city_id"]) for m in members]
    if not ids:
        return members
    wanted = set(ids)
    if as_of is None and known_at is None:
        updates = read_side.stored_rows_among("contacts", "city_id", ids)
        forms = registry.latest_forms(actor, (UUID(i) for i in ids))
    else:
        updates = read_side.rows("contacts", as_of, known_at, reader=actor)
        forms = _forms_then(registry, read_side, actor, wanted, as_of, known_at)
    entries: dict[tuple[str, str], tuple[Any, str, Any]] = {}
    for city_id, (submitted_at, form) in forms.items():
        for person in PERSONS:
            if isinstance(form.get(person), dict):
                entries[(str(city_id), person)] = (
                    local_date(submitted_at, registry.timezone), "application", form[person])
    for row in updates:
        key = (str(row["city_id"]), row["person"])
        # The later of the update and the latest form; on the same day, the update.
        if key[0] in wanted and (key not in entries or row["since"] >= entries[key][0]):
            entries[key] = (row["since"], "update", row["details"])
    found = sorted(entries.items())
    shown = registry.personal_data.shown(
        [{"person": person, "details": details} for (_, person), (_, _, details) in found],
        personal)
    by_city: dict[str, dict[str, Any]] = {}
    for ((city_id, person), (since, source, _)), data in zip(found, shown, strict=True):
        by_city.setdefault(city_id, {})[person] = {
            **data["details"], "since": plain(since), "source": source}
    return [{**m, "contacts": by_city.get(str(m["city_id"]), {})} for m in members]


def _forms_then(registry: Registry, read_side: ReadSide, actor: Actor, wanted: set[str],
                as_of: date | None, known_at: datetime | None
                ) -> dict[UUID, tuple[datetime, dict[str, Any]]]:
    """Per city, its latest application's submission and form as of a past point (the
    `applications` read model replayed to it)."""
    latest: dict[str, Row] = {}
    for row in read_side.rows("applications", as_of, known_at, reader=actor):
        city = str(row["city_id"])
        if city in wanted and row.get("submitted_on") is not None:
            kept = latest.get(city)
            if kept is None or (row["submitted_on"], str(row["application_id"])) > (
                    kept["submitted_on"], str(kept["application_id"])):
                latest[city] = row
    submitted = registry.submitted_forms(actor, (UUID(str(r["application_id"]))
                                                 for r in latest.values()))
    return {UUID(city): submitted[UUID(str(row["application_id"]))]
            for city, row in latest.items() if UUID(str(row["application_id"])) in submitted}
