"""The NATS JetStream relay under crashes and fail-over, against the real server: every event of
the feed is in the stream exactly once, in commit order.

The relay runs as `gnlc relay nats` in a process of its own and is killed with SIGKILL, so nothing
of it gets to clean up; events are written in this process meanwhile, so that writing overlaps
publishing. Afterwards the stream, read back from its first message, must carry exactly the feed's
event ids in position order (its `Nats-Msg-Id`s), with the matching `Gnlc-Position` headers and
subjects: a duplicate, a gap or a swap would show. Each test uses a stream and a subject prefix of
its own, deleted at its end.

The server is `--nats-url` (default nats://127.0.0.1:4222); the tests are skipped when it is
unreachable, unless `--require-nats` (CI), when they fail.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from application.registry import Registry
from infrastructure.bootstrap import build_read_models, build_registry, event_store, lock_dir
from infrastructure.feed.nats_relay import POSITION_HEADER, NatsTarget, RelayPositions
from infrastructure.feed.public_events import Feed
from infrastructure.readmodels.runner import ProjectionLock
from infrastructure.readmodels.tables import ReadModelStore
from infrastructure.settings import Settings
from tests.synthetic import generate

CRASH_EVENTS = 12_000  # written during the crash test (the requirement: at least 10,000)
KILLS = 5
CHUNK_EVENTS = 600  # the writer's steps: generate() writes ~200 events per transaction
BACKLOG = 2000  # the writer stays at most this far ahead of the stream (so writing lasts as long
#                 as publishing); each relay starts with this backlog, and is killed in it
KILL_MARGIN = 500  # a kill falls at least this many messages before the end of the backlog
KILL_JITTER_SECONDS = 0.05  # after the threshold is passed: a random moment of the next publishes
POLL_SECONDS = 0.01
WAIT_SECONDS = 120.0
JOIN_SECONDS = 30.0


# --- the server, the streams and the relay processes -----------------------------------------


@pytest.fixture
def target(nats_url: str) -> Iterator[NatsTarget]:
    """A stream and subject prefix of the test's own; the stream is deleted afterwards."""
    unique = uuid.uuid4().hex[:12]
    chosen = NatsTarget(nats_url, f"GNLC_TEST_{unique}", f"gnlc_test_{unique}.events")
    yield chosen

    async def delete() -> None:
        connection = await nats.connect(nats_url)
        try:
            await connection.jetstream().delete_stream(chosen.stream)
        except NotFoundError:
            pass
        finally:
            await connection.close()

    asyncio.run(delete())


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The relay processes a test starts; any still alive at its end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=JOIN_SECONDS)


@dataclass
class Relays:
    """`gnlc relay nats` processes on one store and one target, and what the test sees of them."""

    database_url: str
    target: NatsTarget
    tmp_path: Path
    started: list[subprocess.Popen[bytes]]
    js: JetStreamContext
    logs: dict[int, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.settings = Settings(database_url=self.database_url)
        self.registry: Registry = build_registry(self.settings)
        self.store: ReadModelStore = build_read_models(self.settings)
        self.positions = RelayPositions(self.store.engine, self.store.schema.metadata.schema)
        location = event_store(self.settings)
        with location.schema_lock():
            self.positions.create()
        self.lock = ProjectionLock(location, lock_dir(location), f"relay-{self.target.name}")

    def start(self, label: str) -> subprocess.Popen[bytes]:
        gnlc = Path(sys.executable).parent / "gnlc"
        assert gnlc.exists(), f"the console script is not installed at {gnlc}"
        log = self.tmp_path / f"{label}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(gnlc), "--database-url", self.database_url, "relay", "nats",
                 "--url", self.target.url, "--stream", self.target.stream,
                 "--subjects", self.target.prefix],
                stdout=output, stderr=subprocess.STDOUT,
                env={**os.environ, "PGAPPNAME": label})
        self.started.append(process)
        self.logs[process.pid] = log
        return process

    async def kill(self, process: subprocess.Popen[bytes]) -> None:
        os.kill(process.pid, signal.SIGKILL)
        code = await asyncio.to_thread(process.wait, JOIN_SECONDS)
        assert code == -signal.SIGKILL, self.logs_of(process)

    async def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM: the relay finishes its publish, releases its lock and exits with 0."""
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, JOIN_SECONDS)
        assert code == 0, self.logs_of(process)

    def logs_of(self, process: subprocess.Popen[bytes]) -> str:
        return self.logs[process.pid].read_text(errors="replace")

    # what the stream holds

    async def messages(self) -> int:
        try:
            return (await self.js.stream_info(self.target.stream)).state.messages
        except NotFoundError:
            return 0

    async def last_position(self) -> int:
        """The Gnlc-Position of the stream's last message (0 when empty)."""
        info = await self.js.stream_info(self.target.stream)
        if not info.state.last_seq:
            return 0
        message = await self.js.get_msg(self.target.stream, seq=info.state.last_seq)
        return int((message.headers or {})[POSITION_HEADER])

    async def read_stream(self) -> list[tuple[str, int, str, int]]:
        """(Nats-Msg-Id, Gnlc-Position, subject, stream sequence) of every message, in order."""
        count = await self.messages()
        subscription = await self.js.subscribe(
            f"{self.target.prefix}.>", stream=self.target.stream, ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL)
        found: list[tuple[str, int, str, int]] = []
        try:
            for _ in range(count):
                message = await subscription.next_msg(timeout=JOIN_SECONDS)
                headers = message.headers or {}
                found.append((headers["Nats-Msg-Id"], int(headers[POSITION_HEADER]),
                              message.subject, message.metadata.sequence.stream))
        finally:
            await subscription.unsubscribe()
        return found

    # what the store holds

    def head(self) -> int:
        return self.registry.recorder.max_notification_id() or 0

    def stored_position(self) -> int:
        return self.positions.get(self.target.name)

    def feed(self) -> list[tuple[str, int, str]]:
        """(id, position, subject) of every event of the feed, in position order."""
        feed, after = Feed(self.registry), 0
        found: list[tuple[str, int, str]] = []
        while True:
            page, after = feed.page(after, 1000)
            if not page:
                return found
            found.extend((e.id, e.position, f"{self.target.prefix}.{e.type}") for e in page)

    def holder(self) -> int | None:
        """The pid (SQLite) or application_name (PostgreSQL) of the relay holding the lock."""
        location = self.lock.location
        if location.is_postgres:
            key = self.lock.key & 0xFFFF_FFFF_FFFF_FFFF
            with psycopg.connect(location.psycopg_conninfo(), autocommit=True) as connection:
                row = connection.execute(
                    "SELECT a.application_name FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                    "AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())",
                    (key >> 32, key & 0xFFFF_FFFF)).fetchone()
            return row[0] if row else None
        # SQLite: an flock on a file beside the store; /proc/locks names the process holding it
        assert self.lock.lock_dir is not None
        path = self.lock.lock_dir / f"{self.lock.name}.lock"
        if not path.exists():
            return None
        inode = path.stat().st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if "FLOCK" in parts and parts[-3].split(":")[-1] == str(inode):
                return int(parts[-4])
        return None

    def close(self) -> None:
        self.registry.close()
        self.store.engine.dispose()


def connected_to_nats(pid: int, url: str) -> bool:
    """Whether process `pid` has a TCP connection to the NATS server's port (Linux /proc)."""
    port = f"{int(url.rsplit(':', 1)[1]):04X}"
    try:
        sockets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except (FileNotFoundError, ProcessLookupError):
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            columns = line.split()
            # remote address:port, state 01 (ESTABLISHED), inode
            if (columns[2].endswith(f":{port}") and columns[3] == "01"
                    and f"socket:[{columns[9]}]" in sockets):
                return True
    return False


@pytest.fixture
def connection(nats_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Client]]:
    """One event loop for the test, with a NATS connection on it."""
    loop = asyncio.new_event_loop()
    client = loop.run_until_complete(nats.connect(nats_url))
    yield loop, client
    loop.run_until_complete(client.close())
    loop.close()


@pytest.fixture
def relays(database_url: str, target: NatsTarget, tmp_path: Path,
           processes: list[subprocess.Popen[bytes]],
           connection: tuple[asyncio.AbstractEventLoop, Client]) -> Iterator[Relays]:
    chosen = Relays(database_url, target, tmp_path, processes, connection[1].jetstream())
    yield chosen
    chosen.close()


# --- waiting and checking --------------------------------------------------------------------


async def until(condition: Callable[[], Awaitable[bool]], what: Callable[[], Awaitable[str]],
                timeout: float = WAIT_SECONDS) -> None:
    """Poll `condition` until it holds; fail with `what()` if it does not within `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"not within {timeout} s: {await what()}")
        await asyncio.sleep(POLL_SECONDS)


async def state(relays: Relays) -> str:
    logs = "; ".join(f"{pid}: {path.read_text(errors='replace')[-2000:]}"
                     for pid, path in relays.logs.items())
    return (f"stream holds {await relays.messages()} messages up to position "
            f"{await relays.last_position()}, the relay stored {relays.stored_position()}, "
            f"head {relays.head()}, lock held by {relays.holder()}; logs {logs}")


async def caught_up(relays: Relays) -> int:
    """Wait until the stream holds every event of the feed and the relay has stored the head;
    return the number of events."""
    expected = len(await asyncio.to_thread(relays.feed))
    head = relays.head()

    async def done() -> bool:
        return await relays.messages() >= expected and relays.stored_position() >= head

    await until(done, lambda: state(relays))
    return expected


async def assert_stream_is_the_feed(relays: Relays) -> int:
    """The stream carries every event of the feed once, in position order; returns the count."""
    expected = await asyncio.to_thread(relays.feed)
    relayed = await relays.read_stream()
    ids = [m[0] for m in relayed]
    duplicated = len(ids) - len(set(ids))
    missing = {e[0] for e in expected} - set(ids)
    assert not duplicated and not missing, (
        f"{duplicated} duplicates, {len(missing)} missing of {len(expected)} events")
    assert [m[:3] for m in relayed] == expected, "the stream is not the feed in position order"
    assert [m[3] for m in relayed] == list(range(1, len(expected) + 1))
    assert relays.stored_position() == relays.head()
    return len(expected)


class Writer:
    """Writes synthetic events in steps, in a worker thread, keeping at most BACKLOG events
    ahead of the stream (a condition, not a pace: it waits for the relay, never for a time)."""

    def __init__(self, relays: Relays, seed: int, tag: str) -> None:
        self.relays, self.seed, self.tag = relays, seed, tag
        self.written = 0

    async def write(self, events: int, backlog: int = BACKLOG) -> None:
        goal = self.written + events
        step = 0
        while self.written < goal:
            ahead = self.written - backlog
            await until(partial(self._relayed, ahead), lambda: state(self.relays))
            step += 1
            self.written += await asyncio.to_thread(
                generate, self.relays.registry, CHUNK_EVENTS, seed=self.seed + step,
                tag=f"{self.tag}-{self.written}", chunk_events=CHUNK_EVENTS // 3)
        # generate() writes a few events more than asked: the goal is reached, not overshot much

    async def _relayed(self, at_least: int) -> bool:
        return at_least <= 0 or await self.relays.messages() >= at_least


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.race
def test_a_relay_killed_five_times_while_10000_events_are_written_publishes_each_once_in_order(
    relays: Relays, connection: tuple[asyncio.AbstractEventLoop, Client],
) -> None:
    """`gnlc relay nats` is killed (SIGKILL) five times at random points while at least 10,000
    events are written and published, and started again each time; the sixth run finishes, and
    the stream holds every event of the feed exactly once, in position order."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    writer = Writer(relays, seed, f"crash-{seed}")
    kills: list[tuple[int, int, int]] = []

    async def scenario() -> None:
        writing = asyncio.create_task(writer.write(CRASH_EVENTS))
        for kill in range(KILLS):
            # While no relay runs, the writer gets BACKLOG events ahead of the stream; a relay
            # starts and is killed at a random point of that backlog, after it has published at
            # least one message, at a random moment after that (events are written meanwhile).
            before = await relays.messages()
            await until(partial(_ahead, writer, relays, BACKLOG), lambda: state(relays))
            relay = relays.start(f"gnlc-relay-{kill}")
            threshold = before + rng.randrange(1, BACKLOG - KILL_MARGIN)
            await until(partial(_reached, relays, threshold, relay), lambda: state(relays))
            assert relay.poll() is None, f"seed {seed}: {relays.logs_of(relay)}"
            await asyncio.sleep(rng.uniform(0, KILL_JITTER_SECONDS))
            await relays.kill(relay)
            at_kill = await relays.messages()
            kills.append((at_kill, await relays.last_position(), relays.stored_position()))
            assert before < at_kill < writer.written and not writing.done(), (
                f"kill {kill + 1} (seed {seed}) was not in the middle of publishing: {kills}, "
                f"{writer.written} events written")
        last = relays.start("gnlc-relay-last")
        await writing
        await caught_up(relays)
        await relays.stop(last)
        relayed = await assert_stream_is_the_feed(relays)
        assert relayed >= CRASH_EVENTS and relayed == writer.written
        # (messages, last position in the stream, position the relay had stored) at each kill;
        # a stored position behind the stream's: killed between an acknowledgement and the store
        unstored = sum(stored < last for _, last, stored in kills)
        print(f"seed {seed}: {relayed} events; at the kills {kills}; {unstored} of {KILLS} kills "
              "between an acknowledgement and the store of the position")

    connection[0].run_until_complete(scenario())


async def _reached(relays: Relays, messages: int, relay: subprocess.Popen[bytes]) -> bool:
    return relay.poll() is not None or await relays.messages() >= messages


async def _ahead(writer: Writer, relays: Relays, events: int) -> bool:
    return writer.written - await relays.messages() >= events


@pytest.mark.race
def test_two_relays_at_once_publish_each_event_once_and_the_standby_takes_over_a_killed_one(
    relays: Relays, connection: tuple[asyncio.AbstractEventLoop, Client],
) -> None:
    """Relays A and B run together: A holds the lock and publishes, B waits. A is killed
    (SIGKILL) in the middle of a backlog; B takes the lock and publishes the rest, and the stream
    holds each event once, in order."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    writer = Writer(relays, seed, f"two-{seed}")
    postgres = event_store(relays.settings).is_postgres

    async def scenario() -> None:
        await writer.write(2000, backlog=10**9)
        first = relays.start("gnlc-relay-a")
        a = "gnlc-relay-a" if postgres else first.pid
        await until(partial(_holds, relays, a, 1), lambda: state(relays))
        second = relays.start("gnlc-relay-b")
        b = "gnlc-relay-b" if postgres else second.pid
        await until(lambda: _true(connected_to_nats(second.pid, relays.target.url)),
                    lambda: state(relays))
        # Both run while events keep coming: A publishes them, B only waits.
        await writer.write(3000)
        await caught_up(relays)
        assert relays.holder() == a and second.poll() is None, await state(relays)

        # A backlog builds up while A is paused (SIGSTOP: its lock and connections stay); A
        # resumes and is killed at a random point of it, while events are still being written.
        os.kill(first.pid, signal.SIGSTOP)
        before = await relays.messages()
        await writer.write(BACKLOG, backlog=10**9)
        os.kill(first.pid, signal.SIGCONT)
        more = asyncio.create_task(writer.write(3000))
        threshold = before + rng.randrange(1, BACKLOG - KILL_MARGIN)
        await until(partial(_reached, relays, threshold, first), lambda: state(relays))
        await asyncio.sleep(rng.uniform(0, KILL_JITTER_SECONDS))
        await relays.kill(first)
        at_kill = await relays.messages()
        assert before < at_kill < writer.written, (
            f"A was not killed in the middle of its backlog (seed {seed}): {at_kill} messages, "
            f"{before} before the backlog, {writer.written} events written")
        await more
        await caught_up(relays)
        assert relays.holder() == b, await state(relays)
        await relays.stop(second)
        relayed = await assert_stream_is_the_feed(relays)
        assert relayed == writer.written
        print(f"seed {seed}: {relayed} events; A killed at {at_kill} messages")

    connection[0].run_until_complete(scenario())


async def _holds(relays: Relays, holder: Any, messages: int) -> bool:
    return relays.holder() == holder and await relays.messages() >= messages


async def _true(value: bool) -> bool:
    return value
