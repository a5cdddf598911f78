"""Event feed benchmark: feed throughput over HTTP, and the latency from a commit to an SSE client
and to a NATS JetStream consumer, on SQLite and PostgreSQL.

Run from the repository root:  .venv/bin/python benchmarks/feed.py [--events 100000]
              [--backends sqlite,postgres] [--commands 500] [--rate 20] [--repeat 3]
              [--postgres-url URL] [--nats-url URL] [--profile] [--seed 7]

Per backend, on a fresh store (a temporary SQLite file, or a PostgreSQL schema dropped afterwards):
fill it with `--events` synthetic events (tests/synthetic.py, not timed), create a subscriber token
with `gnlc tokens create`, and serve the API with `gnlc serve --no-projections` in a process of its
own (GNLC_RATE_LIMIT=0). Then measure
(1) feed throughput: GET /events?after=N&limit=1000 from 0 until an empty page (httpx, one
    client, JSON parsed), events/s; for comparison, `Feed.page(after, 1000)` in this process alone,
    and the public form plus the response model's validation and JSON (what the endpoint adds);
(2) relay catch-up: `gnlc relay nats` started on the filled store, events/s until the stream holds
    every event (informative);
(3) latency: `--commands` applications submitted one at a time through the Registry in this
    process, a random pause of 0 to 2/rate s between them (about `--rate` a second); the commit
    time is time.time() right after the use case returns, keyed by `registry.last_position()`; an
    SSE client (GET /events/stream) and a NATS consumer (an ordered push consumer on the relay's
    stream, deliver-new) record when the event of that position arrives. p50/p99 nearest rank.
See benchmarks/README.md ("Event feed").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from admit import DEFAULT_POSTGRES_URL, application_form, country_codes, fresh_store
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.synthetic

from application.clock import FixedClock  # noqa: E402
from domain.acts import Actor, Role  # noqa: E402
from infrastructure.bootstrap import build_read_models, build_registry  # noqa: E402
from infrastructure.feed.nats_relay import POSITION_HEADER, NatsTarget, RelayPositions  # noqa: E402
from infrastructure.feed.public_events import Feed  # noqa: E402
from infrastructure.http.events import FeedPage  # noqa: E402
from infrastructure.settings import Settings  # noqa: E402
from tests.synthetic import generate  # noqa: E402

GNLC = Path(sys.executable).parent / "gnlc"
PAGE = 1000
LATENCY_YEAR = 2031  # an intake after the synthetic log's (2016, 2017)
LATENCY_CLOCK = datetime(2031, 3, 20, 10, 0, tzinfo=UTC)
SECRETARIAT = Actor("bench-secretariat", Role.SECRETARIAT)
CITY = Actor("bench-city", Role.CITY)
ARRIVAL_TIMEOUT_SECONDS = 10.0
START_TIMEOUT_SECONDS = 60.0
CATCH_UP_TIMEOUT_SECONDS = 900.0
TARGET_FEED = 20_000
TARGET_P99_MS = 100.0


def percentile_ms(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] * 1000


def wait_for(condition: Any, timeout: float, what: str) -> None:
    """Poll `condition` until it holds; raise if it does not within `timeout` seconds."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        pause.wait(0.01)


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# --- processes: the server and the relay ----------------------------------------------------


def gnlc(url: str, *args: str) -> str:
    return subprocess.run([str(GNLC), "--database-url", url, *args], check=True,
                          capture_output=True, text=True).stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None
            ) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, stopped with SIGTERM (SIGKILL after 30 s) at the end."""
    with log.open("wb") as output:
        child = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT,
                                 env={**os.environ, **(env or {})})
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=30)


@contextmanager
def served(url: str, folder: Path, token: str) -> Iterator[httpx.Client]:
    """`gnlc serve --no-projections` on a free port; a client with the subscriber token."""
    port = free_port()
    log = folder / "serve.log"
    with process([str(GNLC), "--database-url", url, "serve", "--no-projections",
                  "--port", str(port)], log, {"GNLC_RATE_LIMIT": "0"}) as server, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                         headers={"Authorization": f"Bearer {token}"}) as client:
        def up() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"gnlc serve exited: {log.read_text()}")
            try:
                return client.get("/events", params={"limit": 1}).status_code == 200
            except httpx.TransportError:
                return False
        wait_for(up, START_TIMEOUT_SECONDS, "the server did not answer")
        yield client


@dataclass
class Stream:
    url: str
    name: str
    prefix: str


async def stream_state(target: Stream) -> tuple[int, int]:
    """(messages, Gnlc-Position of the last message) of the relay's stream."""
    connection = await nats.connect(target.url)
    try:
        js = connection.jetstream()
        try:
            info = await js.stream_info(target.name)
        except NotFoundError:
            return 0, 0
        if not info.state.last_seq:
            return 0, 0
        message = await js.get_msg(target.name, seq=info.state.last_seq)
        return info.state.messages, int((message.headers or {})[POSITION_HEADER])
    finally:
        await connection.close()


async def delete_stream(target: Stream) -> None:
    connection = await nats.connect(target.url)
    try:
        await connection.jetstream().delete_stream(target.name)
    except NotFoundError:
        pass
    finally:
        await connection.close()


# --- (1) feed throughput ---------------------------------------------------------------------


def http_pages(client: httpx.Client) -> tuple[int, float, int]:
    """Every event through /events pages of 1,000; (events, seconds, pages)."""
    after, events, pages = 0, 0, 0
    started = time.perf_counter()
    while True:
        response = client.get("/events", params={"after": after, "limit": PAGE})
        response.raise_for_status()
        page = response.json()
        pages += 1
        if not page["events"]:
            return events, time.perf_counter() - started, pages
        events += len(page["events"])
        after = page["next_after"]


def in_process_pages(url: str) -> dict[str, float]:
    """Feed.page alone, then the endpoint's own work on its result: public() and the response
    model (validation and JSON), on a fresh Feed (its subject cache empty, as a new server's)."""
    registry = build_registry(Settings(database_url=url))
    try:
        feed = Feed(registry)
        after, events, page_s, encode_s = 0, 0, 0.0, 0.0
        while True:
            started = time.perf_counter()
            found, after = feed.page(after, PAGE)
            middle = time.perf_counter()
            if not found:
                break
            body = FeedPage.model_validate(
                {"events": [e.public(False) for e in found], "next_after": after}
            ).model_dump_json()
            encode_s += time.perf_counter() - middle
            page_s += middle - started
            events += len(found)
            assert body
        return {"events": events, "page_rate": events / page_s,
                "encode_rate": events / encode_s,
                "both_rate": events / (page_s + encode_s)}
    finally:
        registry.close()


def profile_pages(url: str, top: int = 14) -> str:
    registry = build_registry(Settings(database_url=url))
    try:
        feed = Feed(registry)
        profiler = cProfile.Profile()
        after = 0
        profiler.enable()
        while True:
            found, after = feed.page(after, PAGE)
            if not found:
                break
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
        return out.getvalue()
    finally:
        registry.close()


# --- (3) latency -----------------------------------------------------------------------------


class SseClient:
    """Follows /events/stream in a thread; records when each position arrives."""

    def __init__(self, client: httpx.Client, after: int) -> None:
        self.arrived: dict[int, float] = {}
        self.client, self.after = client, after
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True, name="sse")
        self.thread.start()

    def _follow(self) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the stream ends with the server
            self._read()

    def _read(self) -> None:
        with self.client.stream("GET", "/events/stream", params={"after": self.after},
                                timeout=httpx.Timeout(60, read=None)) as response:
            response.raise_for_status()
            self.opened.set()
            for line in response.iter_lines():
                if line.startswith("id: "):
                    self.arrived[int(line[4:])] = time.time()


class NatsConsumer:
    """An ordered push consumer of new messages on the relay's stream, in a thread of its own."""

    def __init__(self, target: Stream) -> None:
        self.target = target
        self.arrived: dict[int, float] = {}
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.stopping: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),),
                                       daemon=True, name="nats")
        self.thread.start()

    async def _run(self) -> None:
        self.stopping = asyncio.Event()
        connection = await nats.connect(self.target.url)

        async def arrived(message: Any) -> None:
            self.arrived[int(message.headers[POSITION_HEADER])] = time.time()

        subscription = await connection.jetstream().subscribe(
            f"{self.target.prefix}.>", stream=self.target.name, cb=arrived,
            ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
        self.ready.set()
        await self.stopping.wait()
        await subscription.unsubscribe()
        await connection.close()

    def stop(self) -> None:
        if self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(timeout=30)


def latency(url: str, client: httpx.Client, target: Stream, commands: int, rate: float,
            seed: int) -> dict[str, Any]:
    """Submit `commands` applications one at a time; commit-to-arrival at the SSE client and the
    NATS consumer."""
    registry = build_registry(Settings(database_url=url), FixedClock(LATENCY_CLOCK))
    rng = random.Random(seed)
    try:
        registry.open_intake(SECRETARIAT, LATENCY_YEAR)
        head = registry.recorder.max_notification_id() or 0
        wait_for(lambda: relay_position(url, target) >= head, START_TIMEOUT_SECONDS,
                 "the relay did not publish the intake")
        sse = SseClient(client, head)
        consumer = NatsConsumer(target)
        wait_for(lambda: sse.opened.is_set() and consumer.ready.is_set(), START_TIMEOUT_SECONDS,
                 "the SSE client or the NATS consumer did not start")
        codes = country_codes(1)
        committed: dict[int, float] = {}
        pause = threading.Event()
        for i in range(commands):
            pause.wait(rng.uniform(0, 2 / rate))
            form = {**application_form(i, codes[i % len(codes)]), "city": f"Feed City {i}",
                    "signed_on": "2031-02-01"}
            registry.submit_application(CITY, form)
            at = time.time()
            position = registry.last_position()
            assert position is not None
            committed[position] = at

        def all_arrived() -> bool:
            return committed.keys() <= sse.arrived.keys() and \
                committed.keys() <= consumer.arrived.keys()

        with contextlib.suppress(TimeoutError):  # what has not arrived is reported as missing
            wait_for(all_arrived, ARRIVAL_TIMEOUT_SECONDS, "")
        consumer.stop()
        result: dict[str, Any] = {"commands": commands}
        for name, arrived in (("sse", sse.arrived), ("nats", consumer.arrived)):
            lags = [arrived[p] - t for p, t in committed.items() if p in arrived]
            result[name] = {"p50": percentile_ms(lags, 50), "p99": percentile_ms(lags, 99),
                            "max": max(lags) * 1000 if lags else math.nan,
                            "missing": len(committed) - len(lags)}
        return result
    finally:
        registry.close()


# --- one backend -----------------------------------------------------------------------------


@dataclass
class BackendResult:
    backend: str
    events: int
    fill_rate: float
    http_runs: list[float]
    pages: int
    in_process: dict[str, float]
    relay_rate: float
    latency: dict[str, Any]
    load: str
    profile: str = ""

    @property
    def http_rate(self) -> float:
        return sorted(self.http_runs)[len(self.http_runs) // 2]


def run_backend(backend: str, args: argparse.Namespace) -> BackendResult:
    loads = [load()]
    with fresh_store(backend, args.postgres_url) as url, \
            tempfile.TemporaryDirectory(prefix="gnlc-feed-") as folder_name:
        folder = Path(folder_name)
        registry = build_registry(Settings(database_url=url))
        started = time.perf_counter()
        written = generate(registry, args.events, seed=args.seed, chunk_events=4000)
        fill_rate = written / (time.perf_counter() - started)
        registry.close()
        print(f"[{backend}] {written:,} events written ({fill_rate:,.0f}/s)", file=sys.stderr)
        token = json.loads(gnlc(url, "tokens", "create", "--role", "subscriber",
                                "--name", "bench", "--json"))["token"]
        unique = uuid.uuid4().hex[:10]
        target = Stream(args.nats_url, f"GNLC_BENCH_{unique}", f"gnlc_bench_{unique}.events")
        try:
            with served(url, folder, token) as client:
                runs = []
                for _ in range(args.repeat):
                    events, seconds, pages = http_pages(client)
                    runs.append(events / seconds)
                    print(f"[{backend}] /events: {events:,} events in {pages} pages, "
                          f"{seconds:.2f} s, {events / seconds:,.0f}/s", file=sys.stderr)
                in_process = in_process_pages(url)
                print(f"[{backend}] in process: {in_process}", file=sys.stderr)
                profile = profile_pages(url) if args.profile else ""
                loads.append(load())

                with process([str(GNLC), "--database-url", url, "relay", "nats", "--url",
                              args.nats_url, "--stream", target.name, "--subjects",
                              target.prefix], folder / "relay.log"):
                    head = events_head(url)
                    wait_for(lambda: asyncio.run(stream_state(target))[0] > 0,
                             START_TIMEOUT_SECONDS, "the relay did not start")
                    started = time.perf_counter()  # from its first message: not its start-up
                    first = asyncio.run(stream_state(target))[0]
                    wait_for(lambda: relay_position(url, target) >= head,
                             CATCH_UP_TIMEOUT_SECONDS, "the relay did not catch up")
                    relay_rate = (events - first) / (time.perf_counter() - started)
                    assert asyncio.run(stream_state(target))[0] == events
                    print(f"[{backend}] relay caught up: {relay_rate:,.0f} events/s",
                          file=sys.stderr)
                    lags = latency(url, client, target, args.commands, args.rate, args.seed)
                    print(f"[{backend}] latency: {lags}", file=sys.stderr)
                loads.append(load())
        finally:
            asyncio.run(delete_stream(target))
        return BackendResult(backend, written, fill_rate, runs, pages, in_process, relay_rate,
                             lags, " → ".join(loads), profile)


def relay_position(url: str, target: Stream) -> int:
    """The position the relay has stored (after JetStream acknowledged everything before it)."""
    store = build_read_models(Settings(database_url=url))
    try:
        positions = RelayPositions(store.engine, store.schema.metadata.schema)
        positions.create()
        return positions.get(NatsTarget(target.url, target.name, target.prefix).name)
    finally:
        store.engine.dispose()


def events_head(url: str) -> int:
    registry = build_registry(Settings(database_url=url))
    try:
        return registry.recorder.max_notification_id() or 0
    finally:
        registry.close()


def print_results(results: Sequence[BackendResult], args: argparse.Namespace) -> None:
    print("| backend | events | /events pages of 1,000 ev/s | Feed.page alone ev/s "
          "| + public form, model, JSON ev/s | relay catch-up ev/s | SSE p50 ms | SSE p99 ms "
          "| NATS p50 ms | NATS p99 ms | missing | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        sse, nats_ = r.latency["sse"], r.latency["nats"]
        print(f"| {r.backend} | {r.events:,} | {r.http_rate:,.0f} "
              f"| {r.in_process['page_rate']:,.0f} | {r.in_process['both_rate']:,.0f} "
              f"| {r.relay_rate:,.0f} | {sse['p50']:.1f} | {sse['p99']:.1f} "
              f"| {nats_['p50']:.1f} | {nats_['p99']:.1f} "
              f"| {sse['missing']} / {nats_['missing']} | {r.load} |")
    print()
    print("/events runs (ev/s): " + "; ".join(
        f"{r.backend} " + ", ".join(f"{x:,.0f}" for x in r.http_runs) for r in results))
    print(f"latency: {args.commands} commands at about {args.rate:g}/s; max SSE / NATS ms: "
          + "; ".join(f"{r.backend} {r.latency['sse']['max']:.1f} / "
                      f"{r.latency['nats']['max']:.1f}" for r in results))
    print()
    print("| backend | target | measured | result |")
    print("|---|---|---:|---|")
    for r in results:
        print(f"| {r.backend} | feed ≥ {TARGET_FEED:,} events/s | {r.http_rate:,.0f} "
              f"| {'PASS' if r.http_rate >= TARGET_FEED else '**FAIL**'} |")
        if r.backend == "postgres":
            for name in ("sse", "nats"):
                p99 = r.latency[name]["p99"]
                ok = p99 < TARGET_P99_MS and r.latency[name]["missing"] == 0
                print(f"| {r.backend} | {name.upper()} p99 < {TARGET_P99_MS:.0f} ms "
                      f"| {p99:.1f} ms | {'PASS' if ok else '**FAIL**'} |")
    for r in results:
        if r.profile:
            print(f"\ncProfile of Feed.page over the whole log, {r.backend}:\n```\n"
                  f"{r.profile}```")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="commands a second (about)")
    parser.add_argument("--repeat", type=int, default=3, help="/events passes; median reported")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--profile", action="store_true", help="cProfile of Feed.page")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = [run_backend(b.strip(), args) for b in args.backends.split(",") if b.strip()]
    print_results(results, args)


if __name__ == "__main__":
    main()
