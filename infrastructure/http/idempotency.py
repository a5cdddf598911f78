"""Idempotency keys: a retried POST gets the first response and writes nothing more.

Keys live in the database (beside the read models), so they survive restarts and are shared by
every server process. A request that finds its key claimed by a running request waits for it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

KEEP_FOR = timedelta(hours=48)  # at least the promised 24 hours
WAIT_FOR_FIRST_SECONDS = 30.0
# A claim not finished after this long belongs to a process that died; another may take it over.
ABANDONED_AFTER = timedelta(seconds=WAIT_FOR_FIRST_SECONDS * 2)

Outcome = tuple[int, dict[str, Any]]


class KeyReusedWithOtherRequest(Exception):
    """The key was first used for a different request."""


class StillRunning(Exception):
    """The first request with this key is still running after the wait."""


def fingerprint(method: str, path: str, body: BaseModel) -> str:
    """What makes two requests the same: method, path and the canonical JSON of the body (the
    validated model's JSON-mode dump with sorted keys and no whitespace), so key order and
    spacing in what the client sent do not matter, and any difference in content does."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


class IdempotencyKeys:
    def __init__(self, engine: Engine, schema: str | None) -> None:
        self.engine = engine
        self.table = Table(
            "idempotency_keys", MetaData(schema=schema),
            Column("owner", String(200), primary_key=True),
            Column("key", String(255), primary_key=True),
            Column("fingerprint", String(64), nullable=False),
            Column("status", Integer, nullable=True),
            Column("body", Text, nullable=True),
            Column("claimed_at", DateTime(timezone=True), nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False, index=True),
        )
        self._purged_at = 0.0

    def create(self) -> None:
        self.table.metadata.create_all(self.engine, checkfirst=True)

    def once(self, owner: str, key: str, print_: str, execute: Callable[[], Outcome],
             keep: Callable[[int, dict[str, Any]], bool]) -> Outcome:
        """The first response for (owner, key): computed now by `execute`, or the stored one."""
        deadline = time.monotonic() + WAIT_FOR_FIRST_SECONDS
        pause = threading.Event()
        while not self._claim(owner, key, print_):
            stored = self._stored(owner, key, print_)
            if stored is not None:
                return stored
            if time.monotonic() > deadline:
                raise StillRunning(key)
            pause.wait(0.02)  # the first request is running; poll its row
        try:
            status, body = execute()
        except BaseException:
            self._release(owner, key)
            raise
        if keep(status, body):
            self._finish(owner, key, status, body)
        else:
            self._release(owner, key)
        return status, body

    def _claim(self, owner: str, key: str, print_: str) -> bool:
        now = datetime.now(UTC)
        self._purge(now)
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(self.table).values(
                    owner=owner, key=key, fingerprint=print_, claimed_at=now, created_at=now))
            return True
        except IntegrityError:
            return self._take_over_abandoned(owner, key, print_, now)

    def _take_over_abandoned(self, owner: str, key: str, print_: str, now: datetime) -> bool:
        t = self.table
        with self.engine.begin() as connection:
            taken = connection.execute(update(t).where(and_(
                t.c.owner == owner, t.c.key == key, t.c.fingerprint == print_,
                t.c.status.is_(None), t.c.claimed_at < now - ABANDONED_AFTER,
            )).values(claimed_at=now))
        return taken.rowcount == 1

    def _stored(self, owner: str, key: str, print_: str) -> Outcome | None:
        t = self.table
        with self.engine.connect() as connection:
            row = connection.execute(select(t.c.fingerprint, t.c.status, t.c.body).where(
                and_(t.c.owner == owner, t.c.key == key))).first()
        if row is None:
            return None
        if row.fingerprint != print_:
            raise KeyReusedWithOtherRequest(key)
        if row.status is None:
            return None
        return int(row.status), json.loads(row.body)

    def _finish(self, owner: str, key: str, status: int, body: dict[str, Any]) -> None:
        t = self.table
        with self.engine.begin() as connection:
            connection.execute(update(t).where(and_(t.c.owner == owner, t.c.key == key))
                               .values(status=status, body=json.dumps(body)))

    def _release(self, owner: str, key: str) -> None:
        t = self.table
        with self.engine.begin() as connection:
            connection.execute(delete(t).where(and_(t.c.owner == owner, t.c.key == key)))

    def _purge(self, now: datetime) -> None:
        """Forget keys older than `KEEP_FOR`, at most once a minute per process."""
        if time.monotonic() - self._purged_at < 60:
            return
        self._purged_at = time.monotonic()
        with self.engine.begin() as connection:
            connection.execute(delete(self.table).where(self.table.c.created_at < now - KEEP_FOR))
