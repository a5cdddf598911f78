"""Wakes live-stream clients when the log grows: one watcher per server process, not per client.

PostgreSQL: LISTEN on the library's NOTIFY channel (sent by every insert); SQLite: a short poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import psycopg
from psycopg import sql

from application.registry import Registry
from infrastructure.eventstore.location import EventStoreLocation

POLL_SECONDS = 0.05
# PostgreSQL without its listening connection: how often to poll the head and try to LISTEN again.
RECONNECT_SECONDS = 0.5
log = logging.getLogger("gnlc.stream")


class HeadWatcher:
    """Tracks the head of the log in a thread and wakes every registered asyncio waiter."""

    def __init__(self, registry: Registry, location: EventStoreLocation) -> None:
        self.registry, self.location = registry, location
        self.head = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: psycopg.Connection[Any] | None = None

    def start(self) -> None:
        self.head = self.registry.recorder.max_notification_id() or 0
        self._thread = threading.Thread(target=self._watch, name="head-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    async def wait_beyond(self, position: int, timeout: float) -> bool:
        """Wait until the head is beyond `position`; False on timeout."""
        if self.head > position:
            return True
        woken = asyncio.Event()
        entry = (asyncio.get_running_loop(), woken)
        with self._lock:
            self._waiters.add(entry)
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while self.head <= position:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), left)
                woken.clear()
            return True
        finally:
            with self._lock:
                self._waiters.discard(entry)

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                self._wait()
                try:
                    head = self.registry.recorder.max_notification_id() or 0
                except Exception as error:  # the database may be away for a moment: keep going
                    log.warning("could not read the head of the log: %s", error)
                    self._stop.wait(1.0)
                    continue
                if head != self.head:
                    self.head = head
                    self._wake()
        finally:
            self._close()

    @property
    def _listens(self) -> bool:
        return self.location.is_postgres and bool(self._channel)

    @property
    def _channel(self) -> str | None:
        return getattr(self.registry.recorder, "channel_name", None)

    def _listen(self) -> None:
        """LISTEN on a connection of its own, opened again whenever it was lost (a database
        restart, pg_terminate_backend, a network cut); the head is read after every wait, so
        nothing committed while it was away is missed."""
        if not self._listens or self._connection is not None:
            return
        try:
            connection = psycopg.connect(self.location.psycopg_conninfo(), autocommit=True,
                                         application_name=self.application_name)
        except psycopg.Error as error:
            log.warning("could not listen for new events (polling meanwhile): %s", error)
            return
        try:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(str(self._channel))))
        except psycopg.Error as error:
            log.warning("could not listen for new events (polling meanwhile): %s", error)
            with contextlib.suppress(psycopg.Error):
                connection.close()
            return
        self._connection = connection

    @property
    def application_name(self) -> str:
        """How the listening session shows in pg_stat_activity."""
        return f"gnlc head watch {self.location.schema}"[:63]

    def _wait(self) -> None:
        self._listen()
        if self._connection is None:
            # SQLite, or PostgreSQL while the listening connection is lost: poll the head.
            self._stop.wait(POLL_SECONDS if not self._listens else RECONNECT_SECONDS)
            return
        try:
            # A second at most, so that a stop request is noticed.
            for _ in self._connection.notifies(timeout=1.0, stop_after=1):
                break
        except psycopg.Error as error:
            log.warning("lost the connection listening for new events: %s", error)
            self._close()  # opened again on the next wait

    def _close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, woken in waiters:
            with contextlib.suppress(RuntimeError):  # the client's loop has closed
                loop.call_soon_threadsafe(woken.set)
