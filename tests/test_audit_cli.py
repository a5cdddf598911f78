"""Every `gnlc audit` command end to end through the command line, on SQLite and PostgreSQL; and
the export of a PostgreSQL store verifies offline and equals, line for line, the export of the
same events from SQLite, apart from what is not the same events' content (see `normalised`)."""

from __future__ import annotations

import base64
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from application.registry import Registry
from infrastructure.bootstrap import build_data_keys, event_store, initialise
from infrastructure.cli import app
from infrastructure.settings import Settings
from tests.conftest import (
    CITY,
    COMMISSION,
    SECRETARIAT,
    SettableClock,
    application_form,
    progress_report,
)

GNLC = Path(sys.executable).with_name("gnlc")
RECORDED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00").fullmatch
HASH = re.compile(r"[0-9a-f]{64}").fullmatch
# The library's own timestamp inside a stored state: the real clock when the event was made.
TIMESTAMP = re.compile(rb'"timestamp": ?\{"_type_": ?"datetime_iso", ?"_data_": ?"[^"]*"\}')
# A person's sealed values: a random key and nonce in each store (domain/personal.py).
SEALED = re.compile(
    rb'"sealed": ?\{"key_id": ?"[^"]*", ?"alg": ?"A256GCM", ?"ciphertext": ?"[^"]*"\}')


def registry_on(database_url: str, clock: SettableClock, ids: Iterator[UUID]) -> Registry:
    """The registry on a store, with the test's business clock and id factory."""
    settings = Settings(database_url=database_url)
    initialise(settings)
    return Registry(env=event_store(settings).library_env(create_table=False), clock=clock,
                    timezone=settings.timezone, new_id=lambda: next(ids),
                    personal_data=build_data_keys(settings))


def write_history(database_url: str) -> UUID:
    """The same commands, at the same business times, with the same ids, whatever the store:
    an intake, three cities (admitted, retracted, endorsed), a report, an end of membership.
    Returns the id of the city whose membership ended."""
    clock = SettableClock()
    ids = (UUID(int=n) for n in itertools.count(1))
    registry = registry_on(database_url, clock, ids)
    try:
        clock.set("2019-01-10 10:00")
        registry.open_intake(SECRETARIAT, 2019)
        clock.set("2019-03-15 12:00")
        submitted = {}
        for name in ("Hamburg", "Bremen", "Munich"):
            submitted[name] = registry.submit_application(CITY, application_form(name))
            registry.endorse(COMMISSION, submitted[name].application_id)
        for name in ("Hamburg", "Bremen"):
            registry.admit(SECRETARIAT, submitted[name].application_id, jury="recommended")
        registry.retract(SECRETARIAT, submitted["Bremen"].application_id, "corrigendum")
        hamburg = submitted["Hamburg"].city_id
        clock.set("2021-04-01 10:00")
        registry.submit_report(CITY, hamburg, progress_report())
        clock.set("2022-02-01 10:00")
        registry.end_membership(SECRETARIAT, hamburg, "withdrawn_by_city")
    finally:
        registry.close()
    return hamburg


@pytest.fixture
def written(database_url: str) -> UUID:
    return write_history(database_url)


def audit(database_url: str | None, *args: str) -> tuple[int, Any]:
    """`gnlc audit ...` in-process; the exit code and the JSON it printed."""
    options = ["--database-url", database_url] if database_url else []
    result = CliRunner().invoke(app, [*options, "audit", *args, "--json"])
    assert result.stdout, result.stderr
    return result.exit_code, json.loads(result.stdout)


def export(database_url: str, path: Path, *options: str) -> list[dict[str, Any]]:
    """`gnlc audit export` by the installed program, to a file; its lines."""
    with path.open("w", encoding="utf-8") as out:
        done = subprocess.run([str(GNLC), "--database-url", database_url, "audit", "export",
                               *options], stdout=out, stderr=subprocess.PIPE, text=True,
                              check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert done.stderr.strip() == f"exported {len(lines)} events"
    return lines


def test_every_audit_command_works_through_the_command_line(
    database_url: str, written: UUID, tmp_path: Path
) -> None:
    code, verdict = audit(database_url, "verify")
    assert (code, verdict["ok"], verdict["first_bad_position"]) == (0, True, None)
    head = verdict["head"]
    code, published = audit(database_url, "head")
    assert (code, published) == (0, head)
    plain = CliRunner().invoke(app, ["--database-url", database_url, "audit", "head"])
    assert (plain.exit_code, plain.stdout.strip()) == (0, f"{head['hash']}@{head['position']}")
    expect = plain.stdout.strip()
    assert audit(database_url, "verify", "--expect", expect) == (0, verdict)

    lines = export(database_url, tmp_path / "log.jsonl")
    assert len(lines) == verdict["checked"]
    assert (lines[-1]["position"], lines[-1]["hash"]) == (head["position"], head["hash"])
    code, offline = audit(None, "verify-export", str(tmp_path / "log.jsonl"), "--expect", expect)
    assert (code, offline) == (0, verdict)
    middle = lines[len(lines) // 2]
    tail = export(database_url, tmp_path / "tail.jsonl", "--after", str(middle["position"]))
    assert tail == lines[len(lines) // 2 + 1:]
    assert audit(None, "verify-export", str(tmp_path / "tail.jsonl"), "--expect", expect)[0] == 0

    city = str(written)
    code, now = audit(database_url, "state", city)
    assert code == 0
    assert (now["city"]["status"], [a["status"] for a in now["applications"]]) == (
        "ended", ["admitted"])
    code, member = audit(database_url, "state", city, "--as-of", "2021-12-31")
    assert (code, member["city"]["status"]) == (0, "active")
    assert audit(database_url, "state", city, "--position", "0") == (
        0, {"city": None, "applications": []})
    code, known = audit(database_url, "state", city, "--known-at", lines[-1]["recorded_at"])
    assert (code, known) == (0, now)
    before = [x for x in lines if x["recorded_at"] < lines[-1]["recorded_at"]][-1]
    code, earlier = audit(database_url, "state", city, "--known-at", before["recorded_at"])
    assert (code, earlier) == (0, member)


def normalised(line: dict[str, Any]) -> dict[str, Any]:
    """An export line without what differs between two stores holding the same events:
    - `position`: the store's (PostgreSQL's positions may have gaps); the lines' order stays;
    - `recorded_at` and the library's `timestamp` inside the state: the real clock when each
      store recorded them (checked to be a recorded time, and left out);
    - `hash` and `previous_hash`: they cover both (each export is verified on its own);
    - a person's sealed values: encrypted under a fresh random key in each store.
    Everything else, the state's bytes included, must be equal."""
    assert RECORDED(line["recorded_at"]), line["recorded_at"]
    assert HASH(line["hash"]) and HASH(line["previous_hash"])
    state = base64.b64decode(line["state"])
    without_time, found = TIMESTAMP.subn(b'"timestamp":"-"', state)
    assert found == 1, state
    without_time = SEALED.sub(b'"sealed":"-"', without_time)
    kept = {k: v for k, v in line.items()
            if k not in ("position", "recorded_at", "hash", "previous_hash", "state")}
    return {**kept, "state": without_time.decode()}


def test_a_postgresql_export_verifies_offline_and_equals_the_sqlite_export_of_the_same_events(
    postgres_schema_url: str, tmp_path: Path
) -> None:
    sqlite_url = f"sqlite:///{tmp_path}/gnlc.sqlite"
    exports = {}
    for name, url in (("sqlite", sqlite_url), ("postgres", postgres_schema_url)):
        write_history(url)
        exports[name] = export(url, tmp_path / f"{name}.jsonl")
        code, head = audit(url, "head")
        code, offline = audit(None, "verify-export", str(tmp_path / f"{name}.jsonl"),
                              "--expect", f"{head['hash']}@{head['position']}")
        assert (code, offline["ok"], offline["checked"]) == (0, True, len(exports[name]))

    sqlite, postgres = exports["sqlite"], exports["postgres"]
    assert len(postgres) == len(sqlite) >= 15
    for number, (a, b) in enumerate(zip(sqlite, postgres, strict=True), start=1):
        assert normalised(b) == normalised(a), f"line {number}"
    assert all(UUID(x["stream_id"]) and str(UUID(x["stream_id"])) == x["stream_id"]
               for x in postgres)
    assert [x["position"] for x in sqlite] == sorted(x["position"] for x in sqlite)


def test_the_normalised_comparison_tells_a_changed_state_apart(tmp_path: Path) -> None:
    """The comparison above fails on a real difference: one byte of a state, other than the
    library's timestamp."""
    url = f"sqlite:///{tmp_path}/gnlc.sqlite"
    write_history(url)
    line = export(url, tmp_path / "log.jsonl")[3]
    state = base64.b64decode(line["state"])
    changed = state.replace(b'"actor"', b'"actos"', 1)
    assert changed != state
    other = {**line, "state": base64.b64encode(changed).decode()}
    assert normalised(other) != normalised(line)
    assert normalised({**line, "stream_version": line["stream_version"] + 1}) != normalised(line)
