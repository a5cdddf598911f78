"""The projection runner: catches up from the stored positions, then follows the log live.

It reads the log in batches with the library's `select_notifications` and writes each batch's rows
and positions in one transaction; PostgreSQL wakes it through the library's NOTIFY channel, SQLite
is polled. One runner works on a projection at a time (a lock per projection)."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from eventsourcing.utils import get_topic
from psycopg import sql

from application.registry import Registry
from infrastructure.readmodels import NEXT, Conflict, ReadModelStore
from infrastructure.store import EventStoreLocation
from projections.base import Projection
from projections.catalogue import PROJECTIONS


class ProjectionFailed(Exception):
    """A projection could not apply an event; nothing of its batch was written."""

    def __init__(self, name: str, position: int, topic: str, error: Exception) -> None:
        super().__init__(
            f"projection {name} failed on the event at position {position} ({topic}): "
            f"{type(error).__name__}: {error}; it resumes from that event when restarted")
        self.name, self.position, self.topic = name, position, topic


class ProjectionLock:
    """Held by the one runner working on a projection: a PostgreSQL advisory lock (released when
    its connection dies), or an exclusive lock on a file beside the SQLite read models."""

    def __init__(self, location: EventStoreLocation, lock_dir: Path | None, name: str) -> None:
        self.location, self.name = location, name
        self.lock_dir = lock_dir
        digest = hashlib.sha256(f"gnlc:{location.schema}:{name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self.connection: psycopg.Connection[Any] | None = None
        self.file: IO[bytes] | None = None

    @property
    def held(self) -> bool:
        return self.connection is not None or self.file is not None

    def try_acquire(self) -> bool:
        if self.held:
            return True
        if self.location.is_postgres:
            connection = psycopg.connect(self.location.psycopg_conninfo(), autocommit=True)
            row = connection.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            if row and row[0]:
                self.connection = connection
                return True
            connection.close()
            return False
        assert self.lock_dir is not None
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        file = (self.lock_dir / f"{self.name}.lock").open("ab")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        self.file = file
        return True

    def lost(self) -> bool:
        """Whether a lock this runner took has gone with its PostgreSQL session (a network cut,
        an idle_session_timeout, pg_terminate_backend): another runner may hold it now."""
        if self.connection is None:
            return False
        try:
            self.connection.execute("SELECT 1")
            return False
        except psycopg.Error:
            return True

    def release(self) -> None:
        if self.connection is not None:
            # Unlock before closing: the server frees a closed session's locks only when its
            # backend has exited, a moment after close() returns.
            with contextlib.suppress(psycopg.Error):
                self.connection.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            self.connection.close()
            self.connection = None
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


@dataclass
class Tracked:
    """A projection this runner works on, with the position and generation it has reached."""

    projection: Projection
    position: int
    generation: int


class ProjectionRunner:
    def __init__(self, registry: Registry, store: ReadModelStore, location: EventStoreLocation,
                 lock_dir: Path | None, timezone: str,
                 names: Iterable[str] = tuple(PROJECTIONS), batch_size: int = 5000) -> None:
        self.registry, self.store, self.location = registry, store, location
        self.timezone, self.batch_size = timezone, batch_size
        self.names = tuple(names)
        self.locks = {name: ProjectionLock(location, lock_dir, name) for name in self.names}
        self.tracked: dict[str, Tracked] = {}
        self.failed: set[str] = set()  # projections that failed in this process: not retried

    # --- ownership -----------------------------------------------------------------------------

    def acquire(self) -> list[str]:
        """Take the locks of projections no other runner works on; load what they had stored."""
        taken = [n for n in self.names if n not in self.tracked and n not in self.failed
                 and self.locks[n].try_acquire()]
        for name in taken:
            self._load(name)
        return taken

    def release(self) -> None:
        for lock in self.locks.values():
            lock.release()
        self.tracked.clear()

    def _load(self, name: str) -> None:
        projection = PROJECTIONS[name](self.timezone)
        position, generation = self.store.positions()[name]
        self.store.load(projection)
        self.tracked[name] = Tracked(projection, position, generation)

    # --- work ----------------------------------------------------------------------------------

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Apply every event up to the head of the log; return how many were read."""
        read = 0
        while self.tracked:
            self._drop_lost()
            if not self.tracked:
                return read
            start = min(t.position for t in self.tracked.values()) + 1
            head = self.registry.recorder.max_notification_id() or 0
            if start > head:
                return read
            batch = self.registry.recorder.select_notifications(
                start, self.batch_size, stop=head, topics=self._topics())
            last = head if len(batch) < self.batch_size else batch[-1].id
            self._apply(batch, self.tracked.items())
            moving = {n: (t.projection, (t.position, t.generation), last)
                      for n, t in self.tracked.items() if t.position < last}
            try:
                self.store.commit(moving)
            except Conflict:
                for name in list(self.tracked):  # another writer moved: start again from its rows
                    self._load(name)
                continue
            for tracked in self.tracked.values():
                tracked.position = max(tracked.position, last)
            read += len(batch)
            if progress:
                progress(last, head)
        return read

    def _drop_lost(self) -> None:
        """Stop working on projections whose lock has gone; `run` takes them again when free."""
        for name in [n for n in self.tracked if self.locks[n].lost()]:
            self.locks[name].release()
            del self.tracked[name]

    def _apply(self, batch: Iterable[Any], tracked: Iterable[tuple[str, Tracked]]) -> None:
        targets = list(tracked)
        for notification in batch:
            event = self.registry.mapper.to_domain_event(notification)
            for name, t in targets:
                if notification.id <= t.position:
                    continue
                try:
                    t.projection.apply(event)
                except Exception as error:
                    # Memory now holds half a batch: drop it all; what is stored is intact.
                    self.failed.add(name)
                    self.release()
                    raise ProjectionFailed(name, notification.id, notification.topic,
                                           error) from error

    def _topics(self) -> list[str]:
        return sorted({get_topic(cls) for t in self.tracked.values()
                       for cls in t.projection.handles()})

    def run(self, stop: threading.Event, on_failure: Callable[[ProjectionFailed], None],
            poll_seconds: float = 0.05, takeover_seconds: float = 1.0) -> None:
        """Work until `stop` is set: take free projections, catch up, wait for new events.

        A projection that fails is reported and left alone (its position stays before the event
        that failed); the others go on."""
        channel = getattr(self.registry.recorder, "channel_name", None)
        waiter = _Waiter(self.location, channel, poll_seconds)
        last_try = 0.0
        try:
            while not stop.is_set():
                now = datetime.now(UTC).timestamp()
                if len(self.tracked) < len(self.names) and now - last_try >= takeover_seconds:
                    self.acquire()
                    last_try = now
                try:
                    self.catch_up()
                except ProjectionFailed as failure:
                    on_failure(failure)
                    last_try = 0.0
                    continue
                waiter.wait(stop, takeover_seconds)
        finally:
            waiter.close()
            self.release()

    # --- rebuilds ------------------------------------------------------------------------------

    def rebuild(self, names: str | Sequence[str],
                progress: Callable[[int, int], None] | None = None) -> int:
        """Fold projections from zero in one pass over the log, into fresh tables, then swap
        them in (the live tables answer until then). Returns the position they reached."""
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            self.store.prepare_rebuild(PROJECTIONS[name])
        # `deadlines` keeps exactly the rows of `members` (the same handlers under another table
        # name): fold them once and write the rows to both tables.
        shared = {"members", "deadlines"} <= set(names) and \
            PROJECTIONS["deadlines"].handlers is PROJECTIONS["members"].handlers
        building = {name: Tracked(PROJECTIONS[name](self.timezone), 0, 0)
                    for name in names if not (shared and name == "deadlines")}
        topics = sorted({get_topic(c) for t in building.values() for c in t.projection.handles()})
        position = 0
        try:
            while True:
                positions = self.store.positions()
                live = {name: positions[name] for name in names}
                target = max(self.registry.recorder.max_notification_id() or 0,
                             *(p for p, _ in live.values()))
                while position < target:
                    batch = self.registry.recorder.select_notifications(
                        position + 1, self.batch_size, stop=target, topics=topics)
                    self._apply(batch, building.items())
                    position = target if len(batch) < self.batch_size else batch[-1].id
                    for tracked in building.values():
                        tracked.position = position
                    # What is folded stays until it is written: keep the collector's full
                    # collections from rescanning it again and again (a third of the CPU).
                    gc.freeze()
                    if progress:
                        progress(position, target)
                for name, tracked in building.items():
                    also = ("deadlines",) if shared and name == "members" else ()
                    self.store.write(tracked.projection, NEXT, also)
                try:
                    self.store.swap(live, position)
                    return position
                except Conflict:
                    continue  # a live runner moved past us: catch up to it, then swap
        finally:
            gc.unfreeze()


class _Waiter:
    """Waits for new events: LISTEN on the library's NOTIFY channel, or a short poll (SQLite)."""

    def __init__(self, location: EventStoreLocation, channel: str | None,
                 poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self.connection: psycopg.Connection[Any] | None = None
        if location.is_postgres and channel:
            self.connection = psycopg.connect(location.psycopg_conninfo(), autocommit=True)
            self.connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def wait(self, stop: threading.Event, at_most: float) -> None:
        if self.connection is None:
            stop.wait(self.poll_seconds)
            return
        for _ in self.connection.notifies(timeout=at_most, stop_after=1):
            break

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
