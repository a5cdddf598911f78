"""Replays to a past point (`as_of`, `known_at`) are kept, continued and bounded, not redone from
the start of the log on every request (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from application.registry import RecordedEvent, Registry
from domain.acts import Actor
from domain.cities import city_id
from infrastructure.bootstrap import build_read_side
from infrastructure.readmodels.read_side import ReadSide
from infrastructure.settings import Settings
from projections import answers
from tests.conftest import AUDITOR, SECRETARIAT, SettableClock, admitted_city

TODAY = date(2019, 12, 31)
WAIT_SECONDS = 30.0


class LogReads:
    """The starts of the registry's log reads (wrapping our own `Registry.read_log`)."""

    def __init__(self, registry: Registry) -> None:
        self.starts: list[int] = []
        self.read_log = registry.read_log

    def __call__(self, actor: Actor, start: int = 1, page: int = 1000
                 ) -> Iterator[RecordedEvent]:
        self.starts.append(start)
        return self.read_log(actor, start, page)


@pytest.fixture
def network(registry: Registry, clock: SettableClock) -> Registry:
    registry.open_intake(SECRETARIAT, 2019)
    admitted_city(registry, "Hamburg")
    clock.set("2019-03-20 12:00")
    admitted_city(registry, "Lyon", "FR")
    return registry


def _members(read_side: ReadSide, **past: Any) -> list[str]:
    rows = read_side.rows("members", **past, reader=AUDITOR)
    return [m["name"] for m in answers.members(rows, TODAY)]


def test_the_same_past_query_again_does_not_read_the_log_again(
    settings: Settings, network: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_side = build_read_side(settings, network)
    reads = LogReads(network)
    monkeypatch.setattr(network, "read_log", reads)
    moment = datetime.now(UTC)
    for _ in range(3):
        assert _members(read_side, as_of=date(2019, 3, 15)) == ["Hamburg"]
        assert _members(read_side, known_at=moment) == ["Hamburg", "Lyon"]
    assert reads.starts == [1, 1]


def test_a_past_query_after_new_events_reads_only_the_new_part_of_the_log(
    settings: Settings, network: Registry, clock: SettableClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_side = build_read_side(settings, network)
    reads = LogReads(network)
    monkeypatch.setattr(network, "read_log", reads)
    assert _members(read_side, as_of=date(2019, 3, 31)) == ["Hamburg", "Lyon"]
    answered = read_side.rows("members", as_of=date(2019, 3, 31), reader=AUDITOR)
    as_answered = copy.deepcopy(answered)
    head = network.recorder.max_notification_id()
    clock.set("2019-03-25 12:00")
    admitted_city(network, "Bremen")
    network.end_membership(SECRETARIAT, city_id("FR", "Lyon"), "other")
    clock.set("2019-04-10 12:00")
    admitted_city(network, "Nantes", "FR")  # after the day asked about

    assert _members(read_side, as_of=date(2019, 3, 31)) == ["Bremen", "Hamburg"]
    assert reads.starts == [1, head + 1]
    assert answered == as_answered  # rows handed out before are never changed afterwards
    fresh = build_read_side(settings, network)
    assert fresh.rows("members", as_of=date(2019, 3, 31), reader=AUDITOR) == read_side.rows(
        "members", as_of=date(2019, 3, 31), reader=AUDITOR)


class HeldReplay(ReadSide):
    """A read side whose replays wait, once started, until the test lets them go on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started, self.go_on = threading.Event(), threading.Event()

    def _events(self, reader: Actor, as_of: date | None, after: int,
                upto: int) -> Iterable[object]:
        self.started.set()
        assert self.go_on.wait(WAIT_SECONDS)
        yield from super()._events(reader, as_of, after, upto)


def test_replays_beyond_the_limit_are_refused_as_busy_while_kept_answers_still_come(
    settings: Settings, network: Registry,
) -> None:
    from infrastructure.readmodels.read_side import Busy

    built = build_read_side(settings, network)
    kept = date(2019, 3, 15)
    read_side = HeldReplay(built.registry, built.store, built.runner, built.timezone,
                           built.known_by, replays=1)
    read_side.go_on.set()
    assert _members(read_side, as_of=kept) == ["Hamburg"]
    read_side.go_on.clear()
    result: list[list[str]] = []
    first = threading.Thread(target=lambda: result.append(
        _members(read_side, as_of=date(2019, 3, 31))))
    read_side.started.clear()
    first.start()
    try:
        assert read_side.started.wait(WAIT_SECONDS)
        with pytest.raises(Busy):
            read_side.rows("members", as_of=date(2019, 3, 20), reader=AUDITOR)
        assert _members(read_side, as_of=kept) == ["Hamburg"]  # kept: no replay needed
    finally:
        read_side.go_on.set()
        first.join(WAIT_SECONDS)
    assert result == [["Hamburg", "Lyon"]]
    assert _members(read_side, as_of=date(2019, 3, 20)) == ["Hamburg", "Lyon"]
