"""One recorded time everywhere: the feed, SSE, history (CLI and HTTP) and the export show the
time of the event's audit chain row, the time `known_at` compares (SQLite and PostgreSQL).

An event's own timestamp is taken when the library makes it, before its writer waits for the
store's write lock; the chain row's time is taken under the lock. Here every writer records one
second late, as a writer does that waited that long for the lock while another committed: so the
two times differ plainly, and only the chain's time is one that `known_at` includes the event at.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

import infrastructure.eventstore.recorders
from domain.acts import Role
from infrastructure.audit.log import StoredLog
from infrastructure.bootstrap import build_registry
from infrastructure.cli import app
from infrastructure.eventstore.chain import recorded_text
from infrastructure.eventstore.location import EventStoreLocation
from infrastructure.settings import Settings
from tests.conftest import CITY, SECRETARIAT, SettableClock, admitted_city, application_form
from tests.live_server import LiveServer
from tests.test_event_stream import read_events, through

LOCK_WAIT = timedelta(seconds=1)
LOCK_TIMEOUT = 20.0  # seconds, at most, for the writer to reach the held lock, then to finish


def recorded_late() -> str:
    """The chain's time of a transaction whose writer got the write lock a second after it
    made its events (the real clock, later: chain times still rise with positions)."""
    return recorded_text(datetime.now(UTC) + LOCK_WAIT)


@pytest.fixture
def late_writers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infrastructure.eventstore.recorders, "recorded_now", recorded_late)


def gnlc(database_url: str, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--database-url", database_url, *args, "--json"])
    assert result.exit_code == 0, result.stderr or result.output
    return json.loads(result.stdout)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def started() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def hamburg(late_writers: None, api: LiveServer, clock: SettableClock, started: datetime
            ) -> Iterator[str]:
    """A city with a history of several transactions (one with three aggregates), another
    city's acts in between, at business times of 2019 (`--now`); its id."""
    registry = api.registry
    registry.open_intake(SECRETARIAT, 2019)
    submission = admitted_city(registry, "Hamburg")
    registry.submit_application(CITY, application_form("Bremen"))
    clock.set("2019-06-01 10:00")
    registry.retract(SECRETARIAT, submission.application_id, "corrigendum")
    yield str(submission.city_id)


def test_every_event_is_known_from_its_shown_recorded_time_and_not_a_moment_before(
    database_url: str, api: LiveServer, hamburg: str, started: datetime
) -> None:
    history = gnlc(database_url, "history", hamburg)
    assert len(history) >= 5
    shown = {e["position"]: e["recorded_at"] for e in history}
    # The real clock when stored, never the business clock (`--now`, here in 2019).
    assert all(moment(e["recorded_at"]) > started > moment(e["effective_at"]) for e in history)
    staff = api.client(api.token("staff", Role.SECRETARIAT))
    subscriber = api.client(api.token("reader", Role.SUBSCRIBER))
    assert_known_from_shown_time_on(database_url, hamburg, shown, staff)

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
    own = {r.position: r.event.timestamp for r in api.registry.history(SECRETARIAT, UUID(hamburg))}
    assert all(moment(shown[p]) - own[p] >= LOCK_WAIT for p in shown), "the lock wait is shown"


def assert_known_from_shown_time_on(database_url: str, city: str, shown: dict[int, str],
                                    staff: httpx.Client | None = None) -> None:
    """known_at at an event's shown time includes it (and its whole transaction); a
    microsecond earlier excludes it: by `gnlc audit state` (and over HTTP, given a client)."""
    for recorded_at in sorted(set(shown.values())):
        same = [p for p, t in shown.items() if t == recorded_at]
        before = recorded_text(moment(recorded_at) - timedelta(microseconds=1))
        known = state_cli(database_url, city, "--known-at", recorded_at)
        assert known == state_cli(database_url, city, "--position", str(max(same)))
        known_before = state_cli(database_url, city, "--known-at", before)
        assert known_before == state_cli(database_url, city, "--position", str(min(same) - 1))
        assert known != known_before
        if staff is not None:
            over_http = state_http(staff, city, known_at=recorded_at)
            assert over_http == state_http(staff, city, position=max(same))
            assert state_http(staff, city, known_at=before) == state_http(
                staff, city, position=min(same) - 1) != over_http


def state_cli(database_url: str, city: str, *options: str) -> Any:
    return gnlc(database_url, "audit", "state", city, *options)


def state_http(client: httpx.Client, city: str, **point: Any) -> Any:
    response = client.get(f"/audit/cities/{city}", params=point)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_writer_that_waited_for_the_write_lock_shows_when_it_got_it_on_postgresql(
    postgres_schema_url: str, clock: SettableClock
) -> None:
    """Real concurrency: another transaction holds the events table's lock while the writer has
    made its events and waits; the recorded time shown is the one after the wait."""
    registry = build_registry(Settings(database_url=postgres_schema_url), clock)
    log = StoredLog(EventStoreLocation.from_url(postgres_schema_url))
    try:
        registry.open_intake(SECRETARIAT, 2019)
        submitted: list[Any] = []
        writer = threading.Thread(target=lambda: submitted.append(
            registry.submit_application(CITY, application_form("Hamburg"))))
        with psycopg.connect(log.location.psycopg_conninfo()) as holder, holder.transaction():
            holder.execute(f"LOCK TABLE {log.events} IN EXCLUSIVE MODE")
            writer.start()
            waits = threading.Event()
            for _ in range(int(LOCK_TIMEOUT / 0.01)):  # until the writer waits for the lock
                if holder.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND "
                                  "relation = to_regclass(%s)", (log.events,)
                                  ).fetchone()[0]:  # type: ignore[index]
                    break
                waits.wait(0.01)
            else:
                pytest.fail("the writer never waited for the lock")
        writer.join(timeout=LOCK_TIMEOUT)
        assert submitted, "the writer did not finish"
        city = submitted[0].city_id
        own = {r.position: r.event.timestamp for r in registry.history(SECRETARIAT, city)}
    finally:
        registry.close()

    history = gnlc(postgres_schema_url, "history", str(city))
    shown = {e["position"]: e["recorded_at"] for e in history}
    assert shown.keys() == own.keys()
    assert all(moment(shown[p]) > own[p] for p in shown)
    assert_known_from_shown_time_on(postgres_schema_url, str(city), shown)
