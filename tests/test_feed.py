"""The HTTP event feed (`GET /events`) over real sockets, on SQLite and PostgreSQL.

A consumer that pages from `after=0` until an empty page sees every membership event exactly once,
in commit order; token administration is never in the feed. The last test races eight writer
processes against three readers on PostgreSQL.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx
import pytest
from eventsourcing.persistence import IntegrityError

from application.clock import FixedClock
from application.registry import Registry
from domain.access import AccessToken
from domain.acts import Role
from infrastructure.bootstrap import build_registry
from infrastructure.settings import Settings
from projections.public import CONTRACT
from tests.conftest import (
    AUDITOR,
    CITY,
    COMMISSION,
    SECRETARIAT,
    SettableClock,
    admitted_city,
    application_form,
)
from tests.live_server import LiveServer, live_server

MAX_PAGES = 10_000


# --- helpers, also used by the stream, masking and subscriber tests ----------------------------


def feed_positions(registry: Registry) -> list[int]:
    """The positions of the store's membership events, in store order (tokens left out)."""
    positions = []
    for recorded in registry.read_log(AUDITOR):
        if isinstance(recorded.event, AccessToken.Issued | AccessToken.Revoked):
            continue
        assert type(recorded.event) in CONTRACT, f"no public type for {type(recorded.event)}"
        positions.append(recorded.position)
    return positions


def log_head(registry: Registry) -> int:
    return registry.recorder.max_notification_id() or 0


def page(client: httpx.Client, after: int, limit: int = 100, **params: Any) -> dict[str, Any]:
    response = client.get("/events", params={"after": after, "limit": limit, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    positions = [event["position"] for event in body["events"]]
    assert positions == sorted(set(positions)), "a page is in position order, without repeats"
    assert all(p > after for p in positions), "a page starts after the position asked for"
    assert len(positions) <= limit
    assert body["next_after"] >= max([after, *positions])
    return body


def read_feed(client: httpx.Client, limit: int = 100, **params: Any) -> list[dict[str, Any]]:
    """Every event, paging from 0 until an empty page, as a downstream consumer does."""
    events: list[dict[str, Any]] = []
    after = 0
    for _ in range(MAX_PAGES):
        body = page(client, after, limit, **params)
        if not body["events"]:
            return events
        events.extend(body["events"])
        after = body["next_after"]
    pytest.fail(f"no empty page after {MAX_PAGES} pages")


def reader_client(api: LiveServer, name: str, role: Role = Role.SUBSCRIBER,
                  scopes: frozenset[str] = frozenset()) -> httpx.Client:
    return api.client(api.token(name, role, scopes=scopes))


def membership_story(registry: Registry, clock: SettableClock) -> dict[str, Any]:
    """Two countries' admissions, a declined application, a retraction and an ended membership."""
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    hamburg = admitted_city(registry, "Hamburg", "DE")
    lyon = admitted_city(registry, "Lyon", "FR")
    nantes = registry.submit_application(CITY, application_form("Nantes", "FR"))
    registry.decline(COMMISSION, nantes.application_id, "Part 2 missing")
    clock.set("2019-04-20 12:00")
    registry.retract(SECRETARIAT, lyon.application_id, "admitted in error")
    registry.end_membership(SECRETARIAT, hamburg.city_id, "withdrawn_by_city")
    return {"hamburg": hamburg, "lyon": lyon, "nantes": nantes}


@pytest.fixture
def story(api: LiveServer, clock: SettableClock) -> dict[str, Any]:
    # A token issued before the story and one in the middle: both must stay out of the feed.
    api.token("early-subscriber", Role.SUBSCRIBER)
    told = membership_story(api.registry, clock)
    api.token("late-auditor", Role.AUDITOR)
    return told


# --- the feed -----------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3, 1000])
def test_paging_from_zero_to_an_empty_page_gives_every_membership_event_once_in_store_order(
    api: LiveServer, story: dict[str, Any], limit: int
) -> None:
    with reader_client(api, "reader") as client:
        events = read_feed(client, limit)

    assert [e["position"] for e in events] == feed_positions(api.registry)
    assert len({e["id"] for e in events}) == len(events)
    stored = {r.position: r.event for r in api.registry.read_log(AUDITOR)}
    for event in events:
        public = CONTRACT[type(stored[event["position"]])]
        assert (event["type"], event["version"]) == (public.name, public.version)
        assert set(event) == {"position", "id", "type", "version", "city_id", "country",
                              "recorded_at", "effective_at", "actor", "data"}
        assert UUID(event["id"])
    assert not any(e["type"].startswith("token") for e in events)
    assert {"intake.opened", "application.submitted", "application.declined",
            "application.admitted", "membership.started", "membership.retracted",
            "membership.ended", "quota.place_taken", "quota.place_freed"} <= {
        e["type"] for e in events}


def test_the_page_after_the_last_event_is_empty_and_next_after_stays_at_the_head(
    api: LiveServer, story: dict[str, Any]
) -> None:
    with reader_client(api, "reader") as client:
        head = log_head(api.registry)
        body = page(client, head)
        assert body == {"events": [], "next_after": head}
        assert page(client, head + 50) == {"events": [], "next_after": head + 50}


def test_a_type_filter_gives_only_those_types_and_next_after_passes_the_skipped_events(
    api: LiveServer, story: dict[str, Any]
) -> None:
    with reader_client(api, "reader") as client:
        everything = read_feed(client)
        wanted = {"membership.started", "membership.ended"}
        expected = [e for e in everything if e["type"] in wanted]
        assert [e["type"] for e in expected] == [
            "membership.started", "membership.started", "membership.ended"]

        assert read_feed(client, 1, types=",".join(sorted(wanted))) == expected
        assert read_feed(client, 100, types=" membership.ended ,membership.started") == expected

        # The one intake.opened comes first; the page after it examines the whole log.
        first = page(client, 0, 1, types="intake.opened")
        (opened,) = first["events"]
        assert first["next_after"] == opened["position"]
        rest = page(client, first["next_after"], 1, types="intake.opened")
        assert rest == {"events": [], "next_after": log_head(api.registry)}


def test_country_and_city_filters_give_exactly_the_events_about_that_country_or_city(
    api: LiveServer, story: dict[str, Any]
) -> None:
    lyon = story["lyon"]
    with reader_client(api, "reader") as client:
        everything = read_feed(client)
        french = [e for e in everything if e["country"] == "FR"]
        about_lyon = [e for e in everything if e["city_id"] == str(lyon.city_id)]

        assert read_feed(client, 2, country="FR") == french
        assert read_feed(client, 2, city=str(lyon.city_id)) == about_lyon
        assert read_feed(client, 2, country="FR", city=str(lyon.city_id),
                         types="membership.retracted") == [
            e for e in about_lyon if e["type"] == "membership.retracted"]
        assert read_feed(client, 5, country="JP") == []

    assert {e["type"] for e in about_lyon} >= {
        "city.registered", "application.submitted", "application.admitted",
        "membership.started", "membership.retracted", "quota.place_taken", "quota.place_freed"}
    # Nantes is French too, and the French quota ledger's events name the country.
    assert {e["city_id"] for e in french} == {str(lyon.city_id), str(story["nantes"].city_id),
                                              None}
    assert all(e["country"] is None and e["city_id"] is None
               for e in everything if e["type"].startswith("intake"))


def test_an_unknown_event_type_or_a_malformed_filter_is_refused_with_422(
    api: LiveServer, story: dict[str, Any]
) -> None:
    with reader_client(api, "reader") as client:
        for params in ({"types": "membership.started,membership.paused"},
                       {"types": "AccessToken.Issued"},
                       {"country": "Germany"}, {"city": "not-a-uuid"},
                       {"after": "-1"}, {"limit": "0"}, {"limit": "1001"}):
            response = client.get("/events", params=params)
            assert response.status_code == 422, (params, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
        problem = client.get("/events", params={"types": "membership.paused"}).json()
        assert problem["code"] == "invalid_input" and problem["field"] == "types"
        assert "membership.paused" in problem["detail"]


def test_subscribers_auditors_and_the_secretariat_read_the_feed_commissions_and_cities_may_not(
    api: LiveServer, story: dict[str, Any]
) -> None:
    hamburg = story["hamburg"]
    readers = {role: reader_client(api, f"reader-{role}", role)
               for role in (Role.SUBSCRIBER, Role.AUDITOR, Role.SECRETARIAT)}
    refused = {
        "commission": api.client(api.token("commission-de", Role.NATIONAL_COMMISSION, "DE")),
        "city": api.client(api.token("city-hamburg", Role.CITY, city=hamburg.city_id)),
    }
    expected = feed_positions(api.registry)
    for role, client in readers.items():
        with client:
            assert [e["position"] for e in read_feed(client)] == expected, role
    for who, client in refused.items():
        with client:
            for path in ("/events", "/events/stream"):
                response = client.get(path, params={"after": 0})
                assert response.status_code == 403, (who, path, response.text)
                assert response.json()["code"] == "forbidden"
    with api.client() as anonymous:
        assert anonymous.get("/events").status_code == 401
    with api.client("gnlc_not-a-real-token") as stranger:
        assert stranger.get("/events").status_code == 401


def test_an_event_keeps_its_id_across_reads_pages_filters_and_server_restarts(
    api: LiveServer, story: dict[str, Any], settings: Settings, clock: SettableClock
) -> None:
    token = api.token("reader", Role.SUBSCRIBER)
    with api.client(token) as client:
        first = {e["position"]: e["id"] for e in read_feed(client, 1000)}
        assert {e["position"]: e["id"] for e in read_feed(client, 2)} == first
        for event in read_feed(client, 3, country="DE"):
            assert first[event["position"]] == event["id"]
    # Another server process on the same store (fresh caches) gives the same ids.
    with live_server(settings, clock, projections=False) as other, other.client(token) as client:
        assert {e["position"]: e["id"] for e in read_feed(client, 7)} == first
    assert len(set(first.values())) == len(first)


def test_events_written_after_a_consumer_caught_up_come_on_its_next_page(
    api: LiveServer, story: dict[str, Any], clock: SettableClock
) -> None:
    with reader_client(api, "reader") as client:
        seen = read_feed(client)
        after = page(client, seen[-1]["position"])["next_after"]
        clock.set("2019-04-21 12:00")
        admitted_city(api.registry, "Bremen", "DE")
        body = page(client, after)
        new = [p for p in feed_positions(api.registry) if p > after]
        assert new and [e["position"] for e in body["events"]] == new
        assert page(client, body["next_after"])["events"] == []


# --- eight writer processes, three readers (PostgreSQL) ------------------------------------------

WRITERS = 8
READER_LIMITS = (50, 50, 23)
ROUNDS = 15
RACE_COUNTRIES = ("DE", "FR", "KR", "BR")  # two writers per country: their ledgers conflict
# The 2015 intake: before the regulations, no quota; and not a year of the synthetic batches,
# whose ledgers of 2016 and 2017 take their acts at other business times.
RACE_TIME = "2015-06-01T12:00:00+02:00"
RACE_TIMEOUT = 300.0


def _race_writer(database_url: str, worker: int, results: multiprocessing.Queue[Any]) -> None:
    """Many small saves: one city through the use cases, then a synthetic batch, per round."""
    from tests.synthetic import generate

    registry: Registry | None = None
    try:
        registry = build_registry(Settings(database_url=database_url),
                                  FixedClock(datetime.fromisoformat(RACE_TIME)))
        written, conflicts = 0, 0
        for round_no in range(ROUNDS):
            country = RACE_COUNTRIES[worker % len(RACE_COUNTRIES)]
            form = application_form(f"Race {worker} {round_no}", country, signed_on="2015-05-20")
            submission = registry.submit_application(CITY, form)
            registry.endorse(COMMISSION, submission.application_id)
            registry.admit(SECRETARIAT, submission.application_id)
            try:
                written += generate(registry, 30, seed=worker * 1000 + round_no,
                                    tag=f"race-{worker}-{round_no}", chunk_events=10)
            except IntegrityError:  # another writer extended the same quota ledger first
                conflicts += 1
        results.put((worker, "done", f"{written} synthetic events, {conflicts} conflicts"))
    except BaseException:
        results.put((worker, "crashed", traceback.format_exc()))
    finally:
        if registry is not None:
            registry.close()


class Reader(threading.Thread):
    """Pages through the feed until the writers are done and a page after that is empty."""

    def __init__(self, client: httpx.Client, limit: int, writers_done: threading.Event) -> None:
        super().__init__(name=f"feed-reader-{limit}", daemon=True)
        self.client, self.limit, self.writers_done = client, limit, writers_done
        self.events: list[dict[str, Any]] = []
        self.seen_while_writing = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            after = 0
            deadline = time.monotonic() + RACE_TIMEOUT
            while time.monotonic() < deadline:
                done_before = self.writers_done.is_set()
                body = page(self.client, after, self.limit)
                if not done_before:
                    self.seen_while_writing += len(body["events"])
                if not body["events"]:
                    if done_before:
                        return
                    self.writers_done.wait(0.005)  # poll again soon (or at once when done)
                self.events.extend(body["events"])
                after = body["next_after"]
            self.error = "the reader did not finish in time"
        except BaseException:
            self.error = traceback.format_exc()


@pytest.fixture
def race_server(postgres_schema_url: str) -> Iterator[LiveServer]:
    """A server without projections or rate limit, the 2015 intake open."""
    settings = Settings(database_url=postgres_schema_url, rate_limit=0)
    clock = SettableClock(at=datetime.fromisoformat(RACE_TIME))
    with live_server(settings, clock, projections=False) as server:
        server.registry.open_intake(SECRETARIAT, 2015)
        yield server


@pytest.mark.race
def test_three_readers_paging_while_eight_processes_write_each_see_the_store_exactly_once_in_order(
    race_server: LiveServer, postgres_schema_url: str
) -> None:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = context.Queue()
    writers_done = threading.Event()
    readers = [Reader(reader_client(race_server, f"race-reader-{n}"), limit, writers_done)
               for n, limit in enumerate(READER_LIMITS)]
    writers = [context.Process(target=_race_writer, args=(postgres_schema_url, w, results),
                               name=f"feed-writer-{w}", daemon=True) for w in range(WRITERS)]
    for reader in readers:
        reader.start()
    for writer in writers:
        writer.start()
    try:
        outcomes = []
        for _ in range(WRITERS):
            try:
                outcomes.append(results.get(timeout=RACE_TIMEOUT))
            except queue.Empty:
                pytest.fail(f"the writers did not finish in time; so far {outcomes}")
        crashed = [detail for _, state, detail in outcomes if state != "done"]
        assert not crashed, "\n".join(crashed)
    finally:
        writers_done.set()
        for writer in writers:
            writer.join(timeout=30)
            if writer.is_alive():
                writer.terminate()
        for reader in readers:
            reader.join(timeout=RACE_TIMEOUT)
            reader.client.close()

    stored = feed_positions(race_server.registry)
    # Each round writes at least its use-case city (submitted, endorsed, admitted: 7 events);
    # synthetic batches that lost a race for a quota ledger were rolled back (position gaps).
    assert len(stored) >= WRITERS * ROUNDS * 7, outcomes
    for reader in readers:
        assert reader.error is None, reader.error
        positions = [e["position"] for e in reader.events]
        assert len(positions) == len(set(positions)), f"{reader.name} saw an event twice"
        assert positions == stored, f"{reader.name}: {_difference(positions, stored)}"
        assert reader.seen_while_writing > 0, "the reader read while the writers wrote"
    ids = [[e["id"] for e in reader.events] for reader in readers]
    assert ids[0] == ids[1] == ids[2]
    assert len(set(ids[0])) == len(ids[0])


def _difference(seen: list[int], stored: list[int]) -> str:
    missing = sorted(set(stored) - set(seen))
    extra = sorted(set(seen) - set(stored))
    return f"{len(seen)} seen, {len(stored)} stored; missing {missing[:10]}, extra {extra[:10]}"
