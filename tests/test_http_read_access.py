"""What a token, or no token, learns over HTTP: probes say up or down, and a scoped token
cannot tell an unknown id from one outside its scope."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import uuid4

import httpx
import pytest

from domain.acts import Role
from domain.cities import city_id
from infrastructure.readmodels.tables import ReadModelStore
from infrastructure.settings import Settings
from tests.conftest import SECRETARIAT, SettableClock, admitted_city, progress_report
from tests.http_support import ok, read_models, settled
from tests.live_server import LiveServer, live_server

HAMBURG = city_id("DE", "Hamburg")
NEVER_APPLIED = city_id("DE", "Nirgendwo")  # anyone can derive it; no such city applied


@pytest.fixture
def store(settings: Settings) -> Iterator[ReadModelStore]:
    store = read_models(settings)
    yield store
    store.engine.dispose()


# --- probes ----------------------------------------------------------------------------------

def test_the_probes_tell_an_anonymous_caller_only_up_or_down_and_the_lag_in_seconds(
        api: LiveServer, store: ReadModelStore) -> None:
    api.registry.open_intake(SECRETARIAT, 2019)
    admitted_city(api.registry, "Hamburg")
    settled(store, api)
    with api.client() as anonymous:
        health = ok(anonymous.get("/health"))
        ready = ok(anonymous.get("/ready"))
    with api.client(api.token("auditor", Role.AUDITOR)) as auditor:
        head = ok(auditor.get("/audit/head"))
    assert health == {"status": "ok"}
    assert set(ready) == {"ready", "projections"}
    assert ready["ready"] is True
    assert ready["projections"] == {name: {"lag_seconds": 0.0} for name in ready["projections"]}
    assert head["hash"] not in str(ready)


def test_ready_shows_a_projection_behind_the_log_as_a_lag_in_seconds(
        settings: Settings, clock: SettableClock) -> None:
    with live_server(settings, clock, projections=False) as server:
        server.registry.open_intake(SECRETARIAT, 2019)
        with server.client() as anonymous:
            ready = ok(anonymous.get("/ready"))
    assert ready["projections"]
    assert all(state["lag_seconds"] > 0 for state in ready["projections"].values())
    assert set(ready) == {"ready", "projections"}


# --- an unknown id looks like a foreign one ----------------------------------------------------

SCOPED = [("commission-fr", Role.NATIONAL_COMMISSION, "FR", None),
          ("city-bremen", Role.CITY, None, city_id("DE", "Bremen"))]


@pytest.mark.parametrize(("name", "role", "country", "city"), SCOPED,
                         ids=[s[0] for s in SCOPED])
def test_a_scoped_token_gets_the_same_answer_for_an_unknown_id_as_for_a_foreign_one(
        api: LiveServer, name: str, role: Role, country: str | None, city: object) -> None:
    api.registry.open_intake(SECRETARIAT, 2019)
    hamburg = admitted_city(api.registry, "Hamburg")
    requests: list[tuple[str, Callable[[httpx.Client, object], httpx.Response]]] = [
        ("read an application", lambda c, a: c.get(f"/applications/{a}")),
        ("endorse", lambda c, a: c.post(f"/applications/{a}/endorsement", json={})),
        ("decline", lambda c, a: c.post(f"/applications/{a}/declination", json={"reason": "r"})),
        ("withdraw", lambda c, a: c.post(f"/applications/{a}/withdrawal", json={"reason": "r"})),
    ]
    city_requests: list[tuple[str, Callable[[httpx.Client, object], httpx.Response]]] = [
        ("read a city", lambda c, i: c.get(f"/cities/{i}")),
        ("read a city's history", lambda c, i: c.get(f"/cities/{i}/history")),
        ("report", lambda c, i: c.post(f"/cities/{i}/reports", json=progress_report())),
    ]
    token = api.token(name, role, country, city)
    count = api.registry.count_events()
    with api.client(token) as client:
        for what, request in requests:
            foreign = request(client, hamburg.application_id)
            unknown = request(client, uuid4())
            assert (foreign.status_code, foreign.json()) == (
                unknown.status_code, unknown.json()), what
            assert foreign.status_code == 403, what
        for what, request in city_requests:
            foreign, unknown = request(client, HAMBURG), request(client, NEVER_APPLIED)
            assert (foreign.status_code, foreign.json()) == (
                unknown.status_code, unknown.json()), what
            assert foreign.status_code == 403, what
    assert api.registry.count_events() == count


def test_the_secretariat_still_learns_that_an_id_is_unknown(api: LiveServer) -> None:
    with api.client(api.token("staff", Role.SECRETARIAT)) as staff:
        assert staff.get(f"/cities/{NEVER_APPLIED}").status_code == 404
        assert staff.get(f"/applications/{uuid4()}").status_code == 404
        assert staff.get(f"/audit/cities/{NEVER_APPLIED}").status_code == 404


def test_a_role_that_may_not_read_the_past_is_refused_the_audit_state_before_its_query_is_read(
        api: LiveServer) -> None:
    api.registry.open_intake(SECRETARIAT, 2019)
    hamburg = admitted_city(api.registry, "Hamburg").city_id
    with api.client(api.token("website", Role.SUBSCRIBER)) as subscriber:
        # A malformed known_at would be a 422: the role is refused first, nothing is looked up.
        answer = subscriber.get(f"/audit/cities/{hamburg}",
                                params={"known_at": "2019-03-15T12:00:00"})
    assert answer.status_code == 403, answer.text
