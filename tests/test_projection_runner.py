"""The projection runner under crashes and fail-over: every event counts exactly once.

The runners run in processes of their own and are killed with SIGKILL, so nothing of theirs gets
to clean up: what survives is what they committed. A commit is also interrupted in-process at
each of its statements in turn, which random kills seldom hit. Afterwards the read models must
equal a rebuild from zero (and a fold of the whole log in memory), and the log of committed
batches, written in the same transaction as the rows and the position, must tile the log: each
batch starting right after the one before, the first at 1, the last ending at the head; a batch
applied twice would overlap another, a lost one would leave a gap.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from application.registry import Registry
from domain.applications import CityApplication
from domain.cities import City
from infrastructure.bootstrap import (
    build_read_models,
    build_registry,
    build_runner,
    event_store,
)
from infrastructure.eventstore.log_reader import EventDecoder, LogReader
from infrastructure.eventstore.log_reader import Row as LogRow
from infrastructure.readmodels.runner import (
    ProjectionFailed,
    ProjectionLock,
    ProjectionRunner,
    disjoint_groups,
)
from infrastructure.readmodels.tables import ReadModelStore
from infrastructure.settings import Settings
from projections.applications import ApplicationsProjection
from projections.base import Row
from projections.catalogue import PROJECTIONS, fold
from projections.members import MembersProjection
from tests.conftest import AUDITOR
from tests.synthetic import generate

CRASH_EVENTS = 20_000
KILLS = 5
CRASH_BATCH_SIZE = 250  # small batches: the catch-up commits often and a kill can land anywhere
KILL_JITTER_SECONDS = 0.08  # after the threshold is passed: inside the next batch or its commit
FAILOVER_SECONDS = 5.0
WAIT_SECONDS = 60.0
JOIN_SECONDS = 30.0

TABLES = {table: keys for p in PROJECTIONS.values() for table, keys in p.keys.items()}


# --- a runner in a process of its own --------------------------------------------------------


def _run_projections(database_url: str, batch_size: int, failures: str) -> None:
    """What `gnlc projections run` does, with a batch size of the test's choosing."""
    settings = Settings(database_url=database_url)
    registry = build_registry(settings)
    runner = build_runner(settings, registry, build_read_models(settings), batch_size=batch_size)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def failed(failure: ProjectionFailed) -> None:
        with open(failures, "a", encoding="utf-8") as file:
            file.write(f"{failure}\n")

    try:
        runner.run(stop, on_failure=failed)
    finally:
        registry.close()


@pytest.fixture
def processes() -> Iterator[list[BaseProcess | subprocess.Popen[bytes]]]:
    """The runner processes a test starts; any still alive at its end are killed."""
    started: list[BaseProcess | subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if isinstance(process, subprocess.Popen):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=JOIN_SECONDS)
        elif process.is_alive():
            process.kill()
            process.join(timeout=JOIN_SECONDS)


def start_runner(database_url: str, batch_size: int, failures: Path,
                 started: list[BaseProcess | subprocess.Popen[bytes]]) -> BaseProcess:
    process = multiprocessing.get_context("spawn").Process(
        target=_run_projections, args=(database_url, batch_size, str(failures)),
        name="projection-runner", daemon=True)
    process.start()
    started.append(process)
    return process


def start_cli_runner(database_url: str, application_name: str, log: Path,
                     started: list[BaseProcess | subprocess.Popen[bytes]]
                     ) -> subprocess.Popen[bytes]:
    """`gnlc projections run`; its PostgreSQL connections carry `application_name`."""
    gnlc = Path(sys.executable).parent / "gnlc"
    assert gnlc.exists(), f"the console script is not installed at {gnlc}"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(gnlc), "--database-url", database_url, "projections", "run"],
            stdout=output, stderr=subprocess.STDOUT,
            env={**os.environ, "PGAPPNAME": application_name})
    started.append(process)
    return process


# --- waiting and checking --------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> float:
    """Poll `condition` until it holds; return the moment it did (monotonic). Fails the test with
    `what()` when it does not hold within `timeout` seconds."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what()}")
        pause.wait(0.01)
    return time.monotonic()


def reached(store: ReadModelStore) -> tuple[int, int]:
    """The lowest and highest position of the projections."""
    positions = [position for position, _ in store.positions().values()]
    return min(positions), max(positions)


def failures_of(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def assert_each_event_counted_once(store: ReadModelStore, head: int) -> dict[str, int]:
    """Every projection is at the head, and its committed batches of the live generation tile
    1..head: none overlaps another (an event applied twice), none leaves a gap (one lost).
    Returns the number of batches per projection."""
    counts = {}
    for name, (position, generation) in store.positions().items():
        assert position == head, f"{name} is at {position}, the head is {head}"
        batches = [(first, last) for g, first, last in store.batches(name) if g == generation]
        expected = 1
        for first, last in batches:
            assert first == expected and last >= first, (
                f"{name}: the batch {first}..{last} should have started at {expected}; "
                f"batches: {batches}")
            expected = last + 1
        assert expected == head + 1, f"{name}: the batches end at {expected - 1}, not at {head}"
        counts[name] = len(batches)
    return counts


def _sorted(table: str, rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda row: tuple(str(row[c]) for c in TABLES[table]))


def read_models(store: ReadModelStore) -> dict[str, list[Row]]:
    return {table: _sorted(table, store.rows(table)) for table in TABLES}


def differences(expected: dict[str, list[Row]], actual: dict[str, list[Row]]) -> list[str]:
    """Per table, the rows missing, extra or different (at most three of each, by key)."""
    found = []
    for table, keys in TABLES.items():
        want = {tuple(str(r[c]) for c in keys): r for r in expected[table]}
        have = {tuple(str(r[c]) for c in keys): r for r in actual[table]}
        missing = sorted(want.keys() - have.keys())
        extra = sorted(have.keys() - want.keys())
        changed = sorted(k for k in want.keys() & have.keys() if want[k] != have[k])
        if missing or extra or changed:
            found.append(
                f"{table}: {len(missing)} missing {missing[:3]}, {len(extra)} extra {extra[:3]}, "
                f"{len(changed)} different, e.g. "
                f"{[(want[k], have[k]) for k in changed[:2]]}")
    return found


def assert_read_models_equal_a_rebuild(settings: Settings, registry: Registry,
                                       store: ReadModelStore) -> dict[str, list[Row]]:
    """The live rows equal those a rebuild from zero swaps in, and a fold of the log in memory."""
    live = read_models(store)
    folded = fold((r.event for r in registry.read_log(AUDITOR)), settings.timezone)
    in_memory = {table: _sorted(table, folded[p.name].rows(table))
                 for p in PROJECTIONS.values() for table in p.keys}
    runner = build_runner(settings, registry, store)
    for name in PROJECTIONS:
        runner.rebuild(name)
    rebuilt = read_models(store)
    assert not differences(rebuilt, live), "live rows differ from a rebuild:\n" + "\n".join(
        differences(rebuilt, live))
    assert not differences(in_memory, live), "live rows differ from a fold of the log:\n" + \
        "\n".join(differences(in_memory, live))
    return live


def assert_substantial(live: dict[str, list[Row]], events: int) -> None:
    """The read models hold what the synthetic log makes: every kind of row, in numbers (a city
    takes about seven events, six in ten are admitted, one admission in ten is retracted)."""
    assert len(live["members"]) > events // 10
    assert {r["status"] for r in live["members"]} >= {"applicant", "active", "ended"}
    assert {r["status"] for r in live["applications"]} >= {
        "submitted", "endorsed", "declined", "withdrawn", "admitted", "rejected", "retracted"}
    assert sum(r["admitted"] for r in live["quotas"]) > events // 20
    # Since acts may no longer run backwards (issue 11, item 5), the synthetic log retracts on the
    # day after an admission and only where the ledger allows it: about 1 event in 440, not 1 in
    # 400 as before (36 in 15,873 seen in CI). This bound checks the rows are there, not a rate.
    assert sum(r["retracted"] for r in live["quotas"]) > events // 1000


# --- the tests -------------------------------------------------------------------------------


def run_until(database_url: str, store: ReadModelStore, position: int, failures: Path,
              started: list[Any]) -> BaseProcess:
    """Start a runner with small batches; return it, still running, once every projection has
    reached `position`."""
    runner = start_runner(database_url, CRASH_BATCH_SIZE, failures, started)
    wait_until(lambda: reached(store)[0] >= position or not runner.is_alive()
               or failures_of(failures) != "", WAIT_SECONDS,
               lambda: f"the runner reached {reached(store)}, not {position}")
    assert runner.is_alive(), f"the runner stopped by itself: {failures_of(failures)}"
    assert failures_of(failures) == ""
    return runner


@pytest.mark.race
def test_a_runner_killed_five_times_during_a_catch_up_of_20000_events_counts_each_event_once(
    database_url: str, tmp_path: Path, processes: list[Any],
) -> None:
    """A runner process with small batches is killed (SIGKILL) five times at random points of a
    catch-up of 20,000 events and started again each time; the sixth run finishes."""
    settings = Settings(database_url=database_url)
    registry = build_registry(settings)
    store = build_read_models(settings)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    failures = tmp_path / "failures.txt"
    try:
        written = generate(registry, CRASH_EVENTS, seed=seed)
        head = registry.recorder.max_notification_id() or 0
        assert written >= CRASH_EVENTS and head == written
        sixth = head // (KILLS + 1)

        for kill in range(KILLS):
            before, _ = reached(store)
            # A kill in each of the first five sixths of the log, at a random point of it, after
            # the runner committed at least one batch, and a random moment after that commit.
            threshold = max(before + 1, rng.randrange(kill * sixth + 1, (kill + 1) * sixth))
            runner = run_until(database_url, store, threshold, failures, processes)
            threading.Event().wait(rng.uniform(0, KILL_JITTER_SECONDS))
            assert runner.pid is not None
            os.kill(runner.pid, signal.SIGKILL)
            runner.join(timeout=JOIN_SECONDS)
            assert runner.exitcode == -signal.SIGKILL
            low, high = reached(store)
            assert before < low == high < head, (
                f"kill {kill + 1} (seed {seed}) was not during the catch-up: the positions are "
                f"{low}..{high}, they were {before} at the start, the head is {head}")

        last = run_until(database_url, store, head, failures, processes)
        last.terminate()  # SIGTERM: the runner stops after its batch and releases its locks
        last.join(timeout=JOIN_SECONDS)
        assert last.exitcode == 0

        assert_each_event_counted_once(store, head)
        assert_substantial(assert_read_models_equal_a_rebuild(settings, registry, store), head)
    finally:
        registry.close()
        store.engine.dispose()


def acquire_all(runner: ProjectionRunner) -> ProjectionRunner:
    """The runner, once it holds every projection's lock. (A PostgreSQL advisory lock is freed
    when the server has ended the session of the runner that released it, a moment later.)"""
    def holds_all() -> bool:
        runner.acquire()
        return len(runner.tracked) == len(PROJECTIONS)

    wait_until(holds_all, WAIT_SECONDS, lambda: f"the runner holds only {list(runner.tracked)}")
    return runner


class Crash(BaseException):
    """Stands for the death of the process at one statement of a commit (nothing catches it)."""


def test_a_runner_stopped_at_any_statement_of_its_commit_resumes_without_losing_or_repeating(
    database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The random kills above rarely land between two statements of a commit; here the commit
    is interrupted at each of its statements in turn (position moves and row writes of the four
    projections), and a fresh runner takes over each time, as after a restart."""
    settings = Settings(database_url=database_url)
    registry = build_registry(settings)
    store = build_read_models(settings)
    statements_per_commit = 2 * len(PROJECTIONS)
    calls = {"count": 0, "crash_at": 0}

    def interrupted(method: Callable[..., None]) -> Callable[..., None]:
        def statement(*args: Any, **kwargs: Any) -> None:
            calls["count"] += 1
            if calls["count"] == calls["crash_at"]:
                raise Crash(f"{method.__name__}, statement {calls['count']}")
            method(*args, **kwargs)
        return statement

    try:
        generate(registry, 3000)
        head = registry.recorder.max_notification_id() or 0
        monkeypatch.setattr(ReadModelStore, "_move", interrupted(ReadModelStore._move))
        monkeypatch.setattr(ReadModelStore, "_write", interrupted(ReadModelStore._write))
        crashes = []
        for statement in range(1, statements_per_commit + 1):
            # the `statement`-th statement of the runner's second commit
            calls.update(count=0, crash_at=statements_per_commit + statement)
            runner = acquire_all(build_runner(settings, registry, store, batch_size=100))
            with pytest.raises(Crash) as crash:
                runner.catch_up()
            runner.release()
            crashes.append((str(crash.value), reached(store)))
        calls.update(count=0, crash_at=0)
        runner = acquire_all(build_runner(settings, registry, store, batch_size=100))
        runner.catch_up()
        runner.release()
        monkeypatch.undo()

        assert crashes[-1][1][1] < head, f"the crashes came after the catch-up: {crashes}"
        assert_each_event_counted_once(store, head)
        assert_substantial(assert_read_models_equal_a_rebuild(settings, registry, store), head)
    finally:
        registry.close()
        store.engine.dispose()


class PostgresRunners:
    """Runners started with `gnlc projections run` on one PostgreSQL schema, each labelled by
    the application_name of its sessions, so the test can see which one holds which lock."""

    def __init__(self, postgres_url: str, database_url: str, tmp_path: Path,
                 started: list[Any]) -> None:
        self.postgres_url, self.database_url = postgres_url, database_url
        self.tmp_path, self.started = tmp_path, started
        self.settings = Settings(database_url=database_url)
        self.registry = build_registry(self.settings)
        self.store = build_read_models(self.settings)
        location = event_store(self.settings)
        self.keys = {}
        for name in PROJECTIONS:
            key = ProjectionLock(location, None, name).key & 0xFFFF_FFFF_FFFF_FFFF
            self.keys[(key >> 32, key & 0xFFFF_FFFF)] = name
        self.logs: dict[str, Path] = {}

    def start(self, label: str) -> subprocess.Popen[bytes]:
        self.logs[label] = self.tmp_path / f"{label}.log"
        return start_cli_runner(self.database_url, label, self.logs[label], self.started)

    def head(self) -> int:
        return self.registry.recorder.max_notification_id() or 0

    def caught_up(self) -> bool:
        return reached(self.store)[0] >= self.head()

    def lock_sessions(self) -> dict[str, tuple[str, int] | None]:
        """Per projection: the application_name and backend pid of the session holding its lock."""
        with psycopg.connect(self.postgres_url, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT l.classid::bigint, l.objid::bigint, a.application_name, a.pid "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database "
                "= (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
        sessions: dict[str, tuple[str, int] | None] = dict.fromkeys(PROJECTIONS)
        for classid, objid, application, pid in rows:
            if (classid, objid) in self.keys:
                sessions[self.keys[(classid, objid)]] = (application, pid)
        return sessions

    def holders(self) -> set[str | None]:
        """The labels of the runners holding the projections' locks (None: a free lock)."""
        return {s[0] if s else None for s in self.lock_sessions().values()}

    def listening(self, label: str) -> bool:
        """Whether the runner `label` has started waiting for new events."""
        with psycopg.connect(self.postgres_url, autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = %s AND query LIKE 'LISTEN%%'", (label,)).fetchone()
        return bool(row and row[0])

    def state(self) -> str:
        logs = "; ".join(f"{label}: {path.read_text(errors='replace')}"
                         for label, path in self.logs.items())
        return (f"positions {reached(self.store)}, head {self.head()}, "
                f"locks {self.lock_sessions()}; logs {logs}")

    def wait(self, condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> float:
        return wait_until(condition, timeout, self.state)

    def close(self) -> None:
        self.registry.close()
        self.store.engine.dispose()


@pytest.fixture
def pg_runners(postgres_url: str, postgres_schema_url: str, tmp_path: Path,
               processes: list[Any]) -> Iterator[PostgresRunners]:
    runners = PostgresRunners(postgres_url, postgres_schema_url, tmp_path, processes)
    yield runners
    runners.close()


def stop(process: subprocess.Popen[bytes], runners: PostgresRunners) -> None:
    """SIGTERM: the runner finishes its batch, releases its locks and exits with 0."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=JOIN_SECONDS) == 0, runners.state()


@pytest.mark.race
def test_when_the_active_runner_is_killed_the_standby_takes_over_within_five_seconds(
    pg_runners: PostgresRunners,
) -> None:
    """Two `gnlc projections run`: A holds every lock and does the work, B waits; A is killed
    (SIGKILL) in the middle of a backlog, and B has caught up with the log 5 s later at most."""
    pg = pg_runners
    seed = random.randrange(2**32)
    generate(pg.registry, 5000, seed=seed, tag="before")
    active = pg.start("gnlc-runner-a")
    pg.wait(pg.caught_up)
    pg.wait(lambda: pg.holders() == {"gnlc-runner-a"})

    standby = pg.start("gnlc-runner-b")
    pg.wait(lambda: pg.listening("gnlc-runner-b"))
    # Events keep coming for longer than the standby's retry interval (1 s): A does the work.
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        generate(pg.registry, 1000, seed=seed, tag=f"standby-{time.monotonic_ns()}")
    pg.wait(pg.caught_up)
    assert pg.holders() == {"gnlc-runner-a"}
    assert standby.poll() is None, pg.state()

    # A backlog builds up while A is paused (SIGSTOP: its sessions and locks stay); A resumes
    # and is killed once it has committed its first batch of the backlog (the CLI reads 5000).
    os.kill(active.pid, signal.SIGSTOP)
    before = pg.head()
    generate(pg.registry, 10_000, seed=seed, tag="backlog", chunk_events=1000)
    backlog = pg.head()
    assert pg.holders() == {"gnlc-runner-a"}
    os.kill(active.pid, signal.SIGCONT)
    pg.wait(lambda: reached(pg.store)[0] > before)
    os.kill(active.pid, signal.SIGKILL)
    killed = time.monotonic()
    assert active.wait(timeout=JOIN_SECONDS) == -signal.SIGKILL
    at_kill = reached(pg.store)[0]
    generate(pg.registry, 1000, seed=seed, tag="after")  # more events while B takes over
    assert before < at_kill < backlog, "A finished the backlog before it was killed"

    took_over = pg.wait(pg.caught_up) - killed
    assert took_over <= FAILOVER_SECONDS, f"B caught up {took_over:.1f} s after the kill"
    assert pg.holders() == {"gnlc-runner-b"}

    stop(standby, pg)
    assert_each_event_counted_once(pg.store, pg.head())
    assert_substantial(assert_read_models_equal_a_rebuild(pg.settings, pg.registry, pg.store),
                       pg.head())


@pytest.mark.race
def test_when_a_working_runner_loses_its_locks_both_runners_keep_going_and_each_event_counts_once(
    pg_runners: PostgresRunners,
) -> None:
    """A's lock sessions end (a network cut, an idle_session_timeout) while A itself goes on; the
    standby takes the locks, and for a while two runners may work on the same projections: the
    compare-and-set of the positions must keep every event counted once, and neither runner may
    fail because of the other."""
    pg = pg_runners
    seed = random.randrange(2**32)
    generate(pg.registry, 5000, seed=seed, tag="before")
    first = pg.start("gnlc-runner-a")
    pg.wait(pg.caught_up)
    pg.wait(lambda: pg.holders() == {"gnlc-runner-a"})
    second = pg.start("gnlc-runner-b")
    pg.wait(lambda: pg.listening("gnlc-runner-b"))

    # A's lock sessions end one by one, last projection first; each lock is soon held again (by
    # B, in the opposite order to A's, or by A if it noticed the loss) while A goes on.
    for name in reversed(PROJECTIONS):
        session = pg.lock_sessions()[name]
        assert session is not None and session[0] == "gnlc-runner-a", pg.state()
        with psycopg.connect(pg.postgres_url, autocommit=True) as connection:
            connection.execute("SELECT pg_terminate_backend(%s)", (session[1],))
        pg.wait(lambda n=name, old=session: pg.lock_sessions()[n] not in (None, old))

    started = time.monotonic()
    while time.monotonic() - started < 3.0:  # both runners see every one of these
        generate(pg.registry, 300, seed=seed, tag=f"both-{time.monotonic_ns()}")
    pg.wait(pg.caught_up)
    assert (first.poll(), second.poll()) == (None, None), f"a runner exited: {pg.state()}"
    assert None not in pg.holders(), pg.state()

    stop(first, pg)
    stop(second, pg)
    assert_each_event_counted_once(pg.store, pg.head())
    assert_substantial(assert_read_models_equal_a_rebuild(pg.settings, pg.registry, pg.store),
                       pg.head())


# --- rebuilds: the log read fast, projections folded in processes of their own ---------------


def stored_text(store: ReadModelStore) -> dict[str, list[str]]:
    """Every read-model row as the database stores it (text), in key order: what a rebuild must
    leave byte for byte, whichever way it was made."""
    found = {}
    preparer = store.engine.dialect.identifier_preparer
    with store.engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
        for table, keys in TABLES.items():
            name = preparer.format_table(store.schema.tables[table])
            order = ", ".join(preparer.quote(k) for k in keys)
            if store.engine.dialect.name == "sqlite":
                rows = raw.execute(f"SELECT * FROM {name} ORDER BY {order}").fetchall()
                found[table] = [repr(tuple(r)) for r in rows]
            else:
                with raw.cursor() as cursor:
                    cursor.execute(f"SELECT x::text FROM {name} x ORDER BY {order}")
                    found[table] = [r[0] for r in cursor.fetchall()]
    return found


def rebuilt_in(runner: ProjectionRunner, parallel: bool,
               progress: Callable[[int, int], None] | None = None) -> dict[str, list[str]]:
    runner.parallel_from = 0 if parallel else 10**12
    head = runner.rebuild(list(PROJECTIONS), progress)
    assert head == runner.registry.recorder.max_notification_id()
    return stored_text(runner.store)


def test_a_rebuild_in_two_processes_stores_exactly_the_rows_of_a_rebuild_in_one(
    settings: Settings, registry: Registry,
) -> None:
    """Every table's stored text is the same, and both equal the live rows and a fold of the log
    in memory; each rebuild is a generation of its own, recorded as one batch 1..head."""
    store = build_read_models(settings)
    try:
        head = generate(registry, 3000, seed=11)
        runner = build_runner(settings, registry, store, batch_size=500)
        in_one = rebuilt_in(runner, parallel=False)
        in_two = rebuilt_in(runner, parallel=True)
        assert in_two == in_one
        assert {name: position for name, position in store.positions().items()} == \
            dict.fromkeys(PROJECTIONS, (head, 2))
        assert all(store.batches(name)[-2:] == [(1, 1, head), (2, 1, head)]
                   for name in PROJECTIONS)
        assert_substantial(assert_read_models_equal_a_rebuild(settings, registry, store), head)
    finally:
        store.engine.dispose()


def test_a_rebuild_in_two_processes_overtaken_by_a_live_runner_catches_up_before_it_swaps(
    settings: Settings, registry: Registry,
) -> None:
    """After the rebuild's first batch, new events arrive and a live runner commits them: the
    swap meets a conflict, both processes fold on to the new head, and then it swaps."""
    store = build_read_models(settings)
    try:
        generate(registry, 3000, seed=12)
        raced: list[int] = []

        def overtake(position: int, target: int) -> None:
            if not raced:
                raced.append(position)
                generate(registry, 800, seed=13, tag="overtaking")
                live = build_runner(settings, registry, store)
                acquire_all(live).catch_up()
                live.release()

        runner = build_runner(settings, registry, store, batch_size=500)
        rebuilt = rebuilt_in(runner, parallel=True, progress=overtake)
        head = registry.recorder.max_notification_id() or 0
        assert raced and raced[0] < head
        assert store.positions() == dict.fromkeys(PROJECTIONS, (head, 1))
        assert rebuilt == rebuilt_in(runner, parallel=False)
        assert_read_models_equal_a_rebuild(settings, registry, store)
    finally:
        store.engine.dispose()


class BrokenMembers(MembersProjection):
    """A members projection with a bug: it fails on every report (folded by a worker process,
    which imports it from here)."""

    def _reported(self, e: Any) -> None:
        raise ValueError("report handler is broken")

    handlers = {**MembersProjection.handlers, City.ReportSubmitted: _reported}


def test_a_projection_failing_in_a_rebuild_worker_fails_the_rebuild_and_leaves_the_live_tables(
    settings: Settings, registry: Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = build_read_models(settings)
    try:
        generate(registry, 2000, seed=14)
        runner = build_runner(settings, registry, store, batch_size=500)
        before = rebuilt_in(runner, parallel=False)
        monkeypatch.setitem(PROJECTIONS, "members", BrokenMembers)
        with pytest.raises(ProjectionFailed) as failed:
            rebuilt_in(runner, parallel=True)
        assert failed.value.name == "members" and "ReportSubmitted" in failed.value.topic
        assert "ValueError: report handler is broken" in str(failed.value)
        assert stored_text(store) == before
        assert all(generation == 1 for _, generation in store.positions().values())
    finally:
        store.engine.dispose()


class BrokenApplications(ApplicationsProjection):
    """An applications projection with a bug: it fails on every endorsement (folded here, while
    the worker process still folds `members`)."""

    def _endorsed(self, e: Any) -> None:
        raise ValueError("endorsement handler is broken")

    handlers = {**ApplicationsProjection.handlers, CityApplication.Endorsed: _endorsed}


def test_a_projection_failing_beside_a_busy_worker_fails_the_rebuild_and_stops_the_worker(
    settings: Settings, registry: Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = build_read_models(settings)
    try:
        generate(registry, 2000, seed=17)
        runner = build_runner(settings, registry, store, batch_size=500)
        before = rebuilt_in(runner, parallel=False)
        monkeypatch.setitem(PROJECTIONS, "applications", BrokenApplications)
        with pytest.raises(ProjectionFailed) as failed:
            rebuilt_in(runner, parallel=True)
        assert failed.value.name == "applications" and "Endorsed" in failed.value.topic
        assert stored_text(store) == before
    finally:
        store.engine.dispose()


def test_projections_reading_no_topic_in_common_are_grouped_apart() -> None:
    groups = disjoint_groups([PROJECTIONS[name] for name in PROJECTIONS])
    assert [[cls.name for cls in group] for group in groups] == [
        ["quotas", "applications"], ["members", "deadlines"]]
    assert disjoint_groups([PROJECTIONS["members"]]) == [[PROJECTIONS["members"]]]


# --- the fast decoder ------------------------------------------------------------------------


def _as_library_makes_it(decoder: EventDecoder, row: LogRow) -> None:
    """The decoder's event equals the mapper's: class, attributes, their order and types; or
    both raise the same error."""
    stored = StoredEvent(originator_id=row[2], originator_version=row[3], topic=row[1],
                         state=row[4])
    try:
        expected = decoder.mapper.to_domain_event(stored)
    except Exception as error:
        with pytest.raises(type(error)):
            decoder(row)
        return
    actual = decoder(row)
    assert type(actual) is type(expected)
    assert list(vars(actual).items()) == list(vars(expected).items())
    assert [type(v) for v in vars(actual).values()] == [type(v) for v in vars(expected).values()]


def test_the_fast_read_decodes_every_event_as_the_library_does(registry: Registry) -> None:
    generate(registry, 1500, seed=15)
    head = registry.recorder.max_notification_id() or 0
    notifications = registry.recorder.select_notifications(1, head + 1)
    topics = sorted({n.topic for n in notifications})
    rows = LogReader(registry.recorder).page(1, head, topics)
    assert [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows] == [
        (n.id, n.topic, n.originator_id, n.originator_version, n.state) for n in notifications]
    decoder = EventDecoder(registry.mapper)
    for row in rows:
        _as_library_makes_it(decoder, row)


@pytest.mark.parametrize("state", [
    b'{"a":{"_type_":"uuid_hex","_data_":"0123456789abcdef0123456789abcdef"},"b":1}',
    b'{"a":[{"_type_":"date_iso","_data_":"2020-02-29"}]}',  # nested: decoded by the hook
    b'{"a":{"b":{"_type_":"date_iso","_data_":"2020-02-29"}}}',
    b'{"a":{"_type_":"date_iso","_data_":"2020-02-29","c":1}}',  # three keys: a plain dict
    b'{"a":{"_type_":"date_iso"},"b":"\\"_type_\\""}',
    b'{"_type_":"date_iso","_data_":"2021-01-01"}',  # the whole state is one transcoded value
    b'{"a":{"_type_":"date_iso","_data_":{"_type_":"uuid_hex","_data_":"00"}}}',
    b'{"a":{"_type_":"no_such_type","_data_":"x"}}',
    b'{"a":{"_type_":"date_iso","_data_":"not a date"}}',
    b'{"a":{"_type_":"uuid_hex","_data_":"0123456789abcdef0123456789abcdeg"}}',
    b'{"a":{"_type_":"uuid_hex","_data_":"{0123456789abcdef0123456789abcd}"}}',
    # Integers beyond 64 bits: orjson reads them as floats, json as ints.
    b'{"a":123456789012345678901234567890}',
    b'{"a":18446744073709551616,"b":{"_type_":"date_iso","_data_":"2020-02-29"}}',
    b'{"a":[-9223372036854775809]}',
    b'{"a":1e400,"b":NaN,"c":-Infinity}',  # json reads them, orjson refuses
    b'{"a":1,"class_version":1}',
    b'{"a":"\\ud800"}',  # a lone surrogate
    b'[1,2]',
    b'not json',
])
def test_the_fast_decoder_leaves_to_the_library_what_it_does_not_decode_itself(
    registry: Registry, state: bytes,
) -> None:
    decoder = EventDecoder(registry.mapper)
    originator = uuid.UUID("0123456789abcdef0123456789abcdef")
    for topic in (get_topic(City.Registered), get_topic(CityApplication.Endorsed)):
        _as_library_makes_it(decoder, (1, topic, originator, 1, state))


def test_a_projection_class_a_worker_process_cannot_import_is_rebuilt_in_this_process(
    settings: Settings, registry: Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Members(MembersProjection):  # defined here: a worker process cannot import it
        pass

    store = build_read_models(settings)
    try:
        generate(registry, 1000, seed=16)
        runner = build_runner(settings, registry, store, batch_size=500)
        before = rebuilt_in(runner, parallel=False)
        monkeypatch.setitem(PROJECTIONS, "members", Members)
        assert rebuilt_in(runner, parallel=True) == before
    finally:
        store.engine.dispose()


def _refuse_commits(store: ReadModelStore) -> Callable[[], None]:
    """Make the database refuse every commit of a batch (a trigger raises on the batch row
    written in the commit's transaction) until the returned function is called."""
    schema = store.schema.metadata.schema
    prefix = f'"{schema}".' if schema else ""
    if store.engine.dialect.name == "sqlite":
        statements = [
            "CREATE TABLE refusing (reason TEXT)",
            "INSERT INTO refusing VALUES ('a test')",
            "CREATE TRIGGER refuse BEFORE INSERT ON projection_batches "
            "WHEN EXISTS (SELECT 1 FROM refusing) BEGIN SELECT RAISE(ABORT, 'refused'); END",
        ]
    else:
        statements = [
            f"CREATE TABLE {prefix}refusing (reason text)",
            f"INSERT INTO {prefix}refusing VALUES ('a test')",
            f"CREATE FUNCTION {prefix}refuse() RETURNS trigger AS $$ BEGIN IF EXISTS "
            f"(SELECT 1 FROM {prefix}refusing) THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql",
            f"CREATE TRIGGER refuse BEFORE INSERT ON {prefix}projection_batches "
            f"FOR EACH ROW EXECUTE FUNCTION {prefix}refuse()",
        ]
    with store.engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)

    def allow() -> None:
        with store.engine.begin() as connection:
            connection.exec_driver_sql(f"DELETE FROM {prefix}refusing")
    return allow


def test_a_live_runner_whose_commits_the_database_refuses_retries_from_its_stored_position(
    database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    """Memory holds a batch whose commit failed (its changed rows already handed over): the
    runner must neither stop nor reuse that memory; once the database accepts commits again,
    it resumes from the stored positions and counts each event once."""
    settings = Settings(database_url=database_url)
    registry = build_registry(settings)
    store = build_read_models(settings)
    try:
        generate(registry, 400)
        allow = _refuse_commits(store)
        runner = build_runner(settings, registry, store, batch_size=100)
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop, pytest.fail),
                                  kwargs={"retry_seconds": 0.05}, daemon=True)
        with caplog.at_level("WARNING", logger="gnlc.projections"):
            thread.start()
            try:
                wait_until(lambda: sum("the database failed" in r.getMessage()
                                       for r in caplog.records) >= 3, WAIT_SECONDS,
                           lambda: "the runner did not retry its refused commits")
                assert thread.is_alive()
                assert reached(store) == (0, 0)
                allow()
                generate(registry, 100)  # written while it recovers
                head = registry.recorder.max_notification_id() or 0
                wait_until(lambda: reached(store)[0] >= head, WAIT_SECONDS,
                           lambda: f"the runner reached {reached(store)}, not {head}")
            finally:
                stop.set()
                thread.join(timeout=JOIN_SECONDS)
        assert_each_event_counted_once(store, head)
        assert_read_models_equal_a_rebuild(settings, registry, store)
    finally:
        registry.close()
        store.engine.dispose()
