"""Rebuild and lag benchmark of the projections on a synthetic network, on SQLite and PostgreSQL.

Run from the repository root:  .venv/bin/python benchmarks/rebuild.py [--events 1000000]
              [--backends sqlite,postgres] [--commands 200] [--repeat 1] [--cache DIR]
              [--profile] [--skip-each] [--verify] [--prototype [serial|ablate]]

Per backend, on a fresh store (a temporary SQLite file, or a PostgreSQL schema dropped afterwards):
generate the network (benchmarks/network.py, not timed), then in this one run measure
(1) the raw rate of reading and decoding the whole log with the library, (2) a full rebuild of
every projection as `gnlc projections rebuild` does it (one pass over the log), and each
projection rebuilt alone, (3) the ratio rebuild / raw, (4) the peak memory of each, and
(5) the lag from a committed command to its row in `members`, with `gnlc projections run`
following the log in another process. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import json
import math
import multiprocessing
import os
import pstats
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from admit import DEFAULT_POSTGRES_URL, application_form, country_codes, fresh_store
from eventsourcing.utils import get_topic
from fast_rebuild import FLAGS, parallel_rebuild, prototype_rebuild
from network import generate_at
from psycopg import sql
from sqlalchemy import func, select

from application.clock import FixedClock
from domain.acts import Actor, Role
from infrastructure.bootstrap import (
    build_read_models,
    build_registry,
    build_runner,
    event_store,
    read_model_url,
)
from infrastructure.settings import Settings
from projections.catalogue import PROJECTIONS, fold

PAGE = 5000  # notifications per select_notifications call in the raw read
LAG_YEAR = 2031  # an intake far after the network's, opened for the lag measurement
LAG_CLOCK = datetime(2031, 3, 20, 10, 0, tzinfo=UTC)
POLL_SECONDS = 0.002
LAG_TIMEOUT_SECONDS = 10.0
MAX_PAUSE_SECONDS = 0.1  # between two lag commands
SECRETARIAT = Actor("bench-secretariat", Role.SECRETARIAT)
COMMISSION = Actor("bench-commission", Role.NATIONAL_COMMISSION)
CITY = Actor("bench-city", Role.CITY)
AUDITOR = Actor("bench-auditor", Role.AUDITOR)
TARGET_REBUILD_SQLITE = 50_000
TARGET_RATIO = 1 / 3
TARGET_MEMORY_MB = 500
TARGET_LAG_P99_MS = {"sqlite": 250.0, "postgres": 100.0}


def peak_mb() -> float:
    """ru_maxrss of this process (KiB on Linux): its peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_mb() -> float:
    """The peak resident memory of the largest child process waited for (a rebuild's worker)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# --- child processes ---------------------------------------------------------------------------
# Each measured phase runs in a spawned process of its own, so that its ru_maxrss is its own
# peak (not the generator's, nor another phase's), and every phase starts cold from the store.


def _child(queue: Any, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        queue.put(("ok", target(*args)))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def in_child(target: Callable[..., Any], *args: Any, timeout: float = 3600) -> Any:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, target, args))
    process.start()
    try:
        status, value = queue.get(timeout=timeout)
    finally:
        process.join(timeout=60)
    if status != "ok":
        raise RuntimeError(f"{target.__name__} failed in its process:\n{value}")
    return value


# --- phases ------------------------------------------------------------------------------------


def generate_phase(url: str, events: int, seed: int) -> dict[str, Any]:
    stats = generate_at(url, events, seed)
    return {"summary": stats.summary(), "events": stats.events, "rate": stats.rate,
            "peak_mb": peak_mb()}


def cpu_seconds() -> float:
    """CPU time of this process and of the child processes it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class Clock:
    """Wall and CPU seconds of this process (and its children: the parallel prototype), and the
    machine's load, over a measured phase."""

    def __init__(self) -> None:
        self.load = os.getloadavg()[0]
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def stop(self) -> dict[str, Any]:
        """`peak_mb`: this process's peak plus its largest child's (a rebuild's worker process),
        as if both had peaked at the same moment."""
        return {"seconds": time.perf_counter() - self.wall, "cpu": cpu_seconds() - self.cpu,
                "load": (self.load, os.getloadavg()[0]),
                "peak_mb": peak_mb() + children_peak_mb(),
                "self_peak_mb": peak_mb(), "children_peak_mb": children_peak_mb()}


def raw_read_phase(url: str) -> dict[str, Any]:
    """Every notification, in pages of PAGE, decoded to a domain event by the library's mapper."""
    registry = build_registry(Settings(database_url=url))
    try:
        registry.recorder.max_notification_id()  # connect before the clock starts
        baseline = peak_mb()
        read, start = 0, 1
        clock = Clock()
        while True:
            page = registry.recorder.select_notifications(start, PAGE)
            for notification in page:
                registry.mapper.to_domain_event(notification)
            read += len(page)
            if len(page) < PAGE:
                break
            start = page[-1].id + 1
        measured = clock.stop()
    finally:
        registry.close()
    return {"events": read, "baseline_mb": baseline, **measured}


def rebuild_phase(url: str, groups: Sequence[Sequence[str]], profile_to: str | None = None,
                  verify: bool = False) -> dict[str, Any]:
    """`runner.rebuild(group)` for each group of projections, one after the other; a group is
    folded in one pass over the log (the topics its projections handle), as
    `gnlc projections rebuild` does with all of them."""
    settings = Settings(database_url=url)
    registry = build_registry(settings)
    store = build_read_models(settings)
    runner = build_runner(settings, registry, store)
    profiler = cProfile.Profile() if profile_to else None
    try:
        head = registry.recorder.max_notification_id() or 0
        baseline = peak_mb()
        seconds: dict[str, float] = {}
        clock = Clock()
        for group in groups:
            began = time.perf_counter()
            if profiler:
                profiler.enable()
            position = runner.rebuild(list(group))
            if profiler:
                profiler.disable()
            seconds[", ".join(group)] = time.perf_counter() - began
            assert position >= head, (group, position, head)
        measured = clock.stop()
        rows = table_rows(store)
        digest = table_digests(store) if verify else {}
    finally:
        registry.close()
        store.engine.dispose()
    if profiler and profile_to:
        profiler.dump_stats(profile_to)
    return {"head": head, "groups": seconds, "rows": rows, "digest": digest,
            "baseline_mb": baseline, **measured}


def prototype_phase(url: str, flags: dict[str, bool], verify: bool = True) -> dict[str, Any]:
    """The prototype of benchmarks/fast_rebuild.py, all projections in one pass."""
    settings = Settings(database_url=url)
    registry = build_registry(settings)
    store = build_read_models(settings)
    try:
        head = registry.recorder.max_notification_id() or 0
        baseline = peak_mb()
        clock = Clock()
        flags = dict(flags)
        if flags.pop("parallel"):
            position, peaks = parallel_rebuild(url, flags)
        else:
            position, peaks = prototype_rebuild(registry, store, settings.timezone, **flags), []
        measured = clock.stop()
        # Parallel: the processes' peaks added up (this one only waited).
        measured["peak_mb"] = sum(peaks) if peaks else measured["peak_mb"]
        assert position >= head, (position, head)
        rows = table_rows(store)
        digest = table_digests(store) if verify else {}
    finally:
        registry.close()
        store.engine.dispose()
    return {"head": head, "rows": rows, "digest": digest, "baseline_mb": baseline, **measured}


def table_rows(store: Any) -> dict[str, int]:
    with store.engine.connect() as connection:
        return {t.name: connection.execute(select(func.count()).select_from(t)).scalar_one()
                for t in store.schema.live()}


def rows_digest(rows: Iterable[dict[str, Any]]) -> str:
    """A digest of rows whatever their order (SQL sorts text by the database's collation)."""
    digest = hashlib.sha256()
    for line in sorted(json.dumps(dict(row), default=str, sort_keys=True) for row in rows):
        digest.update(line.encode())
    return digest.hexdigest()[:16]


def table_digests(store: Any) -> dict[str, str]:
    """A digest of each live table's rows (after the measurement: not timed)."""
    with store.engine.connect() as connection:
        return {table.name: rows_digest(connection.execute(select(table)).mappings())
                for table in store.schema.live()}


def reference_phase(url: str) -> dict[str, str]:
    """The digests of the rows a fold in memory of the library's own decoding of the log gives
    (`projections.catalogue.fold` over `registry.read_log`): what every rebuild must store."""
    settings = Settings(database_url=url)
    registry = build_registry(settings)
    try:
        gc.freeze()  # as a rebuild does: without it, the collector rescans the folded rows
        folded = fold((r.event for r in registry.read_log(AUDITOR)), settings.timezone)
    finally:
        registry.close()
    return {table: rows_digest(projection.tables[table].values())
            for projection in folded.values() for table in projection.keys}


# --- lag ---------------------------------------------------------------------------------------


@contextmanager
def runner_process(url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`gnlc projections run` in a process of its own, stopped with SIGTERM afterwards."""
    gnlc = Path(sys.executable).with_name("gnlc")
    with log.open("wb") as out:
        process = subprocess.Popen([str(gnlc), "--database-url", url, "projections", "run"],
                                   stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class MemberPoll:
    """Reads one `members` row's status straight from the read-model database (autocommit)."""

    def __init__(self, url: str) -> None:
        location = event_store(Settings(database_url=url))
        self.sqlite: sqlite3.Connection | None = None
        self.postgres: psycopg.Connection[Any] | None = None
        if location.is_postgres:
            self.postgres = psycopg.connect(location.psycopg_conninfo(), autocommit=True)
            self.query = sql.SQL("SELECT status FROM {}.members WHERE city_id = %s").format(
                sql.Identifier(location.schema))
        else:
            path = read_model_url(location).database
            self.sqlite = sqlite3.connect(str(path), isolation_level=None)

    def status(self, city_id: UUID) -> str | None:
        if self.postgres is not None:
            row = self.postgres.execute(self.query, (str(city_id),), prepare=True).fetchone()
        else:
            assert self.sqlite is not None
            row = self.sqlite.execute("SELECT status FROM members WHERE city_id = ?",
                                      (str(city_id),)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        if self.postgres is not None:
            self.postgres.close()
        if self.sqlite is not None:
            self.sqlite.close()


def wait_caught_up(url: str, head: int, process: subprocess.Popen[bytes],
                   timeout: float = 900) -> float:
    store = build_read_models(Settings(database_url=url))
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"the runner exited with {process.returncode}")
            if all(position >= head for position, _ in store.positions().values()):
                return time.monotonic() - started
            time.sleep(0.2)
    finally:
        store.engine.dispose()
    raise RuntimeError(f"the runner did not catch up to {head} in {timeout} s")


def lag_phase(url: str, commands: int, folder: Path, seed: int) -> dict[str, Any]:
    """Admit `commands` endorsed applications one by one, after a random pause; after each admit
    returns (committed), poll `members` until the city's row says `active`."""
    registry = build_registry(Settings(database_url=url), FixedClock(LAG_CLOCK))
    poll = MemberPoll(url)
    log = folder / "runner.log"
    try:
        registry.open_intake(SECRETARIAT, LAG_YEAR)
        codes = country_codes(1)  # one admission per country: far below the quota of 3
        endorsed = []
        for i in range(commands):
            form = {**application_form(i, codes[i % len(codes)]), "city": f"Lag City {i}",
                    "signed_on": "2031-02-01"}
            submission = registry.submit_application(CITY, form)
            registry.endorse(COMMISSION, submission.application_id)
            endorsed.append(submission)
        head = registry.recorder.max_notification_id() or 0
        with runner_process(url, log) as process:
            catch_up = wait_caught_up(url, head, process)
            lags: list[float] = []
            timeouts = 0
            pause = random.Random(seed)
            for submission in endorsed:
                # Commands arrive at random moments, not in step with the runner's poll cycle.
                time.sleep(pause.uniform(0, MAX_PAUSE_SECONDS))
                registry.admit(SECRETARIAT, submission.application_id)
                committed = time.perf_counter()
                while poll.status(submission.city_id) != "active":
                    if time.perf_counter() - committed > LAG_TIMEOUT_SECONDS:
                        timeouts += 1
                        break
                    time.sleep(POLL_SECONDS)
                else:
                    lags.append(time.perf_counter() - committed)
            failed = process.poll()
    finally:
        poll.close()
        registry.close()
    output = log.read_text(errors="replace") if log.exists() else ""
    if failed is not None or "failed" in output:
        raise RuntimeError(f"the projection runner failed:\n{output}")
    return {"lags": lags, "timeouts": timeouts, "catch_up_seconds": catch_up}


# --- results -----------------------------------------------------------------------------------


def percentile_ms(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] * 1000


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run of median duration (the slower middle one of an even number), with every run's
    seconds and the highest peak memory of all."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["all_seconds"] = [r["seconds"] for r in runs]
    chosen["peak_mb"] = max(r["peak_mb"] for r in runs)
    return chosen


@dataclass
class BackendResult:
    backend: str
    generation: str
    events: int
    raw: dict[str, Any]
    rebuild: dict[str, Any]  # all projections, one pass (`gnlc projections rebuild`)
    each: dict[str, Any] | None  # each projection rebuilt alone, one after the other
    lag: dict[str, Any]
    topics: dict[str, int] = field(default_factory=dict)
    prototypes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def raw_rate(self) -> float:
        return float(self.raw["events"] / self.raw["seconds"])

    @property
    def rebuild_rate(self) -> float:
        return float(self.rebuild["head"] / self.rebuild["seconds"])

    @property
    def ratio(self) -> float:
        return self.rebuild_rate / self.raw_rate

    @property
    def lag_p50(self) -> float:
        return percentile_ms(self.lag["lags"], 50)

    @property
    def lag_p99(self) -> float:
        return percentile_ms(self.lag["lags"], 99)

    def targets(self) -> list[tuple[str, str, bool]]:
        """(target, measured, passed) for this backend."""
        checks = []
        if self.backend == "sqlite":
            checks.append((f"full rebuild >= {TARGET_REBUILD_SQLITE:,} events/s",
                           f"{self.rebuild_rate:,.0f}",
                           self.rebuild_rate >= TARGET_REBUILD_SQLITE))
        checks += [
            ("full rebuild / raw read >= 1/3", f"{self.ratio:.2f}", self.ratio >= TARGET_RATIO),
            (f"peak memory of the full rebuild < {TARGET_MEMORY_MB} MB",
             f"{self.rebuild['peak_mb']:.0f} MB", self.rebuild["peak_mb"] < TARGET_MEMORY_MB),
        ]
        p99, limit = self.lag_p99, TARGET_LAG_P99_MS[self.backend]
        checks.append((f"lag p99 < {limit:.0f} ms", f"{p99:.1f} ms",
                       self.lag["timeouts"] == 0 and p99 < limit))
        return checks


def handled(topics: dict[str, int], names: Sequence[str]) -> int:
    """Events of the log whose topics the projections `names` handle (what a rebuild reads)."""
    wanted = {get_topic(c) for name in names for c in PROJECTIONS[name].handles()}
    return sum(count for topic, count in topics.items() if topic in wanted)


def print_results(results: Sequence[BackendResult]) -> None:
    print("| backend | log events | raw read+decode ev/s | full rebuild ev/s | rebuild/raw "
          "| peak MB raw | peak MB rebuild | lag p50 ms | lag p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.backend} | {r.events:,} | {r.raw_rate:,.0f} | {r.rebuild_rate:,.0f} "
              f"| {r.ratio:.2f} | {r.raw['peak_mb']:.0f} | {r.rebuild['peak_mb']:.0f} "
              f"| {r.lag_p50:.1f} | {r.lag_p99:.1f} |")
    print("\nEvery measured phase (ev/s = log events / wall seconds; CPU = seconds of the "
          "measuring process, the database server's not included; load = 1-minute load "
          "average before -> after):\n")
    print("| backend | phase | events read | wall s | CPU s | log ev/s | peak MB | load |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    every = list(PROJECTIONS)
    for r in results:
        def row(phase: str, read: int | str, m: dict[str, Any], r: BackendResult = r) -> None:
            load = f"{m['load'][0]:.1f} -> {m['load'][1]:.1f}" if "load" in m else ""
            peak = f"{m['peak_mb']:.0f}" if "peak_mb" in m else ""
            cpu = f"{m['cpu']:.1f}" if "cpu" in m else ""
            read = f"{read:,}" if isinstance(read, int) else read
            print(f"| {r.backend} | {phase} | {read} | {m['seconds']:.1f} | {cpu} "
                  f"| {r.events / m['seconds']:,.0f} | {peak} | {load} |")

        row("raw read+decode of the whole log", r.raw["events"], r.raw)
        row(f"**full rebuild**: all {len(every)} projections in one pass",
            handled(r.topics, every), r.rebuild)
        if r.each:
            for group, seconds in r.each["groups"].items():
                row(f"{group} rebuilt alone", handled(r.topics, group.split(", ")),
                    {"seconds": seconds})
            row(f"the {len(every)} rebuilt alone, one after the other", "", r.each)
        for label, m in r.prototypes.items():
            same = "same rows" if m["digest"] == r.rebuild.get("digest") else "ROWS DIFFER"
            row(f"prototype, {label} ({same})", handled(r.topics, every), m)
    print("\n| backend | target | measured | result |")
    print("|---|---|---:|---|")
    for r in results:
        for target, measured, passed in r.targets():
            print(f"| {r.backend} | {target} | {measured} | {'PASS' if passed else 'FAIL'} |")
    for r in results:
        def runs(m: dict[str, Any], events: int = r.events) -> str:
            return ", ".join(f"{events / s:,.0f}" for s in m["all_seconds"])

        print(f"\n{r.backend}: {r.generation}")
        if "verified" in r.rebuild:
            print(f"{r.backend}: verify: the full rebuild's rows "
                  + ("equal" if r.rebuild["verified"] else "DIFFER FROM")
                  + " a fold in memory of the library's decoding of the log")
        print(f"{r.backend}: peak MB of the full rebuild = its process's "
              f"{r.rebuild['self_peak_mb']:.0f} + its worker process's "
              f"{r.rebuild['children_peak_mb']:.0f} (the sum of both peaks)")
        print(f"{r.backend}: raw read runs {runs(r.raw)} ev/s, full rebuild runs "
              f"{runs(r.rebuild)} ev/s (the median reported); lag over {len(r.lag['lags'])} "
              f"admissions ({r.lag['timeouts']} timeouts), the runner caught up in "
              f"{r.lag['catch_up_seconds']:.1f} s after starting; process baseline before "
              f"reading {r.rebuild['baseline_mb']:.0f} MB; rows: "
              + ", ".join(f"{t} {n:,}" for t, n in r.rebuild["rows"].items()))
        print(f"{r.backend}: events by topic: " + ", ".join(
            f"{topic.rsplit(':', 1)[-1]} {n:,}"
            for topic, n in sorted(r.topics.items(), key=lambda item: -item[1])))


# --- stores ------------------------------------------------------------------------------------


def topic_counts(url: str) -> dict[str, int]:
    location = event_store(Settings(database_url=url))
    if location.is_postgres:
        with psycopg.connect(location.psycopg_conninfo()) as connection:
            rows = connection.execute(sql.SQL(
                "SELECT topic, count(*) FROM {}.gnlc_events GROUP BY topic").format(
                sql.Identifier(location.schema))).fetchall()
    else:
        with sqlite3.connect(location.sqlite_path) as connection:
            rows = connection.execute(
                "SELECT topic, count(*) FROM stored_events GROUP BY topic").fetchall()
    return {topic: count for topic, count in rows}


def network_file(cache: Path, events: int, seed: int) -> Path:
    """The cached SQLite network for these arguments and this version of network.py."""
    source = (Path(__file__).with_name("network.py")).read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    return cache / f"network-{events}-{seed}-{digest}.sqlite"


def populate(backend: str, url: str, args: argparse.Namespace) -> str:
    """Write the network into the fresh store (not timed); from the cache where allowed."""
    if backend == "sqlite" and args.cache:
        cached = network_file(Path(args.cache), args.events, args.seed)
        target = event_store(Settings(database_url=url)).sqlite_path
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            building = cached.with_suffix(".building")
            for stale in building.parent.glob(building.name + "*"):
                stale.unlink()
            info = in_child(generate_phase, f"sqlite:///{building}", args.events, args.seed)
            with sqlite3.connect(building) as connection:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            building.rename(cached)
            for leftover in building.parent.glob(building.name + "*"):  # -wal, -shm, .lock
                leftover.unlink()
            note = f"generated into the cache {cached}: {info['summary']}"
        else:
            note = f"copied from the cache {cached} (generated by an earlier run)"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, target)
        return note
    info = in_child(generate_phase, url, args.events, args.seed)
    return f"generated: {info['summary']}; generator peak {info['peak_mb']:.0f} MB"


def prototypes_to_run(args: argparse.Namespace) -> dict[str, dict[str, bool]]:
    if not args.prototype:
        return {}
    variants = {"all changes": dict.fromkeys(FLAGS, True)}
    if args.prototype in ("ablate", "serial"):
        variants["all but parallel"] = {f: f != "parallel" for f in FLAGS}
    if args.prototype == "ablate":
        for flag in FLAGS:
            variants[f"all but {flag}"] = {f: f != flag for f in FLAGS}
    return variants


def run_backend(backend: str, args: argparse.Namespace) -> BackendResult:
    say = lambda text: print(f"[{backend}] {text}", file=sys.stderr, flush=True)  # noqa: E731
    with fresh_store(backend, args.postgres_url) as url:
        say("generating the network (not timed)")
        generation = populate(backend, url, args)
        say(generation)
        topics = topic_counts(url)
        events = sum(topics.values())
        variants = prototypes_to_run(args)
        raws: list[dict[str, Any]] = []
        rebuilds: list[dict[str, Any]] = []
        trials: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
        for attempt in range(args.repeat):  # interleaved, so that all see the same load
            first = attempt == 0
            say(f"raw read+decode of {events:,} events ({attempt + 1}/{args.repeat})")
            raws.append(in_child(raw_read_phase, url))
            say(f"raw: {events / raws[-1]['seconds']:,.0f} events/s")
            say("full rebuild: all projections in one pass, as `gnlc projections rebuild`")
            rebuilds.append(in_child(rebuild_phase, url, [list(PROJECTIONS)], None,
                                     first and (bool(variants) or args.verify)))
            say(f"rebuild: {events / rebuilds[-1]['seconds']:,.0f} events/s")
            for label, flags in variants.items():
                say(f"prototype, {label}")
                trials[label].append(in_child(prototype_phase, url, flags, first))
                say(f"prototype: {events / trials[label][-1]['seconds']:,.0f} events/s")
        raw, rebuild = median_run(raws), median_run(rebuilds)
        rebuild["digest"] = rebuilds[0]["digest"]
        prototypes = {}
        for label, runs in trials.items():
            prototypes[label] = median_run(runs)
            prototypes[label]["digest"] = runs[0]["digest"]
        if args.verify:
            say("verify: a fold in memory of the library's decoding of the log (not timed)")
            reference = in_child(reference_phase, url)
            rebuild["verified"] = reference == rebuild["digest"]
            say("verify: " + ("the rebuilt tables hold exactly its rows" if rebuild["verified"]
                              else f"ROWS DIFFER: {reference} != {rebuild['digest']}"))
        each = None
        if not args.skip_each:
            say("each projection rebuilt alone, one after the other")
            each = in_child(rebuild_phase, url, [[name] for name in PROJECTIONS])
            say("alone: " + ", ".join(f"{g} {s:.1f} s" for g, s in each["groups"].items()))
        profile_to = None
        if args.profile:
            profile_to = str(Path(tempfile.gettempdir()) / f"gnlc-rebuild-{backend}.prof")
            say(f"profiling a full rebuild into {profile_to} (not the measured one)")
            in_child(rebuild_phase, url, [list(PROJECTIONS)], profile_to)
        say(f"lag over {args.commands} admissions, runner in its own process")
        with tempfile.TemporaryDirectory(prefix="gnlc-lag-") as folder:
            lag = lag_phase(url, args.commands, Path(folder), args.seed)
        say(f"lag p50 {percentile_ms(lag['lags'], 50):.1f} ms, "
            f"p99 {percentile_ms(lag['lags'], 99):.1f} ms")
    result = BackendResult(backend, generation, events, raw, rebuild, each, lag, topics,
                           prototypes)
    if profile_to:
        print_profile(backend, profile_to)
    return result


def print_profile(backend: str, path: str) -> None:
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(path, stream=out).sort_stats(order).print_stats(25)
        print(f"\n### cProfile of a full rebuild on {backend}, by {order}\n{out.getvalue()}",
              file=sys.stderr)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="at least this many events in the network (default 1,000,000)")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--commands", type=int, default=200,
                        help="admissions whose lag to `members` is measured (default 200)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--cache", metavar="DIR",
                        help="SQLite only: keep the generated network in DIR and copy it from "
                             "there on later runs (e.g. /tmp/gnlc-bench-cache)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile a full rebuild per backend (printed to stderr)")
    parser.add_argument("--verify", action="store_true",
                        help="check that the full rebuild stored exactly the rows of a fold in "
                             "memory of the library's own decoding of the log")
    parser.add_argument("--skip-each", action="store_true",
                        help="skip the rebuilds of each projection alone")
    parser.add_argument("--repeat", type=int, default=1,
                        help="raw reads and full rebuilds, alternately; the median is reported")
    parser.add_argument("--prototype", nargs="?", const="all", choices=("all", "serial", "ablate"),
                        help="also time the prototype of benchmarks/fast_rebuild.py (`serial`: "
                             "also in one process; `ablate`: also with each change left out)")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results = [run_backend(backend, args) for backend in args.backends]
    cpus, python = multiprocessing.cpu_count(), sys.version.split()[0]
    print(f"\nrebuild benchmark: {args.events:,} events requested, seed {args.seed}, "
          f"{args.commands} lag commands, median of {args.repeat}, cpus={cpus}, "
          f"python {python}\n")
    print_results(results)


if __name__ == "__main__":
    main()
