"""Benchmark of the admit use case against the bare eventsourcing library, on SQLite and PostgreSQL.

Run from the repository root:  .venv/bin/python benchmarks/admit.py [--n 500]
                                  [--backends sqlite,postgres] [--clients 4] [--profile 200]

Every case runs on a fresh store (a temporary SQLite file, or a PostgreSQL schema dropped
afterwards), so no case sees the events of another. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import multiprocessing
import pstats
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pycountry
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from psycopg import sql

from application.clock import FixedClock
from application.registry import Registry
from domain.acts import Actor, Role
from infrastructure.bootstrap import build_registry, initialise
from infrastructure.eventstore.location import EventStoreLocation
from infrastructure.settings import Settings

# Pre-2018 regulations: the 2016 intake is open all year and has no quota, so every admit passes.
YEAR = 2016
CLOCK = FixedClock(datetime(2016, 6, 1, 12, 0, tzinfo=UTC))
SECRETARIAT = Actor("bench-secretariat", Role.SECRETARIAT)
COMMISSION = Actor("bench-commission", Role.NATIONAL_COMMISSION)
CITY = Actor("bench-city", Role.CITY)
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    backend: str
    case: str
    operations: int
    seconds: float
    latencies: Sequence[float] = ()  # seconds per call; empty when the case is a single call

    @property
    def rate(self) -> float:
        return self.operations / self.seconds

    def percentile_ms(self, p: float) -> str:
        if not self.latencies:
            return "-"
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(p / 100 * len(ordered)))  # nearest-rank percentile
        return f"{ordered[rank - 1] * 1000:.2f}"

    def row(self) -> str:
        cells = (
            self.backend, self.case, str(self.operations), f"{self.seconds:.3f}",
            f"{self.rate:,.0f}", self.percentile_ms(50), self.percentile_ms(99),
        )
        return "| " + " | ".join(cells) + " |"


def print_table(results: Sequence[Result]) -> None:
    print("| backend | case | operations | seconds | ops/s | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for result in results:
        print(result.row())


# --- stores -------------------------------------------------------------------------------------


@contextmanager
def fresh_store(backend: str, postgres_url: str) -> Iterator[str]:
    """A database URL on an empty store, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="gnlc-bench-") as folder:
            yield f"sqlite:///{folder}/bench.sqlite"
        return
    schema = f"bench_{uuid4().hex[:12]}"
    try:
        yield f"{postgres_url}?schema={schema}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


# --- admit: setup -------------------------------------------------------------------------------


def country_codes(clients: int) -> list[str]:
    """All ISO codes, trimmed to a multiple of `clients`: with applications dealt out round-robin,
    no two clients then share a country, hence no quota ledger (no write conflict) either."""
    codes = sorted(c.alpha_2 for c in pycountry.countries)
    return codes[: len(codes) - len(codes) % clients]


def application_form(index: int, country: str) -> dict[str, Any]:
    return {
        "city": f"City {index}",
        "country": country,
        "website": "https://www.example.org",
        "mayor": {"title": "Dr", "full_name": "Ada Mayor", "official_title": "First Mayor"},
        "contact": {
            "full_name": "Grace Contact", "official_title": "Head of Learning",
            "organisation": "City Hall", "postal_address": "1 Town Square",
            "phone": "+49 40 0000", "email": "learning@example.org",
        },
        "language": "en",
        "profile": {"population": {"value": 1_800_000, "year": 2015}},
        "motivation": "Lifelong learning for all.",
        "implementation": "Learning festivals in every district.",
        "pledge": True,
        "signed_on": "2016-05-01",
    }


def open_registry(url: str) -> Registry:
    """A registry built by the composition root, its connection warmed by one read."""
    registry = build_registry(Settings(database_url=url), CLOCK)
    registry.intakes(SECRETARIAT)
    return registry


def endorsed_applications(url: str, n: int, codes: Sequence[str]) -> list[UUID]:
    """Open the 2016 intake, then submit and endorse `n` applications (not timed)."""
    registry = open_registry(url)
    try:
        registry.open_intake(SECRETARIAT, YEAR)
        ids = []
        for i in range(n):
            form = application_form(i, codes[i % len(codes)])
            submission = registry.submit_application(CITY, form)
            registry.endorse(COMMISSION, submission.application_id)
            ids.append(submission.application_id)
        return ids
    finally:
        registry.close()


def admit_all(registry: Registry, ids: Sequence[UUID]) -> list[float]:
    latencies = []
    for application_id in ids:
        started = time.perf_counter()
        registry.admit(SECRETARIAT, application_id)
        latencies.append(time.perf_counter() - started)
    return latencies


# --- admit: timed -------------------------------------------------------------------------------


def admit_one_client(backend: str, url: str, n: int, clients: int) -> Result:
    ids = endorsed_applications(url, n, country_codes(clients))
    registry = open_registry(url)
    try:
        started = time.perf_counter()
        latencies = admit_all(registry, ids)
        seconds = time.perf_counter() - started
    finally:
        registry.close()
    return Result(backend, "admit, 1 client", n, seconds, latencies)


def admit_worker(url: str, ids: list[UUID], barrier: Any, results: Any) -> None:
    """One client process: build its own registry, wait for the others, admit its share."""
    try:
        registry = open_registry(url)
        barrier.wait(timeout=300)
        # time.monotonic is CLOCK_MONOTONIC on Linux: comparable between processes.
        started = time.monotonic()
        latencies = admit_all(registry, ids)
        finished = time.monotonic()
        registry.close()
        results.put((started, finished, latencies))
    except BaseException:
        results.put(traceback.format_exc())


def run_workers(target: Callable[..., None], arguments: Sequence[tuple[Any, ...]]
                ) -> tuple[float, list[float]]:
    """One spawned process per argument tuple, each called as `target(*arguments, barrier,
    queue)`, all starting at one barrier; each puts (started, finished, latencies) or a
    traceback. Returns the wall time from the first start to the last finish, and every
    latency."""
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(len(arguments)), context.Queue()
    processes = [context.Process(target=target, args=(*args, barrier, queue))
                 for args in arguments]
    for process in processes:
        process.start()
    reports = [queue.get(timeout=900) for _ in processes]
    for process in processes:
        process.join()
    failures = [r for r in reports if isinstance(r, str)]
    if failures:
        raise RuntimeError("a client failed:\n" + failures[0])
    seconds = max(r[1] for r in reports) - min(r[0] for r in reports)
    return seconds, [latency for r in reports for latency in r[2]]


def admit_concurrently(backend: str, url: str, n: int, clients: int) -> Result:
    ids = endorsed_applications(url, n, country_codes(clients))
    seconds, latencies = run_workers(
        admit_worker, [(url, ids[k::clients]) for k in range(clients)])
    return Result(backend, f"admit, {clients} clients (processes)", n, seconds, latencies)


# --- the bare library ---------------------------------------------------------------------------


class Counter(Aggregate):
    """A trivial aggregate: a created event and a payload-free `Touched` event."""

    def __init__(self) -> None:
        self.touches = 0

    @event("Touched")
    def touch(self) -> None:
        self.touches += 1


class BareApp(Application[UUID]):
    name = "bench"


def bare_app(url: str) -> BareApp:
    initialise(Settings(database_url=url))  # the store's tables, the audit chain's included
    return BareApp(env=EventStoreLocation.from_url(url).library_env(create_table=True))


def created_counters(app: BareApp, count: int) -> list[Counter]:
    """`count` counters saved with their created event (not timed), 100 per save."""
    counters = [Counter() for _ in range(count)]
    for start in range(0, count, 100):
        app.save(*counters[start : start + 100])
    return counters


def timed_calls(n: int, call: Callable[[int], None]) -> tuple[float, list[float]]:
    latencies = []
    started = time.perf_counter()
    for i in range(n):
        before = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - before)
    return time.perf_counter() - started, latencies


def bare_per_admission(backend: str, url: str, n: int, load: bool) -> Result:
    """(a) one save() per admission-equivalent: one new event on each of 3 existing aggregates.
    With `load`, the 3 aggregates are first read back from the store (admit reads 4)."""
    app = bare_app(url)
    try:
        counters = created_counters(app, 3 * n)

        def call(i: int) -> None:
            trio = counters[3 * i : 3 * i + 3]
            if load:
                trio = [app.repository.get(c.id) for c in trio]
            for counter in trio:
                counter.touch()
            app.save(*trio)

        seconds, latencies = timed_calls(n, call)
    finally:
        app.close()
    case = "bare (a): get 3 + 1 save of 3 events" if load else "bare (a): 1 save of 3 events"
    return Result(backend, case, n, seconds, latencies)


def bare_one_save(backend: str, url: str, n: int) -> Result:
    """(b) `n` new aggregates, 3 events each (created + 2 touches), all in one save() call."""
    app = bare_app(url)
    try:
        created_counters(app, 1)  # warm the connection, as in the other cases
        counters = [Counter() for _ in range(n)]
        for counter in counters:
            counter.touch()
            counter.touch()
        started = time.perf_counter()
        app.save(*counters)
        seconds = time.perf_counter() - started
    finally:
        app.close()
    return Result(backend, f"bare (b): {n} aggregates x 3 events, 1 save", n, seconds)


# --- profile ------------------------------------------------------------------------------------


def profile_admit(backend: str, url: str, n: int, clients: int) -> str:
    """cProfile of `n` sequential admits; the top 10 functions by cumulative time."""
    ids = endorsed_applications(url, n, country_codes(clients))
    registry = open_registry(url)
    profiler = cProfile.Profile()
    try:
        profiler.runcall(admit_all, registry, ids)
    finally:
        registry.close()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(10)
    return f"### cProfile, {n} sequential admits on {backend}\n{out.getvalue()}"


# --- main ---------------------------------------------------------------------------------------


def run_backend(backend: str, args: argparse.Namespace) -> list[Result]:
    cases: list[Callable[[str], Result]] = [
        lambda url: admit_one_client(backend, url, args.n, args.clients),
        lambda url: admit_concurrently(backend, url, args.n, args.clients),
        lambda url: bare_per_admission(backend, url, args.n, load=False),
        lambda url: bare_per_admission(backend, url, args.n, load=True),
        lambda url: bare_one_save(backend, url, args.n),
    ]
    results = []
    for case in cases:
        with fresh_store(backend, args.postgres_url) as url:
            results.append(case(url))
        print(results[-1].row(), file=sys.stderr, flush=True)
    return results


def median_run(runs: Sequence[Result]) -> Result:
    """The run of median rate (the upper one of an even number)."""
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def print_ratios(results: Sequence[Result], clients: int) -> None:
    """Per backend: the admit rates over bare (a), the first three results of run_backend."""
    for backend in dict.fromkeys(r.backend for r in results):
        one, many, bare = [r.rate for r in results if r.backend == backend][:3]
        print(
            f"ratio {backend}: admit 1 client / bare (a) = {one / bare:.2f}; "
            f"admit {clients} clients / bare (a) = {many / bare:.2f} (target: >= 0.50)"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=500, help="admissions per case (default 500)")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of every case; the run of median rate is reported (default 3)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--profile", type=int, default=0, metavar="K",
                        help="also cProfile K sequential admits per backend")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    results: list[Result] = []
    for backend in args.backends:
        rounds = [run_backend(backend, args) for _ in range(args.repeat)]
        results += [median_run(runs) for runs in zip(*rounds, strict=True)]
    cpus, python = multiprocessing.cpu_count(), sys.version.split()[0]
    print(f"\nadmit benchmark: n={args.n}, clients={args.clients}, median of {args.repeat} runs, "
          f"cpus={cpus}, python {python}\n")
    print_table(results)
    print()
    print_ratios(results, args.clients)
    for backend in args.backends if args.profile else []:
        with fresh_store(backend, args.postgres_url) as url:
            print("\n" + profile_admit(backend, url, args.profile, args.clients))


if __name__ == "__main__":
    main()
