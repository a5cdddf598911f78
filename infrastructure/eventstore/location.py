"""The event store: eventsourcing's SQLite or PostgreSQL module, chosen by the database URL."""

from __future__ import annotations

import fcntl
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
from eventsourcing.utils import get_topic
from psycopg import sql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from domain.errors import InvalidInput
from infrastructure.eventstore.recorders import PostgresRegistryRecorder, SQLiteRegistryRecorder

# Any fixed number: every gnlc process that creates the schema takes this PostgreSQL advisory lock.
SCHEMA_LOCK_KEY = 0x676E6C63  # "gnlc"
EVENTS_TABLE = "gnlc_events"
# The registry application's name (`Registry.name`): the library reads `<NAME>_<KEY>` before
# `<KEY>`, and names the PostgreSQL events table after it.
APPLICATION_NAME = "gnlc"

# Library settings the audit chain depends on, pinned whatever the environment says (the
# library merges `os.environ` into every application's settings): events inserted through the
# library's stored function skip the recorder that writes the chain; text stream ids cannot be
# hashed as UUIDs; a cipher, compressor, other transcoder or mapper would change the bytes the
# audit reads and exports; snapshots would be read back without being chained. The empty
# values select the library's defaults (and no cipher, even with a CIPHER_KEY set).
CHAIN_SETTINGS = {
    "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
    "ORIGINATOR_ID_TYPE": "uuid",
    "MAPPER_TOPIC": "",
    "TRANSCODER_TOPIC": "",
    "CIPHER_TOPIC": "",
    "CIPHER_KEY": "",
    "COMPRESSOR_TOPIC": "",
    "IS_SNAPSHOTTING_ENABLED": "n",
}


@dataclass(frozen=True)
class EventStoreLocation:
    """Where the events live, and the library settings that point there."""

    url: URL
    lock_timeout_seconds: int

    @classmethod
    def from_url(cls, text: str, lock_timeout_seconds: int = 30) -> EventStoreLocation:
        try:
            url = make_url(text)
        except ArgumentError:
            raise InvalidInput(f"not a database URL: {text!r}", field="database_url") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise InvalidInput(
                f"database URL must start with sqlite:/// or postgresql://, got {text!r}",
                field="database_url",
            )
        if url.get_backend_name() == "sqlite" and not url.database:
            raise InvalidInput("an SQLite URL needs a file path", field="database_url")
        return cls(url, lock_timeout_seconds)

    @property
    def is_postgres(self) -> bool:
        return self.url.get_backend_name() == "postgresql"

    @property
    def schema(self) -> str:
        schema = self.url.query.get("schema", "public")
        return schema if isinstance(schema, str) else schema[0]

    def redacted(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def library_env(self, create_table: bool) -> dict[str, str]:
        """The eventsourcing settings for an application on this store, each given under its
        own name and under `GNLC_<name>`, so that none is taken from the environment."""
        settings = {**self._store_settings(create_table), **CHAIN_SETTINGS}
        prefix = APPLICATION_NAME.upper() + "_"
        return {**settings, **{prefix + key: value for key, value in settings.items()}}

    def _store_settings(self, create_table: bool) -> dict[str, str]:
        create = "y" if create_table else "n"
        if not self.is_postgres:
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.sqlite_path),
                "SQLITE_LOCK_TIMEOUT": str(self.lock_timeout_seconds),
                "APPLICATION_RECORDER_TOPIC": get_topic(SQLiteRegistryRecorder),
                "CREATE_TABLE": create,
            }
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.url.database or "postgres",
            "POSTGRES_HOST": self.url.host or "127.0.0.1",
            "POSTGRES_PORT": str(self.url.port or 5432),
            "POSTGRES_USER": self.url.username or "postgres",
            # The library refuses to start without a password setting, even under trust auth.
            "POSTGRES_PASSWORD": self.url.password or "",
            "POSTGRES_SCHEMA": self.schema,
            "POSTGRES_LOCK_TIMEOUT": str(self.lock_timeout_seconds),
            "POSTGRES_POOL_SIZE": "2",
            "APPLICATION_RECORDER_TOPIC": get_topic(PostgresRegistryRecorder),
            "CREATE_TABLE": create,
        }

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.database or "")

    def psycopg_conninfo(self) -> str:
        return psycopg.conninfo.make_conninfo(
            dbname=self.url.database or "postgres",
            host=self.url.host or "127.0.0.1",
            port=self.url.port or 5432,
            user=self.url.username or "postgres",
            password=self.url.password or "",
            connect_timeout=5,
        )

    def has_schema(self) -> bool:
        """Whether the event tables exist (a cheap check made by every command)."""
        if not self.is_postgres:
            if not self.sqlite_path.exists():
                return False
            with sqlite3.connect(self.sqlite_path) as connection:
                row = connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name='stored_events'"
                ).fetchone()
            return row is not None
        with psycopg.connect(self.psycopg_conninfo()) as connection:
            row = connection.execute(
                "SELECT to_regclass(%s)", (f"{self.schema}.{EVENTS_TABLE}",)
            ).fetchone()
        return row is not None and row[0] is not None

    def prepare(self) -> None:
        """What must exist before the library creates its tables: the folder or the schema."""
        if not self.is_postgres:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            return
        with psycopg.connect(self.psycopg_conninfo(), autocommit=True) as connection:
            connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )

    def schema_lock(self) -> SchemaLock:
        return SchemaLock(self)


class SchemaLock:
    """Serialises schema creation between processes: a PostgreSQL advisory lock, or for SQLite an
    exclusive lock on a sidecar file (`<database>.lock`) beside the database."""

    def __init__(self, location: EventStoreLocation) -> None:
        self.location = location
        self.connection: psycopg.Connection[tuple[object, ...]] | None = None
        self.lock_file: IO[bytes] | None = None

    def __enter__(self) -> SchemaLock:
        if self.location.is_postgres:
            self.connection = psycopg.connect(self.location.psycopg_conninfo(), autocommit=True)
            self.connection.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        else:
            path = self.location.sqlite_path
            path.parent.mkdir(parents=True, exist_ok=True)
            self.lock_file = path.with_name(path.name + ".lock").open("ab")
            fcntl.flock(self.lock_file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_: object) -> None:
        if self.connection is not None:
            self.connection.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
            self.connection.close()
        if self.lock_file is not None:
            fcntl.flock(self.lock_file, fcntl.LOCK_UN)
            self.lock_file.close()
