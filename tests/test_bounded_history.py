"""A city's history reads the city's and its applications' streams, not the whole log
(SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from application.registry import RecordedEvent, Registry
from tests.conftest import (
    AUDITOR,
    CITY,
    SECRETARIAT,
    SettableClock,
    admitted_city,
    application_form,
    endorsed_application,
)


def _refuse_a_scan(start: int = 1, page: int = 1000) -> Iterator[RecordedEvent]:
    raise AssertionError("the whole log was read")


def test_the_store_reads_streams_with_their_log_positions(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    hamburg = admitted_city(registry, "Hamburg")
    bremen = endorsed_application(registry, "Bremen")
    from application.registry import PositionedStreamReader
    assert isinstance(registry.recorder, PositionedStreamReader)
    read = registry.recorder.select_positioned_streams([hamburg.city_id, bremen.application_id])
    expected = [(r.position, r.event.originator_id, r.event.originator_version)
                for r in registry.read_log(AUDITOR)
                if r.event.originator_id in (hamburg.city_id, bremen.application_id)]
    assert [(p, s.originator_id, s.originator_version) for p, s in read] == expected


def test_a_city_history_is_read_without_decoding_the_whole_log(
    registry: Registry, clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    hamburg = admitted_city(registry, "Hamburg")
    admitted_city(registry, "Bremen")
    clock.set("2019-04-02 12:00")
    registry.retract(SECRETARIAT, hamburg.application_id, "wrong city")
    again = registry.submit_application(CITY, application_form("Hamburg"))
    expected = [(r.position, r.event) for r in registry.read_log(AUDITOR)
                if r.event.originator_id in (hamburg.city_id, hamburg.application_id,
                                             again.application_id)]

    monkeypatch.setattr(registry, "_read_log", _refuse_a_scan)
    history = registry.history(SECRETARIAT, hamburg.city_id)

    assert [(r.position, r.event) for r in history] == expected
    assert {r.event.originator_id for r in history} == {
        hamburg.city_id, hamburg.application_id, again.application_id}
    city, applications = registry.city_at(SECRETARIAT, hamburg.city_id, as_of=date(2019, 3, 31))
    assert city is not None and city.active_membership is not None
    assert {a.id for a in applications} == {hamburg.application_id}
