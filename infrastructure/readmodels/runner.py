"""The projection runner: catches up from the stored positions, then follows the log live.

It reads the log in batches with the library's `select_notifications` and writes each batch's rows
and positions in one transaction; PostgreSQL wakes it through the library's NOTIFY channel, SQLite
is polled. One runner works on a projection at a time (a lock per projection).

A rebuild reads the log fast (`log_reader`: rows straight from the events table, decoded with
orjson into the library's own event objects) and, on a large log, folds the projections that read
no topic in common in two processes; the swap stays one transaction here."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from eventsourcing.persistence import PersistenceError
from eventsourcing.utils import get_topic
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from application.registry import Registry
from infrastructure.eventstore.location import EventStoreLocation
from infrastructure.eventstore.log_reader import EventDecoder, LogReader
from infrastructure.eventstore.log_reader import Row as LogRow
from infrastructure.readmodels.tables import NEXT, Conflict, ReadModelStore, read_model_engine
from projections.base import Projection
from projections.catalogue import PROJECTIONS

log = logging.getLogger("gnlc.projections")

# What a failing database raises, through SQLAlchemy (the read models), the library (the log)
# or the drivers themselves (the runner's lock and LISTEN connections).
DATABASE_ERRORS = (SQLAlchemyError, PersistenceError, psycopg.Error, sqlite3.Error)


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
        """Apply every event up to the head of the log as it stood when called (events written
        meanwhile wait for the next call: under a stream of writes, the live runner then commits
        a batch per wake-up rather than one per command); return how many were read."""
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
            if last >= head:
                return read
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
            poll_seconds: float = 0.05, takeover_seconds: float = 1.0,
            retry_seconds: float = 1.0) -> None:
        """Work until `stop` is set: take free projections, catch up, wait for new events.

        A projection that fails is reported and left alone (its position stays before the event
        that failed); the others go on. When the database fails (a restart, a dropped
        connection, a refused commit), the runner drops what it holds in memory and its locks,
        and after `retry_seconds` takes them again from the stored positions."""
        channel = getattr(self.registry.recorder, "channel_name", None)
        waiter = _Waiter(self.location, channel, poll_seconds)
        last_try = 0.0
        try:
            while not stop.is_set():
                now = datetime.now(UTC).timestamp()
                try:
                    if len(self.tracked) < len(self.names) and \
                            now - last_try >= takeover_seconds:
                        self.acquire()
                        last_try = now
                    self.catch_up()
                except ProjectionFailed as failure:
                    on_failure(failure)
                    last_try = 0.0
                    continue
                except DATABASE_ERRORS as error:
                    # Memory may hold a batch whose commit failed (its changed rows already
                    # handed over): nothing of it may be used again, so start over from what
                    # is stored, as a restarted runner would.
                    log.warning("projection runner: the database failed (%s: %s); retrying "
                                "from the stored positions in %g s",
                                type(error).__name__, error, retry_seconds)
                    self.release()
                    last_try = 0.0
                    stop.wait(retry_seconds)
                    continue
                waiter.wait(stop, takeover_seconds)
        finally:
            waiter.close()
            self.release()

    # --- rebuilds ------------------------------------------------------------------------------

    # From this many events in the log, a rebuild of projections that read disjoint topics folds
    # them in two processes (below it, starting the second one costs more than it saves).
    parallel_from = 100_000

    def rebuild(self, names: str | Sequence[str],
                progress: Callable[[int, int], None] | None = None) -> int:
        """Fold projections from zero into fresh tables, then swap them in (the live tables
        answer until then). Returns the position they reached.

        One pass over the log read fast (`log_reader`); projections that read no topic in common
        are folded in a process of their own when the log is large, each writing its own fresh
        tables; the swap of them all is one transaction here, as it is without processes."""
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            self.store.prepare_rebuild(PROJECTIONS[name])
        groups = disjoint_groups([PROJECTIONS[name] for name in names])
        specs = self._worker_specs(groups[1:])
        local = Folder(self.registry, groups[0] if specs else [c for g in groups for c in g],
                       self.timezone, self.batch_size)
        workers: list[FoldWorker] = []
        try:
            for spec in specs:
                workers.append(FoldWorker(spec))
            return self._fold_and_swap(names, local, workers, progress)
        except ProjectionFailed as failure:
            self.failed.add(failure.name)
            self.release()
            raise
        finally:
            for worker in workers:
                worker.close()
            gc.unfreeze()

    def _fold_and_swap(self, names: Sequence[str], local: Folder, workers: Sequence[FoldWorker],
                       progress: Callable[[int, int], None] | None) -> int:
        while True:
            positions = self.store.positions()
            live = {name: positions[name] for name in names}
            target = max(self.registry.recorder.max_notification_id() or 0,
                         *(p for p, _ in live.values()))
            for worker in workers:
                worker.start_build(target)
            position = local.fold(target, progress)
            for worker in workers:  # their tables are written before ours (one SQLite writer)
                worker.wait_built()
            local.write(self.store)
            try:
                self.store.swap(live, position)
                return position
            except Conflict:
                continue  # a live runner moved past us: catch up to it, then swap

    def _worker_specs(self, groups: Sequence[Sequence[type[Projection]]]) -> list[WorkerSpec]:
        """One for each group to fold in a worker process; none when the log is small, there
        is one core, or a group cannot be sent to a process (a class defined in a function)."""
        head = self.registry.recorder.max_notification_id() or 0
        if not groups or head < self.parallel_from or (os.cpu_count() or 1) < 2:
            return []
        specs = [self._worker_spec(group) for group in groups]
        try:
            pickle.dumps(specs)
        except (pickle.PicklingError, AttributeError, TypeError):
            return []
        return specs

    def _worker_spec(self, group: Sequence[type[Projection]]) -> WorkerSpec:
        url = self.store.engine.url.render_as_string(hide_password=False)
        return WorkerSpec(type(self.registry), self.location.library_env(create_table=False),
                          self.timezone, url, self.store.schema.metadata.schema, tuple(group),
                          self.batch_size)


def disjoint_groups(classes: Sequence[type[Projection]]) -> list[list[type[Projection]]]:
    """The projections in groups that read no topic in common (each group can be folded apart
    from the others), the group reading the most topics first."""
    groups: list[tuple[set[str], list[type[Projection]]]] = []
    for cls in classes:
        topics = {get_topic(c) for c in cls.handles()}
        members = [cls]
        for group in [g for g in groups if g[0] & topics]:
            groups.remove(group)
            topics |= group[0]
            members = [*group[1], *members]
        groups.append((topics, members))
    return [members for _, members in sorted(groups, key=lambda g: -len(g[0]))]


class Folder:
    """Projections folded from zero over the log in this process, for a rebuild."""

    def __init__(self, registry: Registry, classes: Sequence[type[Projection]], timezone: str,
                 batch_size: int) -> None:
        self.reader, self.decode = LogReader(registry.recorder), EventDecoder(registry.mapper)
        self.batch_size = batch_size
        by_name = {cls.name: cls for cls in classes}
        # `deadlines` keeps exactly the rows of `members` (the same handlers under another
        # table name): fold them once and write the rows to both tables.
        shared = {"members", "deadlines"} <= set(by_name) and \
            by_name["deadlines"].handlers is by_name["members"].handlers
        self.building = {name: cls(timezone) for name, cls in by_name.items()
                         if not (shared and name == "deadlines")}
        # per projection: its table -> the tables that receive the same rows
        self.also = {"members": {"members": ("deadlines",)}} if shared else {}
        self.topics = sorted({get_topic(c) for p in self.building.values() for c in p.handles()})
        # topic -> the projections whose `apply` may do something with its events
        self.targets = {topic: [(name, p) for name, p in self.building.items()
                                if topic in {get_topic(c) for c in p.handles()}
                                or type(p).apply is not Projection.apply]
                        for topic in self.topics}
        self.position = 0

    def fold(self, target: int, progress: Callable[[int, int], None] | None = None) -> int:
        """Apply the events after the position reached so far, up to `target`."""
        while self.position < target:
            # A page is `batch_size` notification ids (fewer rows: other topics are left out).
            end = min(target, self.position + self.batch_size)
            self._apply(self.reader.page(self.position + 1, end, self.topics))
            for projection in self.building.values():
                projection.forget_changes()  # every row is written at the end anyway
            self.position = end
            # What is folded stays until it is written: keep the collector's full collections
            # from rescanning it again and again (a third of the CPU).
            gc.freeze()
            if progress:
                progress(self.position, target)
        return self.position

    def _apply(self, rows: Iterable[LogRow]) -> None:
        decode, targets = self.decode, self.targets
        for row in rows:
            event = decode(row)
            for name, projection in targets[row[1]]:
                try:
                    projection.apply(event)
                except Exception as error:
                    raise ProjectionFailed(name, row[0], row[1], error) from error

    def write(self, store: ReadModelStore) -> None:
        """Every row into the fresh tables (emptied first: a retried swap writes them again)."""
        for name, projection in self.building.items():
            store.write(projection, NEXT, self.also.get(name))


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to open the store and fold its projections."""

    registry_type: type[Registry]
    library_env: dict[str, str]
    timezone: str
    read_models_url: str
    read_models_schema: str | None
    classes: tuple[type[Projection], ...]
    batch_size: int


class FoldWorker:
    """A process of its own (a fresh interpreter: no fork of this one's connections and threads,
    no re-import of its main module) that folds some projections of a rebuild and writes their
    fresh tables, on command; it stops when told to, or when its pipe from here closes."""

    def __init__(self, spec: WorkerSpec) -> None:
        from_parent, to_child = os.pipe()  # (read end, write end)
        from_child, to_parent = os.pipe()
        code = ("import sys; from infrastructure.readmodels.runner import serve_fold_worker; "
                "serve_fold_worker(int(sys.argv[1]), int(sys.argv[2]))")
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(from_parent), str(to_parent)],
            pass_fds=(from_parent, to_parent))
        os.close(from_parent)
        os.close(to_parent)
        self.commands, self.replies = os.fdopen(to_child, "wb"), os.fdopen(from_child, "rb")
        self.busy = False  # a build was asked for and has not been answered
        self._send(spec)

    def _send(self, message: object) -> None:
        pickle.dump(message, self.commands)
        self.commands.flush()

    def start_build(self, target: int) -> None:
        """Fold up to `target`, then write every row (it runs while this process folds)."""
        self._send(("build", target))
        self.busy = True

    def wait_built(self) -> int:
        try:
            reply, detail = pickle.load(self.replies)
        except EOFError:
            raise RuntimeError("a rebuild worker exited (its error is on stderr)") from None
        self.busy = False
        if reply == "failed":
            name, position, topic, error = detail
            raise ProjectionFailed(name, position, topic, error)
        if reply != "built":
            raise RuntimeError(f"a rebuild worker failed:\n{detail}")
        return int(detail)

    def close(self) -> None:
        """Stop the worker; one still building (this rebuild failed) is killed: its fresh
        tables are dropped and made again by the next rebuild."""
        if self.busy:
            self.process.kill()
        with contextlib.suppress(OSError):
            self._send(("stop", 0))
        for pipe in (self.commands, self.replies):
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def serve_fold_worker(commands_fd: int, replies_fd: int) -> None:
    """The worker process: build what the parent asks for, reply how it went."""
    with os.fdopen(commands_fd, "rb") as commands, os.fdopen(replies_fd, "wb") as replies:
        def reply(message: object) -> None:
            pickle.dump(message, replies)
            replies.flush()
        _serve(pickle.load(commands), commands, reply)


def _serve(spec: WorkerSpec, commands: IO[bytes], reply: Callable[[object], None]) -> None:
    registry = spec.registry_type(env=spec.library_env, timezone=spec.timezone)
    engine = read_model_engine(make_url(spec.read_models_url), spec.read_models_schema)
    store = ReadModelStore(engine, spec.read_models_schema)
    folder = Folder(registry, spec.classes, spec.timezone, spec.batch_size)
    try:
        while (command := pickle.load(commands))[0] == "build":
            folder.fold(command[1])
            folder.write(store)
            reply(("built", folder.position))
    except EOFError:
        pass  # the parent has gone
    except ProjectionFailed as failure:
        reply(("failed", (failure.name, failure.position, failure.topic,
                          _picklable(failure.__cause__))))
    except Exception:
        reply(("error", traceback.format_exc()))
    finally:
        registry.close()
        engine.dispose()


def _picklable(error: BaseException | None) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error if isinstance(error, Exception) else RuntimeError(repr(error))


class _Waiter:
    """Waits for new events: LISTEN on the library's NOTIFY channel, or a short poll (SQLite,
    and PostgreSQL while its listening connection is lost: it is opened again on the next
    wait)."""

    def __init__(self, location: EventStoreLocation, channel: str | None,
                 poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self.location, self.channel = location, channel
        self.connection: psycopg.Connection[Any] | None = None
        self._listen()

    def _listen(self) -> None:
        if not (self.location.is_postgres and self.channel) or self.connection is not None:
            return
        try:
            self.connection = psycopg.connect(self.location.psycopg_conninfo(), autocommit=True)
            self.connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except psycopg.Error:
            self.close()  # the database is away: poll until it is back

    def wait(self, stop: threading.Event, at_most: float) -> None:
        self._listen()
        if self.connection is None:
            stop.wait(self.poll_seconds)
            return
        try:
            for _ in self.connection.notifies(timeout=at_most, stop_after=1):
                break
        except psycopg.Error:
            self.close()

    def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(psycopg.Error):
                self.connection.close()
            self.connection = None
