"""Benchmark of the audit hash chain: what it costs admissions, and how fast the log verifies.

Run from the repository root:  .venv/bin/python benchmarks/audit.py [--n 300] [--repeat 5]
                                  [--clients 4] [--events 100000] [--backends sqlite,postgres]
                                  [--profile]

1. Admissions (`Registry.admit`, the use case) with the chain and without it, in the same run,
   alternating which goes first: "without" is the project's recorder with the chain step skipped
   (same schema, same one-query reads), so the difference is the chain alone.
2. `verify()` (what `gnlc audit verify` runs) over at least `--events` events written by
   tests/synthetic.py: events per second, and how much of it is reading the two tables.

See benchmarks/README.md ("Audit").
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import pstats
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from admit import (
    CLOCK,
    DEFAULT_POSTGRES_URL,
    SECRETARIAT,
    Result,
    admit_all,
    country_codes,
    endorsed_applications,
    fresh_store,
    run_workers,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.synthetic

from application.registry import Registry  # noqa: E402
from infrastructure.audit.log import StoredLog, verify  # noqa: E402
from infrastructure.bootstrap import build_data_keys, build_registry, initialise  # noqa: E402
from infrastructure.eventstore.location import EventStoreLocation  # noqa: E402
from infrastructure.eventstore.recorders import (  # noqa: E402
    PostgresRegistryRecorder,
    SQLiteRegistryRecorder,
)
from infrastructure.settings import Settings  # noqa: E402
from tests.synthetic import generate  # noqa: E402

# --- the registry without the chain ---------------------------------------------------------------


class UnchainedSQLiteRecorder(SQLiteRegistryRecorder):
    """The project's SQLite recorder, the chain step skipped."""

    def _insert_events(self, c: Any, stored_events: Any, **kwargs: Any) -> Any:
        return SQLiteApplicationRecorder._insert_events(self, c, stored_events, **kwargs)


class UnchainedPostgresRecorder(PostgresRegistryRecorder):
    """The project's PostgreSQL recorder, the chain step skipped."""

    def _fetch_ids_after_insert_events(self, curs: Any, stored_events: Any, **kwargs: Any) -> Any:
        return PostgresApplicationRecorder._fetch_ids_after_insert_events(
            self, curs, stored_events, **kwargs)


def open_registry(url: str, chain: bool) -> Registry:
    """A registry on the store, with the chain (`build_registry`) or without; warmed by a read."""
    settings = Settings(database_url=url)
    if chain:
        registry = build_registry(settings, CLOCK)
    else:
        initialise(settings)
        location = EventStoreLocation.from_url(url, settings.lock_timeout_seconds)
        plain = UnchainedPostgresRecorder if location.is_postgres else UnchainedSQLiteRecorder
        env = {**location.library_env(create_table=False),  # both names: GNLC_ is read first
               "APPLICATION_RECORDER_TOPIC": get_topic(plain),
               "GNLC_APPLICATION_RECORDER_TOPIC": get_topic(plain)}
        registry = Registry(env=env, clock=CLOCK, timezone=settings.timezone,
                            personal_data=build_data_keys(settings))
    registry.intakes(SECRETARIAT)
    return registry


def chained_events(url: str) -> tuple[int, int]:
    """Events stored and chain links stored."""
    log = StoredLog(EventStoreLocation.from_url(url))
    with log.connect() as connection:
        events = connection.execute(f"SELECT count(*) FROM {log.events}").fetchone()[0]
        links = connection.execute(f"SELECT count(*) FROM {log.chain}").fetchone()[0]
    return int(events), int(links)


# --- admissions ---------------------------------------------------------------------------------


def label(chain: bool) -> str:
    return "with chain" if chain else "without chain"


def admit_one_client(backend: str, url: str, n: int, chain: bool) -> Result:
    ids = endorsed_applications(url, n, country_codes(1))
    before = chained_events(url)
    registry = open_registry(url, chain)
    try:
        started = time.perf_counter()
        latencies = admit_all(registry, ids)
        seconds = time.perf_counter() - started
    finally:
        registry.close()
    check_chain(url, before, chain)
    return Result(backend, f"admit, 1 client, {label(chain)}", n, seconds, latencies)


def admit_worker(url: str, chain: bool, ids: list[UUID], barrier: Any, results: Any) -> None:
    try:
        registry = open_registry(url, chain)
        barrier.wait(timeout=300)
        started = time.monotonic()  # CLOCK_MONOTONIC: comparable between processes
        latencies = admit_all(registry, ids)
        finished = time.monotonic()
        registry.close()
        results.put((started, finished, latencies))
    except BaseException:
        results.put(traceback.format_exc())


def admit_clients(backend: str, url: str, n: int, clients: int, chain: bool) -> Result:
    ids = endorsed_applications(url, n, country_codes(clients))
    before = chained_events(url)
    seconds, latencies = run_workers(
        admit_worker, [(url, chain, ids[k::clients]) for k in range(clients)])
    check_chain(url, before, chain)
    return Result(backend, f"admit, {clients} clients, {label(chain)}", n, seconds, latencies)


def check_chain(url: str, before: tuple[int, int], chain: bool) -> None:
    """The timed admissions wrote chain links if and only if the chain was on."""
    events, links = chained_events(url)
    written = events - before[0]
    assert written > 0 and links - before[1] == (written if chain else 0), (before, events, links)


def admissions(backend: str, args: argparse.Namespace) -> list[tuple[Result, Result]]:
    """(with, without) pairs per case: the median runs of `--repeat` alternating runs."""
    cases = [lambda url, chain: admit_one_client(backend, url, args.n, chain)]
    if args.clients > 1:
        cases.append(lambda url, chain: admit_clients(backend, url, args.n, args.clients, chain))
    pairs = []
    for case in cases:
        runs: dict[bool, list[Result]] = {True: [], False: []}
        for repeat in range(args.repeat):
            for chain in (True, False) if repeat % 2 == 0 else (False, True):
                with fresh_store(backend, args.postgres_url) as url:
                    runs[chain].append(case(url, chain))
                print(runs[chain][-1].row(), file=sys.stderr, flush=True)
        pairs.append((median_run(runs[True]), median_run(runs[False])))
    return pairs


def median_run(runs: Sequence[Result]) -> Result:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


# --- verify -------------------------------------------------------------------------------------


def read_only(log: StoredLog) -> int:
    """The reading part of verify: both tables, side by side, nothing hashed."""
    return sum(1 for _ in log.pairs())


def timed(function: Any, *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - started, value


def verify_rates(backend: str, args: argparse.Namespace) -> list[tuple[str, int, float]]:
    """(what, events, median seconds) over a store of at least `--events` events."""
    with fresh_store(backend, args.postgres_url) as url:
        registry = build_registry(Settings(database_url=url))
        try:
            seconds, written = timed(generate, registry, args.events)
        finally:
            registry.close()
        print(f"{backend}: wrote {written:,} events in {seconds:.1f} s (tests.synthetic)",
              file=sys.stderr, flush=True)
        log = StoredLog(EventStoreLocation.from_url(url))
        rows = []
        # (The prototypes timed here before became `verify()` itself: a joined read on SQLite,
        # each link checked by PostgreSQL's sha256(); see benchmarks/README.md.)
        for what, function in (("verify()", lambda: verify(log).checked),
                               ("read only (pairs)", lambda: read_only(log))):
            runs = []
            for _ in range(args.repeat):
                seconds, count = timed(function)
                runs.append(seconds)
                assert count == written, (what, count, written)
            rows.append((what, written, statistics.median(runs)))
            print(f"{backend} {what}: {written / rows[-1][2]:,.0f} events/s", file=sys.stderr,
                  flush=True)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(verify, log)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
            print(f"\n### cProfile of verify() on {backend}, {written:,} events\n{out.getvalue()}")
    return rows


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300, help="admissions per run (default 300)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs per variant, alternating; the median is reported (default 5)")
    parser.add_argument("--clients", type=int, default=4,
                        help="also admit from this many processes (1: skip)")
    parser.add_argument("--events", type=int, default=100_000,
                        help="events to verify (default 100,000)")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--profile", action="store_true", help="cProfile one verify() per backend")
    parser.add_argument("--skip", default="", help="admit or verify: leave that part out")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    admitted: list[tuple[Result, Result]] = []
    verified: dict[str, list[tuple[str, int, float]]] = {}
    for backend in args.backends:
        if args.skip != "admit":
            admitted += admissions(backend, args)
        if args.skip != "verify":
            verified[backend] = verify_rates(backend, args)
    cpus, python = multiprocessing.cpu_count(), sys.version.split()[0]
    print(f"\naudit benchmark: n={args.n}, median of {args.repeat} alternating runs, "
          f"events={args.events:,}, cpus={cpus}, python {python}\n")
    if admitted:
        print("| backend | case | with chain ops/s | without ops/s | cost | p50 ms with / "
              "without | p99 ms with / without |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for chained, plain in admitted:
            cost = 1 - chained.rate / plain.rate
            case = chained.case.removesuffix(", with chain")
            print(f"| {chained.backend} | {case} | {chained.rate:,.0f} | {plain.rate:,.0f} | "
                  f"{cost:+.1%} | {chained.percentile_ms(50)} / {plain.percentile_ms(50)} | "
                  f"{chained.percentile_ms(99)} / {plain.percentile_ms(99)} |")
        print("\n(cost: how much slower admissions are with the chain; target at most 10%)\n")
    if verified:
        print("| backend | what | events | seconds | events/s |")
        print("|---|---|---:|---:|---:|")
        for backend, rows in verified.items():
            for what, events, seconds in rows:
                print(f"| {backend} | {what} | {events:,} | {seconds:.2f} | "
                      f"{events / seconds:,.0f} |")
        print("\n(target: verify() at least 100,000 events/s)")


if __name__ == "__main__":
    main()
