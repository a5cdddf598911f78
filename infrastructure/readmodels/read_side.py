"""Answers to staff queries: from the projections (kept up to date), or replayed for a past
date (`as_of`, business time) or a past moment of the registry's knowledge (`known_at`)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

from application.registry import Registry
from domain.access import Action, authorise
from domain.acts import Actor
from domain.errors import InvalidInput
from infrastructure.eventstore.recorded_times import RecordedTimes
from infrastructure.readmodels.runner import ProjectionRunner
from infrastructure.readmodels.tables import ReadModelStore
from projections.base import Projection, Row
from projections.catalogue import PROJECTIONS, fold

WAIT_FOR_RUNNER_SECONDS = 10.0
# Past states kept per process: (projection, as_of, known_at position) -> state at a position.
PAST_STATES_KEPT = 16
REPLAYS_AT_ONCE = 2


class Behind(Exception):
    """The read models did not reach the asked position in time."""


class Busy(Exception):
    """Too many replays to the past are running in this process; try again shortly."""


TABLE_OWNER = {table: name for name, p in PROJECTIONS.items() for table in p.keys}


class ReadSide:
    def __init__(self, registry: Registry, store: ReadModelStore,
                 runner: Callable[[Iterable[str]], ProjectionRunner], timezone: str,
                 known_by: Callable[[datetime], int], replays: int = REPLAYS_AT_ONCE) -> None:
        self.registry, self.store, self.runner, self.timezone = registry, store, runner, timezone
        # The last position recorded by a moment: whole transactions (the audit chain's time).
        self.known_by = known_by
        # A replay decodes the log from its start: the results are kept (a new one continues
        # from a kept one when the log has only grown), and only a few run at once.
        self._past: OrderedDict[tuple[str, date | None, int | None],
                                tuple[int, Projection]] = OrderedDict()
        self._past_lock = threading.Lock()
        self._replays = threading.BoundedSemaphore(replays)

    def rows(self, table: str, as_of: date | None = None,
             known_at: datetime | None = None, *, reader: Actor) -> list[Row]:
        """The rows of a read-model table: stored and fresh, or replayed to a past point (from
        the whole log, which the registry gives only to a `reader` who may read the past).
        What of them the reader may see is `domain.access.read_scope`'s to say."""
        name = TABLE_OWNER[table]
        if as_of is None and known_at is None:
            self.bring_up_to_date([name])
            return self.store.rows(table)
        return self.past(name, as_of, known_at, reader=reader).rows(table)

    def past(self, name: str, as_of: date | None, known_at: datetime | None, *,
             reader: Actor) -> Projection:
        """The projection folded from what was recorded by `known_at`, of what took effect by
        the end of the day `as_of`: kept, continued from a kept state, or replayed (`Busy` when
        too many replays run already). Never changed once returned."""
        # A kept state is shared by every reader: each one is authorised, not only the first,
        # whose replay read the log through `Registry.read_log`.
        authorise(reader, Action.READ_PAST)
        # What was known at a moment is every transaction recorded by then, never half of one
        # (the events of one save carry slightly different timestamps).
        known = self.known_by(known_at) if known_at is not None else None
        head = self.registry.recorder.max_notification_id() or 0
        target = head if known is None else min(known, head)
        key = (name, as_of, known)
        with self._past_lock:
            kept = self._past.get(key)
            if kept is not None:
                self._past.move_to_end(key)
        if kept is not None and kept[0] >= target:
            return kept[1]
        if not self._replays.acquire(blocking=False):
            raise Busy("too many replays to a past point are running; try again shortly")
        try:
            if kept is None:
                folded = fold(self._events(reader, as_of, 0, target), self.timezone, (name,))[name]
                folded.forget_changes()  # kept for reading only
            else:
                # The log below a kept position never changes (positions are given in commit
                # order): a kept state only needs the events after it, and is copied only when
                # one of them changes it (most events of a past day's query took effect later).
                folded = kept[1]
                changes = [e for e in self._events(reader, as_of, kept[0], target)
                           if type(e) in folded.handlers]
                if changes:
                    folded = folded.fork()
                    for event in changes:
                        folded.apply(event)
                    folded.forget_changes()
                    folded.detach()
        finally:
            self._replays.release()
        with self._past_lock:
            newest = self._past.get(key)
            if newest is None or newest[0] < target:  # another request may have gone further
                self._past[key] = (target, folded)
                self._past.move_to_end(key)
            while len(self._past) > PAST_STATES_KEPT:
                self._past.popitem(last=False)
        return folded

    def stored_rows(self, table: str, **equal: Any) -> list[Row]:
        """The rows as the projections stored them, without waiting for anything; `equal`
        narrows them in SQL (column=value, None for any)."""
        return self.store.rows(table, **equal)

    def stored_rows_among(self, table: str, column: str, values: Iterable[Any]) -> list[Row]:
        """The stored rows whose `column` is one of `values`, without waiting for anything."""
        return self.store.rows_among(table, column, values)

    def lag_seconds(self) -> dict[str, float]:
        """Per projection, the age of the oldest event of the log it has not applied yet (0 at
        the head), as `gnlc projections status` counts it."""
        head = self.registry.recorder.max_notification_id() or 0
        return {name: unapplied_age(self.registry, position, head)
                for name, (position, _) in self.store.positions().items()}

    def reached(self, position: int, table: str) -> bool:
        """Whether the table's projection already includes `position` (one short query)."""
        return self.store.positions()[TABLE_OWNER[table]][0] >= position

    def reach(self, position: int, table: str, timeout: float) -> None:
        """Wait until the table's projection includes `position` (catching up itself when no
        runner holds it); `Behind` if it does not within `timeout` seconds."""
        head = self.registry.recorder.max_notification_id() or 0
        if position > head:
            raise InvalidInput(f"min_position {position} is beyond the head of the log ({head})",
                               field="min_position")
        if self.reached(position, table):
            return
        if not self._catch_up_or_wait([TABLE_OWNER[table]], position, timeout):
            raise Behind(f"the read models have not reached position {position} "
                         f"within {timeout:g} s")

    def _events(self, reader: Actor, as_of: date | None, after: int,
                upto: int) -> Iterable[object]:
        """The events in (after, upto] that took effect by the end of the day `as_of`."""
        for recorded in self.registry.read_log(reader, after + 1):
            if recorded.position > upto:
                return
            event = recorded.event
            # A city's registration counts on every day: see City.Registered.took_effect_by.
            if as_of is not None and not event.took_effect_by(as_of, self.timezone):
                continue
            yield event

    def bring_up_to_date(self, names: list[str]) -> None:
        """Catch the projections up to the head of the log, or wait for the runner that does."""
        head = self.registry.recorder.max_notification_id() or 0
        self._catch_up_or_wait(names, head, WAIT_FOR_RUNNER_SECONDS)

    def _catch_up_or_wait(self, names: list[str], position: int, timeout: float) -> bool:
        """Catch the projections up here if no runner holds them, else wait (at most `timeout`)
        for the runner to reach `position`; whether they got there."""
        runner = self.runner(names)
        try:
            if len(runner.acquire()) == len(names):
                runner.catch_up()
                return True
        finally:
            runner.release()
        return self._wait_until(names, position, timeout)

    def _wait_until(self, names: list[str], position: int, timeout: float) -> bool:
        """Poll the stored positions until every named projection has reached `position`."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while True:
            positions = self.store.positions()
            if all(positions[n][0] >= position for n in names):
                return True
            if time.monotonic() >= deadline:
                return False
            pause.wait(0.02)


def unapplied_age(registry: Registry, position: int, head: int) -> float:
    """Seconds since the oldest event after `position` (up to `head`) was recorded, by the real
    clock and its chain row's time (as the feed shows it); 0 when there is none."""
    waiting = (registry.recorder.select_notifications(position + 1, 1, stop=head)
               if position < head else [])
    if not waiting:
        return 0.0
    recorded = RecordedTimes(registry.recorder).of([waiting[0].id])
    oldest: datetime = (datetime.fromisoformat(recorded[waiting[0].id]) if recorded
                        else registry.mapper.to_domain_event(waiting[0]).timestamp)
    return max(0.0, (datetime.now(UTC) - oldest).total_seconds())
