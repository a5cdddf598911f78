"""Idempotency keys: a retried POST gets the first response and writes nothing more.

The design, and why:

- **The key is recorded atomically with the command's events.** While a keyed use case runs,
  `command_keys.pending_key` names the key; the recorder that inserts the events writes the row
  (owner, key, fingerprint, first and last position) in the same transaction
  (infrastructure/eventstore/recorders.py), in the event store's own database. So either the
  events and the key are stored, or neither is: no crash or database error after the commit can
  leave events whose key a retry would not find.
- **The response is stored after the commit, and rebuilt from the events if it is missing.** A
  use case returns its result only after the commit, so the body cannot be in that transaction.
  It is written into the key's row just after; if the process died in between, the retry rebuilds
  the body from the events recorded under the key (each route says how, from the same values its
  use case returned: see `_command` in api.py) and stores it. Outcomes without events (a refusal
  such as 409 invalid_transition) are stored in the row directly: nothing else was written.
- **No takeover while the first request runs.** Each key is guarded by a lock that its request
  holds until it is done: a PostgreSQL session advisory lock, or an exclusive lock on one of 256
  files beside the SQLite store. A retry waits for the lock (at most `WAIT_FOR_FIRST_SECONDS`,
  then 409 "still running") and never takes a key over by age. Both locks die with the process
  (the session ends, the file is closed), so a crashed request never blocks its key. Should a
  PostgreSQL lock go with a lost session while its request still runs, the key's primary key
  still lets only one transaction commit events under it: the other is refused as a conflict.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from infrastructure.eventstore.chain import recorded_text
from infrastructure.eventstore.command_keys import COMMAND_KEYS_TABLE, PendingKey, pending_key

KEEP_FOR_SECONDS = 48 * 3600  # at least the promised 24 hours
WAIT_FOR_FIRST_SECONDS = 30.0
LOCK_FILES = 256
# Fault injection for tests: the server process exits right after a keyed command's events were
# committed, before its response is stored or sent.
EXIT_AFTER_COMMIT = "GNLC_TEST_EXIT_AFTER_COMMIT"

Outcome = tuple[int, dict[str, Any]]


class KeyReusedWithOtherRequest(Exception):
    """The key was first used for a different request."""


class StillRunning(Exception):
    """The first request with this key is still running after the wait."""


@dataclass(frozen=True)
class Recorded:
    """What a keyed command stored: the positions of its events, committed with its key."""

    first: int
    last: int


def fingerprint(method: str, path: str, body: BaseModel) -> str:
    """What makes two requests the same: method, path and the canonical JSON of the body (the
    validated model's JSON-mode dump with sorted keys and no whitespace), so key order and
    spacing in what the client sent do not matter, and any difference in content does."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


class IdempotencyKeys:
    """The keys, in the event store's database (PostgreSQL: its schema; SQLite: its file)."""

    def __init__(self, engine: Engine, schema: str | None, lock_dir: Path | None,
                 exit_after_commit: bool | None = None) -> None:
        self.engine, self.schema, self.lock_dir = engine, schema, lock_dir
        self.table = Table(
            COMMAND_KEYS_TABLE, MetaData(schema=schema),
            Column("owner", String(200), primary_key=True),
            Column("idem_key", String(255), primary_key=True),
            Column("fingerprint", String(64), nullable=False),
            # The command's events, when it stored any.
            Column("first_position", Integer, nullable=True),
            Column("last_position", Integer, nullable=True),
            # The response, once stored.
            Column("status", Integer, nullable=True),
            Column("body", Text, nullable=True),
            Column("created_at", String(32), nullable=False, index=True),  # chain.recorded_text
        )
        if exit_after_commit is None:
            exit_after_commit = os.environ.get(EXIT_AFTER_COMMIT, "") not in ("", "0")
        self.exit_after_commit = exit_after_commit
        self._purged_at = 0.0

    def create(self) -> None:
        self.table.metadata.create_all(self.engine, checkfirst=True)

    def once(self, owner: str, key: str, print_: str, execute: Callable[[], Outcome],
             keep: Callable[[int, dict[str, Any]], bool],
             replay: Callable[[Recorded], Outcome]) -> Outcome:
        """The first response for (owner, key): the stored one, one rebuilt by `replay` from the
        events the first request committed, or computed now by `execute`."""
        self._purge()
        with self._locked(owner, key):
            row = self._row(owner, key)
            if row is not None:
                if row.fingerprint != print_:
                    raise KeyReusedWithOtherRequest(key)
                if row.status is not None:
                    return int(row.status), json.loads(row.body)
                # The events were committed, the response was lost with its process.
                status, body = replay(Recorded(row.first_position, row.last_position))
                self._store(owner, key, print_, status, body)
                return status, body
            pending = PendingKey(owner, key, print_)
            token = pending_key.set(pending)
            try:
                status, body = execute()
            finally:
                pending_key.reset(token)
            if self.exit_after_commit and pending.recorded:
                os._exit(75)
            if keep(status, body):
                self._store(owner, key, print_, status, body)
            return status, body

    def _row(self, owner: str, key: str) -> Any:
        t = self.table
        with self.engine.connect() as connection:
            return connection.execute(select(t).where(
                and_(t.c.owner == owner, t.c.idem_key == key))).first()

    def _store(self, owner: str, key: str, print_: str, status: int,
               body: dict[str, Any]) -> None:
        """The response into the key's row (written with the events), or a new row for an
        outcome that stored no events."""
        t = self.table
        content = json.dumps(body)
        with self.engine.begin() as connection:
            stored = connection.execute(update(t).where(and_(
                t.c.owner == owner, t.c.idem_key == key)).values(status=status, body=content))
            if stored.rowcount == 0:
                connection.execute(insert(t).values(
                    owner=owner, idem_key=key, fingerprint=print_, status=status, body=content,
                    created_at=recorded_text(datetime.now(UTC))))

    @contextmanager
    def _locked(self, owner: str, key: str) -> Iterator[None]:
        """Hold the key's lock while its request runs; StillRunning after the wait."""
        digest = hashlib.sha256(f"gnlc:{self.schema}:idempotency:{owner}\n{key}".encode()).digest()
        deadline = time.monotonic() + WAIT_FOR_FIRST_SECONDS
        pause = threading.Event()
        if self.lock_dir is None:
            lock_id = int.from_bytes(digest[:8], "big", signed=True)
            with self.engine.connect() as connection:
                # Autocommit: the session's lock must not keep a transaction open meanwhile.
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
                while not _try_advisory_lock(connection, lock_id):
                    if time.monotonic() > deadline:
                        raise StillRunning(key)
                    pause.wait(0.02)  # the first request is running; try again shortly
                try:
                    yield
                finally:
                    # A connection lost meanwhile took its lock with it.
                    with contextlib.suppress(DBAPIError):
                        connection.execute(text("SELECT pg_advisory_unlock(:id)"),
                                           {"id": lock_id})
            return
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        stripe = int.from_bytes(digest[:4], "big") % LOCK_FILES
        with (self.lock_dir / f"idempotency-{stripe:03d}.lock").open("ab") as file:
            while True:
                try:
                    fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StillRunning(key) from None
                    pause.wait(0.02)
            try:
                yield
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)

    def _purge(self) -> None:
        """Forget keys older than `KEEP_FOR_SECONDS`, at most once a minute per process."""
        if time.monotonic() - self._purged_at < 60:
            return
        self._purged_at = time.monotonic()
        cutoff = recorded_text(datetime.fromtimestamp(time.time() - KEEP_FOR_SECONDS, UTC))
        with self.engine.begin() as connection:
            connection.execute(delete(self.table).where(self.table.c.created_at < cutoff))


def _try_advisory_lock(connection: Connection, lock_id: int) -> bool:
    return bool(connection.execute(text("SELECT pg_try_advisory_lock(:id)"),
                                   {"id": lock_id}).scalar())
