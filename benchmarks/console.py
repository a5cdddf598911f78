"""Benchmark of the staff console's pages: latency per page at 1,000 members on SQLite.

Run from the repository root:
    .venv/bin/python benchmarks/console.py [--members 1000] [--requests 200] [--gc-default]

A fresh SQLite store gets an intake of 2017 (before the 2018 regulations: no quota, the window is
the year) and `--members` cities admitted through the use cases; the API with its console is
served in this process (uvicorn on a loopback port, the projection runner in a thread) and one
signed-in client asks each page `--requests` times in turn, after a warm-up. It prints p50, p99
and max per page, in milliseconds. Not a test: the figures go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import re
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pycountry
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain.acts import Actor, Role
from infrastructure.bootstrap import build_api, build_registry, tune_collector
from infrastructure.settings import Settings

BERLIN = ZoneInfo("Europe/Berlin")
SECRETARIAT = Actor("bench-secretariat", Role.SECRETARIAT)
COUNTRIES = sorted(c.alpha_2 for c in pycountry.countries)


class FixedClock:
    """The business clock of the setup and the pages: a day of the 2017 intake."""

    def __init__(self) -> None:
        self.at = datetime(2017, 6, 1, 12, 0, tzinfo=BERLIN)
        self.overridden = True

    def now(self) -> datetime:
        return self.at


def form(name: str, country: str) -> dict[str, object]:
    return {
        "city": name, "country": country,
        "mayor": {"full_name": "A Mayor"}, "contact": {"full_name": "A Contact",
                                                        "email": "learning@example.org"},
        "language": "en", "motivation": "Learning for all.", "implementation": "Festivals.",
        "pledge": True, "signed_on": "2017-05-01",
    }


def populate(settings: Settings, clock: FixedClock, members: int) -> tuple[str, str, str]:
    """`members` admitted cities; returns a secretariat token, an application id, a city id."""
    registry = build_registry(settings, clock)  # type: ignore[arg-type]
    registry.open_intake(SECRETARIAT, 2017)
    started = time.perf_counter()
    application_id = city_id = ""
    for number in range(members):
        done = registry.submit_application(
            SECRETARIAT, form(f"City {number}", COUNTRIES[number % len(COUNTRIES)]))
        registry.endorse(SECRETARIAT, done.application_id)
        registry.admit(SECRETARIAT, done.application_id)
        application_id, city_id = str(done.application_id), str(done.city_id)
    print(f"setup: {members} members admitted in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    token = registry.issue_token(SECRETARIAT, "bench", Role.SECRETARIAT, None, None,
                                 frozenset()).token
    registry.close()
    return token, application_id, city_id


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--gc-default", action="store_true",
                        help="keep Python's default collector settings instead of those "
                             "`gnlc serve` sets (bootstrap.tune_collector)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gnlc-console-bench-"))
    settings = Settings(database_url=f"sqlite:///{work}/gnlc.sqlite", rate_limit=0,
                        rate_burst=0)
    clock = FixedClock()
    # In a process of its own: the setup's garbage would otherwise lengthen this process's
    # garbage collections, which a server that did not do the setup never has.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        token, application_id, city_id = pool.apply(populate, (settings, clock, args.members))

    registry = build_registry(settings, clock)  # type: ignore[arg-type]
    app = build_api(settings, registry, clock)  # type: ignore[arg-type]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    pages = {
        "sign-in": "/",
        "members": "/console/members",
        "members (one country)": "/console/members?country=DE",
        "quotas": "/console/quotas?year=2017",
        "deadlines": "/console/deadlines?view=all",
        "deadlines CSV": "/console/deadlines?view=all&format=csv",
        "applications": "/console/applications?year=2017",
        "application": f"/console/applications/{application_id}",
        "admit (confirm)": f"/console/applications/{application_id}/admit",
        "city": f"/console/cities/{city_id}",
        "intakes": "/console/intakes",
        "audit": "/console/audit",
    }
    try:
        with httpx.Client(base_url=url, timeout=120) as client, \
                httpx.Client(base_url=url, timeout=120) as anonymous:
            page = client.get("/")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            signed = client.post("/console/sign-in", data={"csrf": csrf.group(1),
                                                           "token": token})
            assert signed.status_code == 303, signed.text
            def asker(path: str) -> httpx.Client:
                return anonymous if path == "/" else client  # signed in, / redirects

            if not args.gc_default:
                tune_collector()  # as `gnlc serve` does
            for path in pages.values():  # warm-up: the runner catches up, caches fill
                assert asker(path).get(path).status_code == 200, path
            print(f"{'page':24} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'KiB':>6}")
            for name, path in pages.items():
                times = []
                size = 0
                for _ in range(args.requests):
                    started = time.perf_counter()
                    answer = asker(path).get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert answer.status_code == 200, (path, answer.status_code)
                    size = len(answer.content)
                print(f"{name:24} {percentile(times, 50):8.1f} {percentile(times, 99):8.1f} "
                      f"{max(times):8.1f} {size / 1024:6.0f}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        registry.close()


if __name__ == "__main__":
    main()
