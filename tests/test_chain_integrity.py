"""The audit chain nothing can bypass.

A chain write that fails (a raising hash step, a chain row the database refuses) keeps nothing of
the transaction, on both backends, and is reported as `unavailable`, never as a version conflict;
library settings in the environment cannot route events around the chain.

Faults are real: our own hash step replaced by one that raises, a CHECK constraint or a trigger
on the chain table; settings are real environment variables.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment, get_topic
from typer.testing import CliRunner

import infrastructure.eventstore.recorders as recorders
from application.registry import Registry
from domain.errors import Conflict
from infrastructure.audit.log import StoredLog, verify
from infrastructure.bootstrap import build_registry, initialise
from infrastructure.cli import app
from infrastructure.cli.session import EXIT_UNAVAILABLE
from infrastructure.eventstore.chain import CHAIN_TABLE
from infrastructure.eventstore.location import APPLICATION_NAME, EventStoreLocation
from infrastructure.eventstore.recorders import (
    ChainWriteFailed,
    PostgresRegistryRecorder,
    SQLiteRegistryRecorder,
    UnsupportedSetting,
)
from infrastructure.settings import Settings
from tests.conftest import CITY, COMMISSION, SECRETARIAT, SettableClock, application_form
from tests.http_support import refused
from tests.live_server import LiveServer

# --- the store, counted and broken with plain SQL ------------------------------------------------


def store_of(database_url: str) -> StoredLog:
    return StoredLog(EventStoreLocation.from_url(database_url))


def stored(database_url: str) -> tuple[int, int]:
    """How many events and chain links the store holds."""
    log = store_of(database_url)
    with log.connect() as connection:
        events = connection.execute(f"SELECT count(*) FROM {log.events}").fetchone()[0]
        links = connection.execute(f"SELECT count(*) FROM {log.chain}").fetchone()[0]
    return int(events), int(links)


def refuse_chain_rows(database_url: str) -> None:
    """Make the database refuse every new chain row, as a constraint violation: a CHECK
    constraint on PostgreSQL, a trigger on SQLite (which cannot add one to a table)."""
    log = store_of(database_url)
    with log.connect() as connection:
        if log.location.is_postgres:
            connection.execute(f"ALTER TABLE {log.chain} ADD CONSTRAINT refuse_links "
                               "CHECK (position < 0) NOT VALID")
            connection.commit()
        else:
            connection.execute(f"CREATE TRIGGER refuse_links BEFORE INSERT ON {CHAIN_TABLE} "
                               "BEGIN SELECT RAISE(ABORT, 'chain rows refused'); END")


def assert_whole_chain(database_url: str) -> None:
    verdict = verify(store_of(database_url))
    events, links = stored(database_url)
    assert verdict.ok, verdict.json()
    assert verdict.checked == events == links > 0


@pytest.fixture
def hash_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the recorder's hash steps (one per transaction that writes events)."""
    calls: list[int] = []
    real = recorders.extend

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(recorders, "extend", counted)
    return calls


@pytest.fixture
def submitted(registry: Registry) -> Any:
    registry.open_intake(SECRETARIAT, 2019)
    return registry.submit_application(CITY, application_form("Hamburg"))


# --- item 10: a failing chain write keeps nothing ----------------------------------------------


def test_a_raising_hash_step_stores_nothing_and_is_reported_as_a_chain_failure_not_a_conflict(
        registry: Registry, submitted: Any, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = stored(database_url)
    version = registry.repository.get(submitted.application_id).version
    calls: list[int] = []

    def corrupt_head(*args: Any) -> Any:
        calls.append(1)
        raise ValueError("non-hexadecimal number found in fromhex() arg")

    monkeypatch.setattr(recorders, "extend", corrupt_head)
    with pytest.raises(ChainWriteFailed, match="nothing was stored: ValueError"):
        registry.endorse(COMMISSION, submitted.application_id)

    assert calls == [1]  # tried once: a chain failure is no concurrency conflict to retry
    assert stored(database_url) == before
    assert registry.repository.get(submitted.application_id).version == version
    monkeypatch.undo()
    registry.endorse(COMMISSION, submitted.application_id)
    assert_whole_chain(database_url)


def test_a_chain_row_the_database_refuses_stores_nothing_and_is_no_false_version_conflict(
        registry: Registry, submitted: Any, database_url: str, hash_steps: list[int]) -> None:
    before = stored(database_url)
    version = registry.repository.get(submitted.application_id).version
    hash_steps.clear()
    refuse_chain_rows(database_url)

    with pytest.raises(ChainWriteFailed) as failure:
        registry.endorse(COMMISSION, submitted.application_id)

    assert not isinstance(failure.value, Conflict)
    assert hash_steps == [1]  # the constraint violation was not retried as a version conflict
    assert stored(database_url) == before
    assert registry.repository.get(submitted.application_id).version == version


def test_the_command_line_reports_a_refused_chain_row_as_unavailable_and_stores_nothing(
        database_url: str) -> None:
    runner = CliRunner()
    options = ["--database-url", database_url, "--actor", "tester", "--now",
               "2019-01-10T10:00:00+01:00"]
    assert runner.invoke(app, [*options, "intake", "open", "2019", "--json"]).exit_code == 0
    before = stored(database_url)
    refuse_chain_rows(database_url)

    result = runner.invoke(app, [*options, "intake", "open", "2020", "--json"])

    assert result.exit_code == EXIT_UNAVAILABLE, result.stderr
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "unavailable"
    assert "audit chain" in error["message"]
    assert stored(database_url) == before


def test_the_http_api_answers_a_refused_chain_row_with_503_and_stores_nothing(
        api: LiveServer, database_url: str) -> None:
    with api.client(api.token("uil-coordination", SECRETARIAT.role)) as staff:
        assert staff.post("/intakes", json={"year": 2019}).status_code == 201
        before = stored(database_url)
        refuse_chain_rows(database_url)

        refused(staff.post("/intakes", json={"year": 2020}), 503, "unavailable")

    assert stored(database_url) == before


# --- item 11: library settings in the environment cannot bypass the chain ----------------------


def _plain_recorder(location: EventStoreLocation) -> str:
    return ("eventsourcing.postgres:PostgresApplicationRecorder" if location.is_postgres
            else "eventsourcing.sqlite:SQLiteApplicationRecorder")


# Each case: variables set in the environment before gnlc starts (a callable gets the store).
ENVIRONMENTS: dict[str, Callable[[EventStoreLocation], dict[str, str]]] = {
    "stored function": lambda _: {"POSTGRES_ENABLE_DB_FUNCTIONS": "y"},
    "stored function, app-prefixed": lambda _: {"GNLC_POSTGRES_ENABLE_DB_FUNCTIONS": "y"},
    "library recorder": lambda store: {"APPLICATION_RECORDER_TOPIC": _plain_recorder(store),
                                       "GNLC_APPLICATION_RECORDER_TOPIC": _plain_recorder(store)},
    "in-memory store": lambda _: {"GNLC_PERSISTENCE_MODULE": "eventsourcing.popo",
                                  "INFRASTRUCTURE_FACTORY": "eventsourcing.popo:Factory"},
    "text stream ids": lambda _: {"ORIGINATOR_ID_TYPE": "text",
                                  "GNLC_ORIGINATOR_ID_TYPE": "text"},
    # An AES key as the library makes one (its cipher needs pycryptodome, not installed here).
    "cipher": lambda _: {"CIPHER_KEY": base64.b64encode(os.urandom(16)).decode(),
                         "GNLC_CIPHER_TOPIC": "eventsourcing.cipher:AESCipher"},
    "compressor": lambda _: {"COMPRESSOR_TOPIC": "zlib", "GNLC_COMPRESSOR_TOPIC": "zlib"},
    "snapshots": lambda _: {"IS_SNAPSHOTTING_ENABLED": "y"},
    "another database": lambda _: {"GNLC_POSTGRES_DBNAME": "gnlc_elsewhere",
                                   "GNLC_SQLITE_DBNAME": ":memory:"},
}


@pytest.mark.parametrize("case", list(ENVIRONMENTS))
def test_library_settings_in_the_environment_leave_every_event_chained_and_readable(
        case: str, database_url: str, clock: SettableClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    location = EventStoreLocation.from_url(database_url)
    for name, value in ENVIRONMENTS[case](location).items():
        monkeypatch.setenv(name, value)

    registry = build_registry(Settings(database_url=database_url), clock)
    try:
        assert isinstance(registry.recorder, (SQLiteRegistryRecorder, PostgresRegistryRecorder))
        assert registry.mapper.cipher is None and registry.mapper.compressor is None
        assert registry.snapshots is None
        registry.open_intake(SECRETARIAT, 2019)
        registry.submit_application(CITY, application_form("Hamburg"))
    finally:
        registry.close()

    assert_whole_chain(database_url)
    log = store_of(database_url)
    with log.connect() as connection:  # stored as the audit reads it: plain JSON
        state = connection.execute(f"SELECT state FROM {log.events} LIMIT 1").fetchone()[0]
    assert "timestamp" in json.loads(bytes(state))


def test_a_registry_recorder_built_with_the_library_s_stored_function_refuses_to_start(
        postgres_schema_url: str) -> None:
    """However it is built, not only through `library_env`."""
    location = EventStoreLocation.from_url(postgres_schema_url)
    initialise(Settings(database_url=postgres_schema_url))
    env = {**location.library_env(create_table=False), "POSTGRES_ENABLE_DB_FUNCTIONS": "y",
           "GNLC_POSTGRES_ENABLE_DB_FUNCTIONS": "y"}
    factory = InfrastructureFactory.construct(Environment(APPLICATION_NAME, env))
    try:
        with pytest.raises(UnsupportedSetting, match="POSTGRES_ENABLE_DB_FUNCTIONS"):
            factory.application_recorder()
    finally:
        factory.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_registry_recorder_for_text_stream_ids_refuses_to_start(database_url: str) -> None:
    location = EventStoreLocation.from_url(database_url)
    initialise(Settings(database_url=database_url))
    env = {**location.library_env(create_table=False), "GNLC_ORIGINATOR_ID_TYPE": "text"}
    factory = InfrastructureFactory.construct(Environment(APPLICATION_NAME, env))
    try:
        with pytest.raises(UnsupportedSetting, match="ORIGINATOR_ID_TYPE"):
            factory.application_recorder()
    finally:
        factory.close()


def test_the_pinned_settings_are_read_under_the_registry_s_own_name() -> None:
    assert Registry.name == APPLICATION_NAME
    assert get_topic(SQLiteRegistryRecorder) in EventStoreLocation.from_url(
        "sqlite:///x.sqlite").library_env(False).values()
