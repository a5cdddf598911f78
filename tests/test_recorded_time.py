"""One recorded time everywhere: the feed, SSE, history (CLI and HTTP) and the export show the
time of the event's audit chain row, the time `known_at` compares (SQLite and PostgreSQL).

An event's own timestamp is taken when the library makes it, before its writer waits for the
store's write lock; the chain row's time is taken under the lock. Here every writer records one
second late, as a writer does that waited that long for the lock while another committed: so the
two times differ plainly, and only the chain's time is one that `known_at` includes the event at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from typer.testing import CliRunner

import infrastructure.recorders
from domain.acts import Role
from infrastructure.chain import recorded_text
from infrastructure.cli import app
from tests.conftest import CITY, SECRETARIAT, SettableClock, admitted_city, application_form
from tests.live_server import LiveServer
from tests.test_event_stream import read_events, through

LOCK_WAIT = timedelta(seconds=1)


def recorded_late() -> str:
    """The chain's time of a transaction whose writer got the write lock a second after it
    made its events (the real clock, later: chain times still rise with positions)."""
    return recorded_text(datetime.now(UTC) + LOCK_WAIT)


@pytest.fixture
def late_writers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infrastructure.recorders, "recorded_now", recorded_late)


def gnlc(database_url: str, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--database-url", database_url, *args, "--json"])
    assert result.exit_code == 0, result.stderr or result.output
    return json.loads(result.stdout)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def hamburg(late_writers: None, api: LiveServer, clock: SettableClock) -> Iterator[str]:
    """A city with a history of several transactions (one with three aggregates), another
    city's acts in between; its id."""
    registry = api.registry
    registry.open_intake(SECRETARIAT, 2019)
    submission = admitted_city(registry, "Hamburg")
    registry.submit_application(CITY, application_form("Bremen"))
    clock.set("2019-06-01 10:00")
    registry.retract(SECRETARIAT, submission.application_id, "corrigendum")
    yield str(submission.city_id)


def test_every_event_is_known_from_its_shown_recorded_time_and_not_a_moment_before(
    database_url: str, api: LiveServer, hamburg: str
) -> None:
    history = gnlc(database_url, "history", hamburg)
    assert len(history) >= 5
    shown = {e["position"]: e["recorded_at"] for e in history}
    staff = api.client(api.token("staff", Role.SECRETARIAT))
    subscriber = api.client(api.token("reader", Role.SUBSCRIBER))
    # known_at at an event's shown time includes it (and its whole transaction); a microsecond
    # earlier excludes it.
    for recorded_at in sorted(set(shown.values())):
        same = [p for p, t in shown.items() if t == recorded_at]
        before = recorded_text(moment(recorded_at) - timedelta(microseconds=1))
        known = state_cli(database_url, hamburg, "--known-at", recorded_at)
        assert known == state_cli(database_url, hamburg, "--position", str(max(same)))
        known_before = state_cli(database_url, hamburg, "--known-at", before)
        assert known_before == state_cli(database_url, hamburg, "--position", str(min(same) - 1))
        assert known != known_before
        over_http = state_http(staff, hamburg, known_at=recorded_at)
        assert over_http == state_http(staff, hamburg, position=max(same))
        assert state_http(staff, hamburg, known_at=before) == state_http(
            staff, hamburg, position=min(same) - 1) != over_http

    # The same time through every edge that shows one.
    over_http = staff.get(f"/cities/{hamburg}/history").json()
    assert {e["position"]: moment(e["recorded_at"]) for e in over_http} == {
        p: moment(t) for p, t in shown.items()}
    feed = subscriber.get("/events", params={"after": 0, "limit": 1000}).json()["events"]
    assert {e["position"]: e["recorded_at"] for e in feed if e["position"] in shown} == shown
    with subscriber.stream("GET", "/events/stream", params={"after": 0}) as response:
        streamed = read_events(response, through(max(shown)))
    assert {e["position"]: e["recorded_at"] for e in streamed if e["position"] in shown} == shown
    exported = CliRunner().invoke(app, ["--database-url", database_url, "audit", "export"])
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {x["position"]: x["recorded_at"] for x in lines if x["position"] in shown} == shown
    # Not the event's own timestamp, taken before its writer waited for the lock.
    own = {r.position: r.event.timestamp for r in api.registry.history(UUID(hamburg))}
    assert all(moment(shown[p]) - own[p] >= LOCK_WAIT for p in shown), "the lock wait is shown"


def state_cli(database_url: str, city: str, *options: str) -> Any:
    return gnlc(database_url, "audit", "state", city, *options)


def state_http(client: httpx.Client, city: str, **point: Any) -> Any:
    response = client.get(f"/audit/cities/{city}", params=point)
    assert response.status_code == 200, response.text
    return response.json()
