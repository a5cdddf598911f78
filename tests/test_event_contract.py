"""The public event contract: stable types and versions, published schemas, old forms upcast."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from application.registry import Registry
from domain.access import AccessToken
from domain.acts import AuditedAggregate
from domain.applications import CityApplication
from domain.cities import City
from domain.intakes import IntakeCalendar
from domain.quotas import QuotaLedger
from infrastructure.eventstore.log_reader import EventDecoder, LogReader
from infrastructure.feed.public_events import Feed
from projections.public import BY_NAME, CONTRACT, schemas
from tests.conftest import SECRETARIAT, SettableClock, admitted_city, progress_report

DOCS = Path(__file__).resolve().parent.parent / "docs" / "events"


AGGREGATES = (IntakeCalendar, CityApplication, City, QuotaLedger, AccessToken)


def _stored_event_classes() -> set[type]:
    """The concrete events each aggregate records (not the bases the library adds to each)."""
    return {v for aggregate in AGGREGATES for v in vars(aggregate).values()
            if isinstance(v, type) and issubclass(v, AuditedAggregate.Event)
            and v.__name__ not in ("Event", "StatusChanged")
            and (v.__name__ != "Created" or aggregate is IntakeCalendar)}


def test_the_committed_schemas_in_docs_events_are_those_the_code_generates() -> None:
    committed = {p.stem: json.loads(p.read_text(encoding="utf-8"))
                 for p in DOCS.glob("*.json")}
    assert committed == schemas(), "run `gnlc events schemas docs/events` and commit it"


def test_every_membership_event_has_a_public_type_and_token_events_have_none() -> None:
    stored = _stored_event_classes()
    tokens = {AccessToken.Issued, AccessToken.Revoked}
    assert stored - tokens == set(CONTRACT)
    assert not tokens & set(CONTRACT)
    assert len(BY_NAME) == len(CONTRACT)  # public names are unique


def _store_report_in_its_v1_form(registry: Registry, clock: SettableClock) -> City:
    """A report stored as version 1 of the event wrote it: no days_late, no class_version."""
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    city = registry.city(SECRETARIAT, admitted_city(registry, "Hamburg").city_id)
    clock.set("2021-06-01 10:00")  # due 2021-03-15: 78 days late
    city.submit_report(registry._act(SECRETARIAT), progress_report())
    (event,) = city.collect_events()
    stored = registry.mapper.to_stored_event(event)
    state = json.loads(stored.state)
    del state["days_late"], state["class_version"]
    registry.recorder.insert_events([replace(stored, state=json.dumps(state).encode())])
    return city


def test_a_report_stored_in_its_v1_form_is_read_as_v2_with_days_late(
    registry: Registry, clock: SettableClock
) -> None:
    city = _store_report_in_its_v1_form(registry, clock)
    events = list(registry.repository.event_store.get(city.id))
    assert isinstance(events[-1], City.ReportSubmitted)
    assert events[-1].days_late == 78 and events[-1].late is True
    assert registry.city(SECRETARIAT, city.id).memberships[0].reports[0].late is True


def test_the_feed_serves_a_v1_report_as_report_submitted_version_2(
    registry: Registry, clock: SettableClock
) -> None:
    _store_report_in_its_v1_form(registry, clock)
    found, _ = Feed(registry).page(0, 1000)
    (report,) = [e for e in found if e.type == "report.submitted"]
    assert report.version == 2 and report.data["days_late"] == 78
    BY_NAME["report.submitted"].model.model_validate(report.data)


def test_every_event_in_the_feed_conforms_to_its_published_schema(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    submission = admitted_city(registry, "Hamburg")
    registry.retract(SECRETARIAT, submission.application_id, "a corrigendum")
    found, next_after = Feed(registry).page(0, 1000)
    assert next_after == registry.recorder.max_notification_id()
    for event in found:
        BY_NAME[event.type].model.model_validate(event.data)
        assert event.public(personal_data=False)["data"] is not None


def test_the_rebuilds_fast_decoder_upcasts_a_v1_report_as_the_library_does(
    registry: Registry, clock: SettableClock
) -> None:
    city = _store_report_in_its_v1_form(registry, clock)
    head = registry.recorder.max_notification_id() or 0
    topics = sorted({n.topic for n in registry.recorder.select_notifications(1, head)})
    decoder = EventDecoder(registry.mapper)
    decoded = [decoder(row) for row in LogReader(registry.recorder).page(1, head, topics)]
    (report,) = [e for e in decoded if isinstance(e, City.ReportSubmitted)]
    assert report.originator_id == city.id and report.days_late == 78
    assert report.correlation_id is None
