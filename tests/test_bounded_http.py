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
from tests.conftest import SettableClock
from tests.http_support import refused
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

        third = client.get("/events/stream")
        problem = refused(third, 429, "rate_limited")
        assert "streams" in problem["detail"]
        assert int(third.headers["Retry-After"]) >= 1
        with other_client.stream("GET", "/events/stream") as elsewhere:
            assert elsewhere.status_code == 200  # the limit is per token

        first.close()  # the client goes away: its slot is freed

        def reopened() -> httpx.Response | None:
            response = client.send(client.build_request("GET", "/events/stream"), stream=True)
            if response.status_code == 200:
                streams.callback(response.close)
                return response
            response.close()
            return None

        assert _until(reopened, "a freed stream slot").status_code == 200
        refused(client.get("/events/stream"), 429, "rate_limited")


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
