"""Benchmark of the HTTP API over real sockets, against a real `gnlc serve` process.

Run from the repository root:
    .venv/bin/python benchmarks/http_api.py [--backends sqlite,postgres] [--cases members,admit]
        [--clients 1,8,32] [--requests 1000] [--sequences 150] [--members 180]
        [--client-processes 2] [--separate-runner] [--profile]

Every store is fresh (a temporary SQLite file, or a PostgreSQL schema dropped afterwards). The
server is started as `.venv/bin/gnlc --database-url URL serve --port P` with GNLC_RATE_LIMIT=0,
after its token was made by `gnlc tokens create`. It runs on the real clock, so the setup opens
an intake of the current year whose window (1 January to 31 December) covers today.
See benchmarks/README.md.

(Not named `http.py`: Python puts a script's folder first on `sys.path`, so a `benchmarks/http.py`
would shadow the standard library's `http` package for every script in this folder.)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import math
import multiprocessing
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson
import pycountry
from admit import application_form as bench_form
from admit import fresh_store

from application.clock import SystemClock
from application.registry import Registry
from domain.acts import Actor, Role
from domain.calendar import local_date
from infrastructure.bootstrap import build_registry
from infrastructure.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
GNLC = ROOT / ".venv" / "bin" / "gnlc"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
SECRETARIAT = Actor("bench-secretariat", Role.SECRETARIAT)
COUNTRIES = sorted(c.alpha_2 for c in pycountry.countries)  # 249
QUOTA = 3  # admissions per country and intake year (2018 regulations)
STARTUP_TIMEOUT = 60.0
CATCH_UP_TIMEOUT = 120.0


# --- results ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


@dataclass
class Result:
    backend: str
    case: str
    clients: int
    operations: int  # requests, or sequences of 3 requests
    seconds: float
    latencies: Sequence[float]  # per operation, seconds
    unit: str = "req/s"
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds, by whom
    steps: dict[str, list[float]] = field(default_factory=dict)  # per-request latencies
    ratio: float | None = None

    @property
    def rate(self) -> float:
        return self.operations / self.seconds

    def ms(self, p: float, values: Sequence[float] | None = None) -> str:
        values = self.latencies if values is None else values
        return f"{percentile(values, p) * 1000:.2f}" if values else "-"

    def row(self) -> str:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}"
        cells = (self.backend, self.case, str(self.clients), f"{self.rate:,.1f} {self.unit}",
                 self.ms(50), self.ms(99), ratio)
        return "| " + " | ".join(cells) + " |"

    def cpu_row(self) -> str:
        def per_op(key: str) -> str:
            return f"{self.cpu[key] / self.operations * 1000:.2f}" if key in self.cpu else "-"

        cells = [self.backend, self.case, str(self.clients),
                 per_op("server"), per_op("runner"), per_op("postgres"), per_op("clients"),
                 f"{self.cpu.get('machine', 0):.2f}", f"{self.cpu.get('load', 0):.1f}"]
        steps = ", ".join(f"{name} {self.ms(50, v)}/{self.ms(99, v)}"
                          for name, v in self.steps.items())
        return "| " + " | ".join([*cells, steps or "-"]) + " |"


def print_tables(results: Sequence[Result]) -> None:
    print("| backend | case | clients | rate | p50 ms | p99 ms | HTTP / in-process |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for result in results:
        print(result.row())
    print()
    print("CPU ms per operation (request or sequence) of the server process (in-process: of the "
          "process calling the Registry; the in-process runner included), of the runner process "
          "when separate, of their PostgreSQL backends and of the clients; the machine's busy "
          f"cores (of {os.cpu_count()}) and the highest 1-minute load average during the case; "
          "per-request latencies:\n")
    print("| backend | case | clients | server CPU ms/op | runner CPU ms/op | postgres CPU ms/op "
          "| client CPU ms/op | machine busy | load | per request p50/p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for result in results:
        print(result.cpu_row())


# --- stores, setup ------------------------------------------------------------------------------


def today() -> date:
    return local_date(SystemClock().now(), Settings().timezone)


def application_form(index: int, country: str, prefix: str = "Bench City") -> dict[str, Any]:
    """admit.py's form, for a city of its own, signed this year (the server's clock is real)."""
    return {**bench_form(index, country), "city": f"{prefix} {index}",
            "signed_on": date(today().year, 1, 2).isoformat()}


def slots(n: int) -> list[tuple[str, int]]:
    """(country, city number) of `n` applications: round-robin over every ISO country, so that
    consecutive ones (those in flight together) are of different countries, and no country gets
    more than its quota of 3."""
    capacity = QUOTA * len(COUNTRIES)
    if n > capacity:
        raise SystemExit(f"at most {capacity} admissions fit in one intake year, asked for {n}")
    return [(COUNTRIES[k % len(COUNTRIES)], k) for k in range(n)]


def open_registry(url: str) -> Registry:
    """A registry on the real clock (as the server's), the intake of this year open all year."""
    registry = build_registry(Settings(database_url=url))
    year = today().year
    if year not in {i.year for i in registry.intakes(SECRETARIAT)}:
        registry.open_intake(SECRETARIAT, year, date(year, 1, 1), date(year, 12, 31))
    return registry


def seed_members(url: str, members: int) -> list[tuple[str, int]]:
    """`members` member cities, 3 per country (submitted, endorsed, admitted in-process);
    returns each country with its number of members."""
    registry = open_registry(url)
    countries = COUNTRIES[: math.ceil(members / QUOTA)]
    try:
        for k in range(members):
            country = countries[k // QUOTA]
            done = registry.submit_application(SECRETARIAT, application_form(k, country, "Member"))
            registry.endorse(SECRETARIAT, done.application_id)
            registry.admit(SECRETARIAT, done.application_id)
    finally:
        registry.close()
    return [(c, min(QUOTA, members - QUOTA * i)) for i, c in enumerate(countries)]


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def create_token(url: str) -> str:
    done = subprocess.run(
        [str(GNLC), "--database-url", url, "tokens", "create", "--role", "secretariat",
         "--name", "bench", "--json"],
        check=True, capture_output=True, text=True, cwd=ROOT)
    return str(json.loads(done.stdout)["token"])


# `gnlc` with a cProfile per thread, timed by the thread's own CPU clock (so that waiting, and
# the other processes of a shared machine, do not count). SIGUSR1 takes a snapshot (the server
# has started), and on SIGINT uvicorn stops and each thread's profile minus that snapshot is
# written to the folder given as first argument.
PROFILED_GNLC = """
import cProfile, marshal, signal, sys, threading, time
folder, sys.argv = sys.argv[1], ["gnlc", *sys.argv[2:]]
profiles, baseline = [], {}
bootstrap = threading.Thread._bootstrap_inner
def profiled(thread):
    profile = cProfile.Profile(time.thread_time)
    profiles.append((thread.name, profile))
    profile.enable()
    bootstrap(thread)
threading.Thread._bootstrap_inner = profiled
def snapshot(*_):
    for index, (_, profile) in enumerate(profiles):
        profile.snapshot_stats()
        baseline[index] = profile.stats
signal.signal(signal.SIGUSR1, snapshot)
def minus(stats, base):
    out = {}
    for function, (cc, nc, tt, ct, callers) in stats.items():
        if function in base:
            b = base[function]
            cc, nc, tt, ct = cc - b[0], nc - b[1], tt - b[2], ct - b[3]
            callers = {k: tuple(x - y for x, y in zip(v, b[4].get(k, (0,) * len(v))))
                       for k, v in callers.items()}
            callers = {k: v for k, v in callers.items() if v[0] > 0}
        if nc > 0:
            out[function] = (cc, nc, tt, ct, callers)
    return out
main = cProfile.Profile(time.thread_time)
profiles.append(("MainThread", main))
from infrastructure.cli import run
main.enable()
try:
    run()
except (SystemExit, KeyboardInterrupt):
    pass
finally:
    main.disable()
    for index, (name, profile) in enumerate(profiles):
        profile.create_stats()
        with open(f"{folder}/{index:03d}-{name.replace('/', '_')}.prof", "wb") as out:
            marshal.dump(minus(profile.stats, baseline.get(index, {})), out)
"""


@dataclass
class Server:
    base: str
    token: str
    pid: int
    runner_pid: int | None = None  # `gnlc projections run`, when not in the server's process


@contextmanager
def gnlc_process(url: str, arguments: Sequence[str], log_path: Path,
                 profile_dir: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    command = [str(GNLC)] if profile_dir is None else [sys.executable, "-c", PROFILED_GNLC,
                                                          profile_dir]
    env = {**os.environ, "GNLC_RATE_LIMIT": "0"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*command, "--database-url", url, *arguments],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        yield process
    finally:
        # SIGINT (profiled: the profiles are written) or SIGTERM: uvicorn stops gracefully.
        process.send_signal(signal.SIGINT if profile_dir else signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def serve(url: str, log_dir: str, separate_runner: bool = False,
          profile_dir: str | None = None, workers: int = 1) -> Iterator[Server]:
    """`gnlc serve` in a process of its own (with `separate_runner`: `serve --no-projections`
    and `gnlc projections run` in another process), until the context ends; waits until it
    answers and its projections have caught up with the log."""
    token = create_token(url)
    port = free_port()
    serve_args = ["serve", "--port", str(port), "--workers", str(workers)] + (
        ["--no-projections"] if separate_runner else [])
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(gnlc_process(
            url, serve_args, Path(log_dir) / "serve.log", profile_dir))
        runner = stack.enter_context(gnlc_process(
            url, ["projections", "run"], Path(log_dir) / "runner.log")) \
            if separate_runner else None
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_caught_up(base, [p for p in (server, runner) if p is not None])
        except BaseException:
            for log in sorted(Path(log_dir).glob("*.log")):
                print(f"{log.name}:", log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        yield Server(base, token, server.pid, runner.pid if runner else None)


def wait_until_caught_up(base: str, processes: Sequence[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT + CATCH_UP_TIMEOUT
    with httpx.Client(base_url=base, timeout=5) as client:
        while time.monotonic() < deadline:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
            try:
                ready = client.get("/ready")
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            body = ready.json() if ready.status_code == 200 else {}
            projections = body.get("projections", {})
            if projections and all(p["lag_seconds"] == 0 for p in projections.values()):
                return
            time.sleep(0.1)
    raise RuntimeError("gnlc serve did not start and catch up in time")


# --- CPU accounting -----------------------------------------------------------------------------
# The machine may be shared: besides wall-clock rates, each case reports the CPU seconds per
# operation of the server process, of the PostgreSQL backends serving its connections, and of the
# clients, which hold whatever the load of other work.

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process, from /proc; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def with_descendants(pid: int) -> list[int]:
    """The process and every process under it (the server's workers with `--workers`)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu(pid: int) -> float:
    return sum(process_cpu(p) for p in with_descendants(pid))


def postgres_backends(pids: Sequence[int], port: int = 5432) -> set[int]:
    """The PostgreSQL backends serving the TCP connections of these processes: their sockets'
    local ports, matched with the backends' process titles ("... 127.0.0.1(PORT) ...")."""
    inodes: set[str] = set()
    for pid in [p for root in pids for p in with_descendants(root)]:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cells = line.split()
                if cells[9] in inodes and int(cells[2].rsplit(":", 1)[1], 16) == port:
                    ports.add(int(cells[1].rsplit(":", 1)[1], 16))
    backends = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                title = (entry / "cmdline").read_bytes().decode(errors="replace")
                if title.startswith("postgres:") and any(f"({p})" in title for p in ports):
                    backends.add(int(entry.name))
    return backends


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


@dataclass
class CpuMeter:
    """CPU seconds used between `start` and `stop` by the server's processes (or this process,
    in-process), by their PostgreSQL backends, and by the machine as a whole. Backends come and
    go with the connection pools: a thread samples them every half second, and a backend counts
    from its first sample (from 0 if it appeared meanwhile) to its last."""

    pids: Sequence[int]  # the server's (or this) process, and the runner's if separate
    marks: dict[str, float] = field(default_factory=dict)
    backends: dict[int, list[float]] = field(default_factory=dict)  # pid: [first, last]
    done: threading.Event = field(default_factory=threading.Event)
    sampler: threading.Thread | None = None

    def start(self) -> None:
        busy, total = machine_busy()
        self.sample(first=True)
        self.marks = {"server": tree_cpu(self.pids[0]), "runner": self.runner_cpu(),
                      "busy": busy, "total": total, "wall": time.monotonic(),
                      "load": os.getloadavg()[0]}
        self.sampler = threading.Thread(target=self.sample_until_done, daemon=True)
        self.sampler.start()

    def sample(self, first: bool = False) -> None:
        for backend in postgres_backends(self.pids):
            cpu = process_cpu(backend)
            if cpu:  # 0: gone
                self.backends.setdefault(backend, [cpu if first else 0.0, cpu])[1] = cpu

    def sample_until_done(self) -> None:
        while not self.done.wait(0.5):
            self.sample()

    def stop(self, client_cpu: float | None) -> dict[str, float]:
        self.done.set()
        if self.sampler is not None:
            self.sampler.join()
        self.sample()
        busy, total = machine_busy()
        usage = {
            "server": tree_cpu(self.pids[0]) - self.marks["server"],
            "postgres": sum(last - first for first, last in self.backends.values()),
            "wall": time.monotonic() - self.marks["wall"],
            "machine": (busy - self.marks["busy"]) / (total - self.marks["total"])
            * (os.cpu_count() or 1),
            "load": max(self.marks["load"], os.getloadavg()[0]),
        }
        if len(self.pids) > 1:
            usage["runner"] = self.runner_cpu() - self.marks["runner"]
        if client_cpu is not None:
            usage["clients"] = client_cpu
        return usage

    def runner_cpu(self) -> float:
        return sum(process_cpu(pid) for pid in self.pids[1:])


# --- clients ------------------------------------------------------------------------------------


@dataclass
class Answer:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return orjson.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}: {self.text[:300]}")


class Client:
    """One keep-alive HTTP/1.1 connection with the standard library's `http.client`.

    A load generator should spend as little CPU as it can: on this 2-core machine the clients
    share the cores with the server, and httpx cost 0.7-1.0 ms of CPU per request, as much as
    the server itself (see benchmarks/README.md, "HTTP API")."""

    def __init__(self, base: str, token: str, timeout: float = 120) -> None:
        address = urllib.parse.urlsplit(base)
        self.connection = http.client.HTTPConnection(address.hostname or "127.0.0.1",
                                                     address.port, timeout=timeout)
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        headers = self.headers if body is None else {
            **self.headers, "Content-Type": "application/json"}
        self.connection.request(method, path, body, headers)
        response = self.connection.getresponse()
        return Answer(response.status, response.read())

    def get(self, path: str, params: dict[str, str] | None = None) -> Answer:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return self.request("GET", path + query)

    def post(self, path: str, json: Any) -> Answer:
        return self.request("POST", path, orjson.dumps(json))

    def close(self) -> None:
        self.connection.close()


def members_job(client: Client, job: tuple[str, int],
                steps: dict[str, list[float]]) -> None:
    country, expected = job
    started = time.perf_counter()
    response = client.get("/members", params={"country": country})
    steps["GET /members"].append(time.perf_counter() - started)
    if response.status_code != 200 or response.json()["total"] != expected:
        raise RuntimeError(f"GET /members?country={country}: {response.status_code} "
                           f"{response.text[:300]}")


def admission_job(client: Client, slot: tuple[str, int],
                  steps: dict[str, list[float]]) -> None:
    country, number = slot

    def post(name: str, path: str, body: dict[str, Any], status: int) -> dict[str, Any]:
        started = time.perf_counter()
        response = client.post(path, json=body)
        steps[name].append(time.perf_counter() - started)
        if response.status_code != status:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
        return dict(response.json())

    submitted = post("submit", "/applications", application_form(number, country), 201)
    application = submitted["application_id"]
    post("endorse", f"/applications/{application}/endorsement", {}, 200)
    post("admit", f"/applications/{application}/admission", {}, 200)


JOBS: dict[str, Callable[[Client, Any, dict[str, list[float]]], None]] = {
    "members": members_job, "admission": admission_job}
STEPS = {"members": ["GET /members"], "admission": ["submit", "endorse", "admit"]}


def client_process(base: str, token: str, kind: str, shares: list[list[Any]], barrier: Any,
                   results: Any) -> None:
    """One client process: a thread per client, each with its own keep-alive connection; all
    threads of all processes start together at the barrier."""
    try:
        outcomes: list[Any] = [None] * len(shares)

        def client(index: int, share: list[Any]) -> None:
            steps: dict[str, list[float]] = {name: [] for name in STEPS[kind]}
            latencies: list[float] = []
            try:
                http = Client(base, token)
                try:
                    http.get("/health").raise_for_status()  # open the connection
                    barrier.wait(timeout=300)
                    started = time.monotonic()
                    for job in share:
                        before = time.perf_counter()
                        JOBS[kind](http, job, steps)
                        latencies.append(time.perf_counter() - before)
                    outcomes[index] = (started, time.monotonic(), latencies, steps)
                finally:
                    http.close()
            except BaseException:
                outcomes[index] = traceback.format_exc()

        threads = [threading.Thread(target=client, args=(i, share))
                   for i, share in enumerate(shares)]
        for thread in threads:
            thread.start()
        barrier.wait(timeout=300)  # the process's main thread is a party too
        cpu = time.process_time()
        for thread in threads:
            thread.join()
        results.put((time.process_time() - cpu, outcomes))
    except BaseException:
        results.put(traceback.format_exc())


def run_clients(server: Server, kind: str, jobs: Sequence[Any], clients: int,
                processes: int) -> tuple[float, list[float], dict[str, list[float]],
                                         dict[str, float]]:
    """Deal `jobs` round-robin to `clients` clients in `processes` processes; return the wall
    time from the barrier's release to the last finish, the per-job latencies, the per-request
    latencies by step, and the CPU used."""
    processes = max(1, min(processes, clients))
    shares = [list(jobs[k::clients]) for k in range(clients)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(clients + processes + 1)
    queue = context.Queue()
    workers = [
        context.Process(target=client_process, args=(
            server.base, server.token, kind, shares[p::processes], barrier, queue))
        for p in range(processes)]
    for worker in workers:
        worker.start()
    meter = CpuMeter([p for p in (server.pid, server.runner_pid) if p is not None])
    barrier.wait(timeout=300)
    meter.start()
    reports = [queue.get(timeout=900) for _ in workers]
    for worker in workers:
        worker.join()
    failures = [r for r in reports if isinstance(r, str)]
    failures += [o for r in reports if not isinstance(r, str) for o in r[1] if isinstance(o, str)]
    if failures:
        raise RuntimeError("a client failed:\n" + failures[0])
    outcomes = [o for r in reports for o in r[1]]
    cpu = meter.stop(sum(r[0] for r in reports))
    seconds = max(o[1] for o in outcomes) - min(o[0] for o in outcomes)
    latencies = [x for o in outcomes for x in o[2]]
    steps = {name: [x for o in outcomes for x in o[3][name]] for name in STEPS[kind]}
    return seconds, latencies, steps, cpu


# --- cases --------------------------------------------------------------------------------------


def label(case: str, args: argparse.Namespace) -> str:
    if args.workers > 1:
        case = f"{case}, {args.workers} server processes"
    return f"{case}, runner in its own process" if args.separate_runner else case


def members_cases(backend: str, url: str, args: argparse.Namespace) -> list[Result]:
    """GET /members?country=.. on a network of `--members` members, at each client count."""
    countries = seed_members(url, args.members)
    results = []
    with tempfile.TemporaryDirectory(prefix="gnlc-bench-http-log-") as logs, \
            serve(url, logs, args.separate_runner, workers=args.workers) as server:
        for clients in args.clients:
            jobs = [countries[k % len(countries)] for k in range(args.requests)]
            seconds, latencies, _, cpu = run_clients(
                server, "members", jobs, clients, args.processes_for(clients))
            case = label(f"GET /members?country= ({args.members} members)", args)
            results.append(Result(backend, case, clients, len(jobs), seconds, latencies,
                                  "req/s", cpu=cpu))
            print(results[-1].row(), file=sys.stderr, flush=True)
    return results


def admission_case(backend: str, url: str, args: argparse.Namespace, clients: int) -> Result:
    """`--sequences` sequences of submit, endorse, admit over HTTP, on a fresh store."""
    open_registry(url).close()
    # Untimed first, as the in-process baseline's first sequence is: a few sequences on new
    # connections (each server process then has run the use cases once).
    warm = 2 * args.workers
    jobs = slots(args.sequences + warm)
    with tempfile.TemporaryDirectory(prefix="gnlc-bench-http-log-") as logs, \
            serve(url, logs, args.separate_runner, workers=args.workers) as server:
        for slot in jobs[args.sequences:]:
            warmer = Client(server.base, server.token)
            try:
                admission_job(warmer, slot, {name: [] for name in STEPS["admission"]})
            finally:
                warmer.close()
        seconds, latencies, steps, cpu = run_clients(
            server, "admission", jobs[:args.sequences], clients, args.processes_for(clients))
    return Result(backend, label("apply-endorse-admit (3 POSTs)", args), clients,
                  args.sequences, seconds, latencies, "seq/s", cpu=cpu, steps=steps)


def admission_sequence(registry: Registry, country: str, number: int,
                       steps: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    done = registry.submit_application(SECRETARIAT, application_form(number, country))
    t1 = time.perf_counter()
    registry.endorse(SECRETARIAT, done.application_id)
    t2 = time.perf_counter()
    registry.admit(SECRETARIAT, done.application_id)
    t3 = time.perf_counter()
    steps["submit"].append(t1 - t0)
    steps["endorse"].append(t2 - t1)
    steps["admit"].append(t3 - t2)


def in_process_case(backend: str, url: str, args: argparse.Namespace) -> Result:
    """The same use cases called on a registry in this process, one after the other."""
    registry = open_registry(url)
    steps: dict[str, list[float]] = {"submit": [], "endorse": [], "admit": []}
    try:
        jobs = slots(args.sequences + 1)
        admission_sequence(registry, *jobs.pop(), steps)  # untimed: warms the connection
        steps = {name: [] for name in steps}
        meter = CpuMeter([os.getpid()])
        meter.start()
        started = time.perf_counter()
        for country, number in jobs:
            admission_sequence(registry, country, number, steps)
        seconds = time.perf_counter() - started
        usage = meter.stop(None)
    finally:
        registry.close()
    latencies = [sum(step) for step in zip(*steps.values(), strict=True)]
    return Result(backend, "apply-endorse-admit in-process (Registry)", 1, len(jobs), seconds,
                  latencies, "seq/s", cpu=usage, steps=steps, ratio=1.0)


def run_backend(backend: str, args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    if "members" in args.cases:
        with fresh_store(backend, args.postgres_url) as url:
            results += members_cases(backend, url, args)
    if "admit" in args.cases:
        # The in-process baseline runs again just before each HTTP case, so that each ratio
        # compares runs made under the same load (the machine may be shared); the table shows
        # the baseline run of median rate.
        baselines, cases = [], []
        for clients in args.clients:
            with fresh_store(backend, args.postgres_url) as url:
                baselines.append(in_process_case(backend, url, args))
            print(baselines[-1].row(), file=sys.stderr, flush=True)
            with fresh_store(backend, args.postgres_url) as url:
                cases.append(admission_case(backend, url, args, clients))
            cases[-1].ratio = cases[-1].rate / baselines[-1].rate
            print(cases[-1].row(), file=sys.stderr, flush=True)
        results.append(sorted(baselines, key=lambda r: r.rate)[len(baselines) // 2])
        results += cases
    return results


def print_targets(results: Sequence[Result]) -> None:
    def cpu_per_op(r: Result) -> float:  # server side: server (or Registry), runner, PostgreSQL
        return sum(r.cpu.get(k, 0) for k in ("server", "runner", "postgres")) / r.operations

    baselines = {r.backend: r for r in results if "in-process" in r.case}
    for r in results:
        if r.case.startswith("GET /members") and r.clients == 8:
            p99 = percentile(r.latencies, 99) * 1000
            verdict = "PASS" if p99 < 20 else "FAIL"
            print(f"{r.backend}: members p99 at 8 clients {p99:.2f} ms (target < 20): {verdict}")
        if r.ratio is not None and "in-process" not in r.case:
            verdict = "PASS" if r.ratio >= 0.5 else "FAIL"
            base = baselines[r.backend]
            cpu_ratio = cpu_per_op(base) / cpu_per_op(r)
            print(f"{r.backend}: admission sequences at {r.clients} clients / in-process = "
                  f"{r.ratio:.2f} (target >= 0.50): {verdict}; by CPU per sequence "
                  f"(server, runner, PostgreSQL: {cpu_per_op(r) * 1000:.1f} ms over HTTP, "
                  f"{cpu_per_op(base) * 1000:.1f} ms in-process) {cpu_ratio:.2f}")


# --- profile ------------------------------------------------------------------------------------


def profile_server(backend: str, args: argparse.Namespace) -> None:
    """1 client against a profiled server: `--sequences` admission sequences on a fresh store,
    then `--requests` GET /members on another; per thread group, the CPU seconds and the top
    functions by cumulative thread CPU time (cProfile's own overhead inflates both)."""
    for kind in ("admission", "members"):
        with fresh_store(backend, args.postgres_url) as url, \
                tempfile.TemporaryDirectory(prefix="gnlc-bench-http-prof-") as folder:
            if kind == "members":
                countries = seed_members(url, args.members)
                jobs: list[Any] = [countries[k % len(countries)] for k in range(args.requests)]
            else:
                open_registry(url).close()
                jobs = slots(args.sequences)
            with serve(url, folder, args.separate_runner, profile_dir=folder) as server:
                os.kill(server.pid, signal.SIGUSR1)  # from here on
                seconds, *_ = run_clients(server, kind, jobs, 1, 1)
            print(f"\n### cProfile of gnlc serve on {backend}: {len(jobs)} {kind} operations, "
                  f"1 client ({len(jobs) / seconds:.1f}/s under the profiler)\n")
            groups: dict[str, list[str]] = {}
            for path in sorted(Path(folder).glob("*.prof")):
                name = path.stem.split("-", 1)[1]
                group = "projections runner" if name == "projections" else \
                    "request threads" if name.startswith("AnyIO") else \
                    "event loop" if name == "MainThread" else "other threads"
                groups.setdefault(group, []).append(str(path))
            out = io.StringIO()
            stats = {group: pstats.Stats(*paths, stream=out) for group, paths in groups.items()}
            cpu = {group: sum(v[2] for v in s.stats.values())  # type: ignore[attr-defined]
                   for group, s in stats.items()}
            for group in sorted(stats, key=lambda g: -cpu[g]):
                print(f"#### {group}: {cpu[group]:.2f} CPU s ({cpu[group] / sum(cpu.values()):.0%})"
                      f", {cpu[group] / len(jobs) * 1000:.2f} ms per operation\n")
                for order, top in (("tottime", args.profile_top // 2),
                                   ("cumulative", args.profile_top)):
                    out.seek(0)
                    out.truncate()
                    stats[group].sort_stats(order).print_stats(top)
                    print(out.getvalue().split("\n\n", 1)[-1].rstrip() + "\n")


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backends", "--backend", default="sqlite,postgres",
                        help="sqlite,postgres (default both)")
    parser.add_argument("--cases", default="members,admit", help="members,admit (default both)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients (default 1,8,32)")
    parser.add_argument("--requests", type=int, default=1000,
                        help="GET /members requests per client count (default 1000)")
    parser.add_argument("--sequences", type=int, default=150,
                        help="apply-endorse-admit sequences per client count (default 150; "
                             f"at most {QUOTA * len(COUNTRIES) - 1})")
    parser.add_argument("--members", type=int, default=180,
                        help="members of the network queried (3 per country; default 180)")
    parser.add_argument("--client-processes", type=int, default=2, metavar="K",
                        help="client processes the clients are dealt to, as threads "
                             "(default 2; 1 client always runs in 1 process)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes (`gnlc serve --workers`, default 1)")
    parser.add_argument("--separate-runner", action="store_true",
                        help="serve --no-projections, and `gnlc projections run` in a process "
                             "of its own (default: the runner in the server's process)")
    parser.add_argument("--profile", action="store_true",
                        help="instead of measuring: cProfile the server (1 client; "
                             "--sequences admissions, then --requests GET /members)")
    parser.add_argument("--profile-top", type=int, default=25, metavar="N",
                        help="functions shown per thread group with --profile (default 25)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    if set(args.backends) - {"sqlite", "postgres"} or set(args.cases) - {"members", "admit"}:
        parser.error("backends: sqlite, postgres; cases: members, admit")
    if not 1 <= args.members <= QUOTA * len(COUNTRIES):
        parser.error(f"--members must be between 1 and {QUOTA * len(COUNTRIES)}")
    if not 1 <= args.sequences < QUOTA * len(COUNTRIES):
        parser.error(f"--sequences must be between 1 and {QUOTA * len(COUNTRIES) - 1}")
    args.processes_for = lambda clients: min(clients, args.client_processes)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.profile:
        for backend in args.backends:
            profile_server(backend, args)
        return
    started, load = time.monotonic(), os.getloadavg()
    results: list[Result] = []
    for backend in args.backends:
        results += run_backend(backend, args)
    print(f"\nHTTP benchmark: {', '.join(args.backends)}; clients {args.clients}; "
          f"{args.requests} requests and {args.sequences} sequences per client count; up to "
          f"{args.client_processes} client processes; cpus={os.cpu_count()}, "
          f"python {sys.version.split()[0]}; {time.monotonic() - started:.0f} s; 1-minute load "
          f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after\n")
    print_tables(results)
    print()
    print_targets(results)


if __name__ == "__main__":
    main()
