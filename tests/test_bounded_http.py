"""Bounded work per HTTP request, over real sockets on SQLite and PostgreSQL: live streams per
token, failed authentications per client address, paged lists, bounded replays to the past."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from uuid import uuid4

import httpx
import pytest

from domain.acts import Role
from infrastructure.settings import Settings
from tests.conftest import CITY, SECRETARIAT, SettableClock, admitted_city, application_form
from tests.http_support import ok, refused
from tests.live_server import LiveServer, live_server

WAIT_SECONDS = 30.0


def _until(condition: Any, what: str) -> Any:
    """Poll `condition` until it gives something truthy; fail after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    pause = threading.Event()
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.05)
    return found


@pytest.fixture
def limited(settings: Settings, clock: SettableClock) -> Iterator[LiveServer]:
    """A server allowing 2 streams per token and 3 failed authentications per address, with a
    bucket that does not refill within a test."""
    tight = settings.model_copy(update={
        "streams_per_token": 2, "address_rate_limit": 0.001, "address_rate_burst": 3,
        "stream_heartbeat_seconds": 0.25})
    with live_server(tight, clock, projections=False) as server:
        yield server


def _open_stream(stack: ExitStack, client: httpx.Client) -> httpx.Response:
    return stack.enter_context(client.stream("GET", "/events/stream"))


def _try_stream(stack: ExitStack, client: httpx.Client) -> httpx.Response:
    """A stream request, its body not read (closed with the stack)."""
    response = client.send(client.build_request("GET", "/events/stream"), stream=True)
    stack.callback(response.close)
    return response


# --- live streams per token ----------------------------------------------------------------------

def test_a_token_over_its_open_streams_gets_429_until_one_of_its_clients_disconnects(
    limited: LiveServer,
) -> None:
    reader = limited.token("stream-reader", Role.SUBSCRIBER)
    other = limited.token("other-reader", Role.SUBSCRIBER)
    with limited.client(reader) as client, limited.client(other) as other_client, \
            ExitStack() as streams:
        first = _open_stream(streams, client)
        second = _open_stream(streams, client)
        assert (first.status_code, second.status_code) == (200, 200)

        third = _try_stream(streams, client)  # not read to its end: on 200 it never ends
        assert third.status_code == 429
        third.read()
        problem = refused(third, 429, "rate_limited")
        assert "streams" in problem["detail"]
        assert int(third.headers["Retry-After"]) >= 1
        with other_client.stream("GET", "/events/stream") as elsewhere:
            assert elsewhere.status_code == 200  # the limit is per token

        first.close()  # the client goes away: its slot is freed

        def reopened() -> httpx.Response | None:
            response = _try_stream(streams, client)
            return response if response.status_code == 200 else None

        assert _until(reopened, "a freed stream slot").status_code == 200
        assert _try_stream(streams, client).status_code == 429


# --- failed authentications per client address ---------------------------------------------------

def _unknown_token() -> str:
    return f"gnlc_{uuid4().hex}_not-a-secret"


def test_an_address_sending_unknown_tokens_is_refused_with_429_while_a_valid_token_still_works(
    limited: LiveServer,
) -> None:
    staff = limited.token("uil-coordination", Role.SECRETARIAT)
    with limited.client(staff) as valid:
        assert valid.get("/quotas").status_code == 200  # a client at work before the flood
        answers = []
        for _ in range(10):
            with limited.client(_unknown_token()) as stranger:
                answers.append(stranger.get("/quotas"))
        assert [a.status_code for a in answers] == [401] * 3 + [429] * 7
        refused(answers[-1], 429, "rate_limited")
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert "failed authentications" in answers[-1].json()["detail"]

        assert valid.get("/quotas").status_code == 200


def test_malformed_tokens_count_against_the_address_too(
    limited: LiveServer,
) -> None:
    with limited.client("gnlc_nonsense") as malformed:
        statuses = [malformed.get("/quotas").status_code for _ in range(5)]
    assert statuses == [401] * 3 + [429] * 2


# --- paged lists ---------------------------------------------------------------------------------

def _head(api: LiveServer) -> dict[str, int]:
    return {"min_position": api.registry.recorder.max_notification_id() or 0}


def _pages(client: httpx.Client, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of a list, following next_cursor."""
    pages = [ok(client.get(path, params=params))]
    while pages[-1]["next_cursor"] is not None:
        pages.append(ok(client.get(path, params={**params,
                                                 "cursor": pages[-1]["next_cursor"]})))
    return pages


@pytest.fixture
def network_of_five(api: LiveServer) -> LiveServer:
    """Five members in three countries; Köln's application is still open."""
    api.registry.open_intake(SECRETARIAT, 2019)
    for name, country in (("Hamburg", "DE"), ("Bremen", "DE"), ("Lyon", "FR"),
                          ("Nantes", "FR"), ("Suwon", "KR")):
        admitted_city(api.registry, name, country)
    api.registry.submit_application(CITY, application_form("Köln"))
    return api


@pytest.mark.parametrize(("path", "params", "total"), [
    ("/members", {}, 5),
    ("/applications", {}, 6),
    ("/deadlines", {"today": "2021-04-01"}, 10),
    ("/quotas", {}, 3),
])
def test_a_list_comes_in_pages_of_limit_rows_with_the_total_and_a_cursor_to_the_next(
    network_of_five: LiveServer, path: str, params: dict[str, Any], total: int,
) -> None:
    api = network_of_five
    with api.client(api.token("uil-coordination", Role.SECRETARIAT)) as staff:
        whole = ok(staff.get(path, params={**params, **_head(api)}))
        assert whole["total"] == total and len(whole["items"]) == total
        assert whole["next_cursor"] is None
        pages = _pages(staff, path, {**params, "limit": 2})
    assert [len(p["items"]) for p in pages] == [2] * (total // 2) + [total % 2] * (total % 2)
    assert {p["total"] for p in pages} == {total}
    assert [row for p in pages for row in p["items"]] == whole["items"]


def test_a_cursor_stays_in_place_when_rows_are_added_before_it(
    network_of_five: LiveServer,
) -> None:
    api = network_of_five
    with api.client(api.token("uil-coordination", Role.SECRETARIAT)) as staff:
        first = ok(staff.get("/members", params={"limit": 2, **_head(api)}))
        assert [m["name"] for m in first["items"]] == ["Bremen", "Hamburg"]
        admitted_city(api.registry, "Aachen", "DE")  # sorts before the cursor
        admitted_city(api.registry, "Paris", "FR")  # sorts after it
        rest = _pages(staff, "/members", {"limit": 2, "cursor": first["next_cursor"],
                                          **_head(api)})
    assert [m["name"] for p in rest for m in p["items"]] == [
        "Lyon", "Nantes", "Paris", "Suwon"]
    assert rest[0]["total"] == 7


@pytest.mark.parametrize(("params", "field"), [
    ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
    ({"cursor": "%%%"}, "cursor"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
])
def test_a_cursor_or_limit_the_list_did_not_give_is_invalid_input(
    api: LiveServer, params: dict[str, Any], field: str,
) -> None:
    with api.client(api.token("uil-coordination", Role.SECRETARIAT)) as staff:
        problem = refused(staff.get("/members", params=params), 422, "invalid_input")
    assert problem["field"] == field


def test_a_cursor_of_another_list_is_invalid_input(network_of_five: LiveServer) -> None:
    api = network_of_five
    with api.client(api.token("uil-coordination", Role.SECRETARIAT)) as staff:
        quotas = ok(staff.get("/quotas", params={"limit": 1, **_head(api)}))
        refused(staff.get("/members", params={"cursor": quotas["next_cursor"]}), 422,
                "invalid_input", "cursor")


# --- replays to the past -------------------------------------------------------------------------

def test_a_past_query_beyond_the_replays_running_at_once_gets_503_with_retry_after(
    api: LiveServer,
) -> None:
    from tests.test_bounded_replays import HeldReplay

    services = api.app.app.state.services
    built = services.read_side
    held = HeldReplay(built.registry, built.store, built.runner, built.timezone, built.known_by,
                      replays=1)
    services.read_side = held
    api.registry.open_intake(SECRETARIAT, 2019)
    answered: list[httpx.Response] = []
    with api.client(api.token("uil-coordination", Role.SECRETARIAT)) as staff:
        first = threading.Thread(target=lambda: answered.append(
            staff.get("/members", params={"as_of": "2019-03-31"})))
        first.start()
        try:
            assert held.started.wait(WAIT_SECONDS)
            busy = staff.get("/quotas", params={"as_of": "2019-03-31"})
            refused(busy, 503, "unavailable")
            assert int(busy.headers["Retry-After"]) >= 1
        finally:
            held.go_on.set()
            first.join(WAIT_SECONDS)
        assert [r.status_code for r in answered] == [200]
        assert ok(staff.get("/quotas", params={"as_of": "2019-03-31"}))["total"] == 0


def test_the_failed_authentications_of_addresses_that_stopped_are_forgotten() -> None:
    from infrastructure.http.limits import FailedAuthentications

    now = [0.0]
    failures = FailedAuthentications(rate=1.0, burst=2, clock=lambda: now[0])
    failures.failed("192.0.2.1")
    failures.failed("192.0.2.1")
    failures.failed("192.0.2.2")
    assert failures.refusal("192.0.2.1", "gnlc_x_y") == pytest.approx(1.0)
    now[0] = 1.5  # 192.0.2.2 has its bucket full again, 192.0.2.1 not yet
    failures.limiter.forget_full(keep=10)
    assert len(failures.limiter) == 1
    assert failures.refusal("192.0.2.1", "gnlc_x_y") == 0.0


def test_beyond_the_addresses_kept_the_oldest_are_dropped_and_sweeps_come_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infrastructure.http import limits

    monkeypatch.setattr(limits, "ADDRESSES_KEPT", 3)
    now = [0.0]
    failures = limits.FailedAuthentications(rate=0.1, burst=5, clock=lambda: now[0])
    for n in range(6):  # no bucket refills at this clock: only the cap can drop them
        failures.failed(f"192.0.2.{n}")
    # One sweep at the 4th address (down to 3), none at the 5th and 6th within that second.
    assert len(failures.limiter) == 5
    now[0] = 0.5
    failures.failed("192.0.2.9")
    assert len(failures.limiter) == 6
    now[0] = 1.0
    failures.failed("192.0.2.10")
    assert len(failures.limiter) == 3  # the newest three, their buckets still draining
