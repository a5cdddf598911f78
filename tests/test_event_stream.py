"""The live stream (`GET /events/stream`, Server-Sent Events) over real sockets, both backends.

Each message's `id:` is its log position; a client that reconnects with `Last-Event-ID` resumes
after it. The server here sends heartbeats every quarter second (`stream_heartbeat_seconds`), so a
client waiting for the end of a test never waits long.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.acts import Role
from infrastructure.settings import Settings
from tests.conftest import SettableClock
from tests.live_server import LiveServer, live_server
from tests.synthetic import generate
from tests.test_feed import feed_positions, log_head, membership_story, read_feed

HEARTBEAT_SECONDS = 0.25
STREAM_TIMEOUT = 120.0
SLOW_CLIENT_EVENTS = 15_000  # about 9 MB of messages: more than any socket buffer holds


@dataclass
class Message:
    id: str | None = None
    event: str | None = None
    data: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        assert self.data is not None
        decoded: dict[str, Any] = json.loads(self.data)
        return decoded


class SseParser:
    """A text/event-stream decoder: a message counts only once its blank line has arrived."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, chunk: bytes) -> list[Message]:
        self.buffer += chunk
        messages = []
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            message = Message()
            for line in block.decode("utf-8").split("\n"):
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if not name:
                    message.comments.append(value)
                elif name == "data":
                    message.data = value if message.data is None else f"{message.data}\n{value}"
                elif name in ("id", "event"):
                    setattr(message, name, value)
            messages.append(message)
        return messages


def stream_messages(response: httpx.Response) -> Iterator[Message]:
    parser = SseParser()
    for chunk in response.iter_raw():
        yield from parser.feed(chunk)


def read_events(response: httpx.Response, until: Callable[[list[dict[str, Any]]], bool]
                ) -> list[dict[str, Any]]:
    """The events of an open stream, checked against their SSE fields, until `until` holds."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + STREAM_TIMEOUT
    for message in stream_messages(response):
        if message.id is not None:
            event = message.json()
            assert event["position"] == int(message.id) and event["type"] == message.event
            events.append(event)
        if until(events):
            return events
        assert time.monotonic() < deadline, f"the stream stalled after {len(events)} events"
    pytest.fail(f"the stream ended after {len(events)} events")


def through(position: int) -> Callable[[list[dict[str, Any]]], bool]:
    """Until the event at `position` has arrived."""
    return lambda seen: bool(seen) and seen[-1]["position"] >= position


@pytest.fixture
def stream_api(settings: Settings, clock: SettableClock) -> Iterator[LiveServer]:
    quick = settings.model_copy(update={"stream_heartbeat_seconds": HEARTBEAT_SECONDS})
    with live_server(quick, clock, projections=False) as server:
        yield server


def subscriber(api: LiveServer, name: str = "stream-reader") -> httpx.Client:
    return api.client(api.token(name, Role.SUBSCRIBER))


class Writer(threading.Thread):
    """Writes the log in many small saves, issuing tokens in between (positions the feed skips)."""

    def __init__(self, api: LiveServer, batches: int, batch_events: int) -> None:
        super().__init__(name="stream-writer", daemon=True)
        self.api, self.batches, self.batch_events = api, batches, batch_events
        self.last_position: int | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            for batch in range(self.batches):
                generate(self.api.registry, self.batch_events, seed=batch, tag=f"sse-{batch}",
                         chunk_events=8)
                if batch % 7 == 3:
                    self.api.token(f"issued-while-streaming-{batch}", Role.AUDITOR)
            self.last_position = feed_positions(self.api.registry)[-1]
        except BaseException:
            self.error = traceback.format_exc()
            self.last_position = -1


# --- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [7, 2024])
def test_a_client_cut_off_at_random_points_and_resuming_with_last_event_id_gets_every_event_once(
    stream_api: LiveServer, seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(seed)
    writer = Writer(stream_api, batches=30, batch_events=40)
    received: list[dict[str, Any]] = []
    last: int | None = None
    connections = cut_mid_message = 0
    deadline = time.monotonic() + STREAM_TIMEOUT

    def finished() -> bool:
        return writer.last_position is not None and last is not None \
            and last >= writer.last_position

    with subscriber(stream_api) as client:
        writer.start()
        while not finished():
            assert time.monotonic() < deadline, f"{len(received)} events after {connections}"
            assert writer.error is None, writer.error
            # As a browser's EventSource: the same URL again, with the last id it received.
            headers = {"Last-Event-ID": str(last)} if last is not None else {}
            budget = rng.choice([rng.randint(1, 400), rng.randint(400, 8000),
                                 rng.randint(8000, 120_000)])  # bytes before the cut
            with client.stream("GET", "/events/stream", params={"after": 0},
                               headers=headers) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                connections += 1
                parser = SseParser()
                for chunk in response.iter_raw():
                    taken = chunk[:budget]
                    budget -= len(taken)
                    for message in parser.feed(taken):
                        if message.id is not None:
                            event = message.json()
                            assert event["position"] == int(message.id)
                            assert event["type"] == message.event
                            received.append(event)
                            last = int(message.id)
                    if budget <= 0 or finished():
                        cut_mid_message += bool(parser.buffer)
                        break
        writer.join(timeout=STREAM_TIMEOUT)
    assert writer.error is None, writer.error

    positions = [e["position"] for e in received]
    assert positions == feed_positions(stream_api.registry), "every event once, in log order"
    assert len({e["id"] for e in received}) == len(received)
    assert connections >= 10 and cut_mid_message >= 1, (connections, cut_mid_message)
    # A client gone is not written to on and on (asyncio logs each write to a closed socket).
    assert "socket.send() raised exception" not in caplog.text


def test_a_stream_without_after_or_last_event_id_starts_at_the_head(
    stream_api: LiveServer, clock: SettableClock
) -> None:
    registry = stream_api.registry
    generate(registry, 300, seed=1, tag="before")
    head = log_head(registry)
    with subscriber(stream_api) as client, client.stream("GET", "/events/stream") as response:
        assert response.status_code == 200
        membership_story(registry, clock)  # written after the stream started
        new = [p for p in feed_positions(registry) if p > head]
        events = read_events(response, through(new[-1]))
    assert [e["position"] for e in events] == new
    assert events[0]["type"] in ("intake_calendar.created", "intake.opened")


def test_a_stream_resumes_from_after_and_last_event_id_wins_over_after(
    stream_api: LiveServer, clock: SettableClock
) -> None:
    membership_story(stream_api.registry, clock)
    positions = feed_positions(stream_api.registry)
    middle = positions[len(positions) // 2]
    with subscriber(stream_api) as client:
        with client.stream("GET", "/events/stream", params={"after": middle}) as response:
            events = read_events(response, through(positions[-1]))
        assert [e["position"] for e in events] == positions[len(positions) // 2 + 1:]
        with client.stream("GET", "/events/stream", params={"after": 0},
                           headers={"Last-Event-ID": str(positions[-3])}) as response:
            events = read_events(response, through(positions[-1]))
        assert [e["position"] for e in events] == positions[-2:]
        for bad in ("abc", "-1", "1.5"):
            response = client.get("/events/stream", headers={"Last-Event-ID": bad})
            assert response.status_code == 422, response.text
            assert response.json()["field"] == "Last-Event-ID"


def test_a_filtered_stream_carries_the_same_events_as_the_filtered_feed(
    stream_api: LiveServer, clock: SettableClock
) -> None:
    told = membership_story(stream_api.registry, clock)
    filters = [{"types": "membership.started,membership.ended"}, {"country": "FR"},
               {"city": str(told["lyon"].city_id), "types": "membership.retracted"}]
    with subscriber(stream_api) as client:
        for where in filters:
            expected = read_feed(client, **where)
            assert expected, where
            with client.stream("GET", "/events/stream", params={"after": 0, **where}
                               ) as response:
                events = read_events(response, through(expected[-1]["position"]))
            assert events == expected, where


def test_a_quiet_stream_sends_heartbeat_comments(stream_api: LiveServer) -> None:
    generate(stream_api.registry, 50, seed=3, tag="quiet")
    with subscriber(stream_api) as client, client.stream("GET", "/events/stream") as response:
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-cache"
        messages = []
        for message in stream_messages(response):
            messages.append(message)
            if len(messages) == 3:
                break
    assert [m.comments for m in messages] == [["heartbeat"]] * 3
    assert all(m.id is None and m.data is None for m in messages)


def test_the_default_heartbeat_is_fifteen_seconds() -> None:
    assert Settings.model_fields["stream_heartbeat_seconds"].default == 15.0


def test_a_client_that_stops_reading_does_not_hold_up_another_clients_events(
    stream_api: LiveServer
) -> None:
    registry = stream_api.registry
    start = log_head(registry)
    token = stream_api.token("slow-and-fast", Role.SUBSCRIBER)
    auth = {"Authorization": f"Bearer {token}"}
    # The slow client's socket buffers 64 KiB (not the many MB Linux would grow it to), and it
    # reads nothing until the fast one is done.
    small_window = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)])
    with httpx.Client(base_url=stream_api.url, headers=auth, transport=small_window,
                      timeout=STREAM_TIMEOUT) as slow_client, \
            slow_client.stream("GET", "/events/stream", params={"after": start}) as slow, \
            httpx.Client(base_url=stream_api.url, headers=auth,
                         timeout=STREAM_TIMEOUT) as fast_client, \
            fast_client.stream("GET", "/events/stream", params={"after": start}) as fast:
        assert slow.status_code == fast.status_code == 200
        written: list[int] = []
        flood = threading.Thread(target=lambda: written.append(generate(
            registry, SLOW_CLIENT_EVENTS, seed=5, tag="flood", chunk_events=500)), daemon=True)
        flood.start()
        flood.join(timeout=STREAM_TIMEOUT)
        assert written, "the writer did not finish"
        expected = [p for p in feed_positions(registry) if p > start]

        fast_events = read_events(fast, through(expected[-1]))
        assert [e["position"] for e in fast_events] == expected
        assert _unsent_bytes(stream_api.url, slow) > 0, "the slow client was not held up"

        # Now it reads on: it too gets everything, once.
        slow_events = read_events(slow, through(expected[-1]))
        assert [e["position"] for e in slow_events] == expected


def _unsent_bytes(server_url: str, response: httpx.Response) -> int:
    """What the server's socket still holds for this client (Linux: /proc/net/tcp), once > 0."""
    client_port = response.extensions["network_stream"].get_extra_info("socket").getsockname()[1]
    server_port = int(server_url.rsplit(":", 1)[1])
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    deadline = time.monotonic() + STREAM_TIMEOUT
    while time.monotonic() < deadline:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                unsent = int(fields[4].split(":")[0], 16)
                if unsent > 0:
                    return unsent
        threading.Event().wait(0.01)  # poll the kernel's table again, until the deadline
    return 0

