"""`gnlc serve --workers N`: several server processes on one port (SQLite and PostgreSQL).

They share the store: a write through one is read through another with `min_position`, the
projection runner (in the supervising process) counts each event once, a token revoked by the CLI
is refused by every process from the next request, and stopping the server stops them all."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from infrastructure.readmodels.tables import ReadModelStore
from infrastructure.settings import Settings
from tests.conftest import application_form
from tests.http_support import ok, read_models, refused
from tests.live_server import free_port, serving

GNLC = str(Path(sys.executable).with_name("gnlc"))
WORKERS = 3
CONNECTIONS = 12  # a new connection each: the processes take them from one listening socket


def _gnlc(url: str, *arguments: str) -> dict[str, Any]:
    done = subprocess.run([GNLC, "--database-url", url, *arguments, "--json"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GNLC_DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _fresh(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                        timeout=30)


def _batches(store: ReadModelStore) -> list[tuple[str, int, int]]:
    table = store.schema.batches
    with store.engine.connect() as connection:
        rows = connection.execute(select(table.c.projection, table.c.first_position,
                                         table.c.last_position)
                                  .order_by(table.c.projection, table.c.first_position))
        return [(r[0], r[1], r[2]) for r in rows]


def test_several_server_processes_share_the_store_and_project_each_event_once(
        database_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    year = datetime.now(UTC).year
    with serving(database_url, port, "--workers", str(WORKERS)) as printed:
        assert any(f"{WORKERS} processes" in line for line in printed)
        token = next(line for line in printed if line.startswith("export GNLC_TOKEN="))
        staff = token.strip().split("=", 1)[1]
        with _fresh(base, staff) as client:
            ok(client.post("/intakes", json={"year": year, "opens": f"{year}-01-01",
                                             "closes": f"{year}-12-31"}), 201)
        # Each step on a new connection (whichever process takes it); each read waits for the
        # step before it, through whichever process answers.
        for number, country in enumerate(("IE", "PT", "FI", "EE")):
            form = application_form(f"Town {number}", country, signed_on=f"{year}-01-02")
            with _fresh(base, staff) as client:
                submitted = ok(client.post("/applications", json=form), 201)
            application = submitted["application_id"]
            for step in ("endorsement", "admission"):
                with _fresh(base, staff) as client:
                    done = ok(client.post(f"/applications/{application}/{step}", json={}))
            with _fresh(base, staff) as client:
                members = ok(client.get("/members", params={
                    "country": country, "min_position": done["position"]}))["items"]
            assert [m["name"] for m in members] == [f"Town {number}"]

        # The projections' batches count each event once.
        store = read_models(Settings(database_url=database_url))
        try:
            batches = _batches(store)
        finally:
            store.engine.dispose()
        for name in ("members", "quotas", "applications"):
            ranges = [(first, last) for n, first, last in batches if n == name]
            assert ranges[0][0] == 1
            assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
            assert ranges[-1][1] >= done["position"]

        # A token used through every process, then revoked by the CLI (another process):
        # refused from the next request, whichever server process answers it.
        auditor = _gnlc(database_url, "tokens", "create", "--role", "auditor",
                        "--name", "auditor-1")["token"]
        for _ in range(CONNECTIONS):
            with _fresh(base, auditor) as client:
                ok(client.get("/quotas"))
        _gnlc(database_url, "tokens", "revoke", "auditor-1")
        for _ in range(CONNECTIONS):
            with _fresh(base, auditor) as client:
                refused(client.get("/quotas"), 401, "unauthenticated")
        server_pids = _listening_on(port)
        assert len(server_pids) == WORKERS + 1  # uvicorn's supervisor and its workers
    assert not [pid for pid in server_pids if Path(f"/proc/{pid}").exists()
                and "gnlc" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]


def _listening_on(port: int) -> list[int]:
    """The pids of the processes with a listening socket on `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cells = line.split()
            if int(cells[1].rsplit(":", 1)[1], 16) == port and cells[3] == "0A":  # LISTEN
                inodes.add(cells[9])
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                targets = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
            except OSError:
                continue
            if any(f"socket:[{inode}]" in targets for inode in inodes):
                pids.append(int(entry.name))
    return pids


def test_an_erasure_shows_in_every_server_process_on_the_next_request(
        database_url: str, tmp_path: Path) -> None:
    """Two `gnlc serve` processes and a projection runner of their own: values read through
    both before an erasure (by the CLI, a fourth process) read as erased through both after."""
    mayor, email = "Zebulon Quillfeather", "xanthippe.private@quillmail.example"
    ports = [free_port(), free_port()]
    year = datetime.now(UTC).year
    with serving(database_url, ports[0], "--no-projections") as printed, \
            serving(database_url, ports[1], "--no-projections"), \
            running_projections(database_url):
        first = next(line for line in printed if line.startswith("export GNLC_TOKEN="))
        token = first.strip().split("=", 1)[1]
        staff = _gnlc(database_url, "tokens", "create", "--role", "secretariat", "--name",
                      "staff", "--scope", "personal_data")["token"]
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        with _fresh(a, token) as client:
            ok(client.post("/intakes", json={"year": year, "opens": f"{year}-01-01",
                                             "closes": f"{year}-12-31"}), 201)
            form = application_form("Hamburg", signed_on=f"{year}-01-02")
            form["mayor"]["full_name"] = mayor
            form["contact"]["email"] = email
            submitted = ok(client.post("/applications", json=form), 201)
            application, city = submitted["application_id"], submitted["city_id"]
        with _fresh(b, token) as client:
            ok(client.post(f"/applications/{application}/endorsement", json={}))
            done = ok(client.post(f"/applications/{application}/admission", json={}))

        def seen(base: str, position: int) -> str:
            with _fresh(base, staff) as client:
                return "".join(client.get(path, params=params).text for path, params in (
                    (f"/applications/{application}", {}),
                    (f"/cities/{city}/history", {}),
                    ("/events", {"limit": 1000}),
                    ("/members", {"min_position": position})))

        for base in (a, b):
            text = seen(base, done["position"])
            assert mayor in text and email in text, base
        erased = _gnlc(database_url, "privacy", "erase", city, "--reason", "left office")
        assert erased["recorded"] is True
        position = int(_gnlc(database_url, "audit", "head")["position"])
        for base in (a, b):
            text = seen(base, position)
            assert (mayor in text, email in text) == (False, False), base
            assert '"erased":true' in text.replace(" ", ""), base


@contextmanager
def running_projections(database_url: str) -> Iterator[None]:
    """`gnlc projections run` in a process of its own, until the context ends."""
    runner = subprocess.Popen([GNLC, "--database-url", database_url, "projections", "run"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        runner.send_signal(signal.SIGTERM)
        _, errors = runner.communicate(timeout=30)
        assert runner.returncode in (0, -signal.SIGTERM), errors
