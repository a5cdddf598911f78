"""The event feed: the log, in commit order, as public events (see projections/public.py).

Read straight from the event store, so an event is in the feed the moment it is committed. On
PostgreSQL the library locks the events table for every insert, so positions are assigned in
commit order: a reader that has seen position N will never later find a new event below N
(positions may skip numbers, though: rolled-back inserts consume them).

Decoding: a stored event's state is JSON with the transcoder's tagged values
(`{"_type_": "uuid_hex", "_data_": "…"}`). The feed parses it with orjson and turns the tagged
values straight into their public (JSON) form, without building the domain event and taking it
apart again (`Feed.fast_parts`). Whatever that path does not expect (an event stored in an older
class version, which must be upcast; an unknown topic or transcoding; a cipher; an integer beyond
64 bits, which orjson would read as a float) goes through the library's mapper and `plain()`
instead (`Feed.slow_parts`); tests/test_feed_decoding.py checks that both give the same events.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from hashlib import sha1
from typing import Any
from uuid import NAMESPACE_URL, UUID

import orjson
from eventsourcing.persistence import DatetimeAsISO, StoredEvent, UUIDAsHex
from eventsourcing.utils import get_topic

from application.registry import DateAsISO, Registry
from domain.applications import CityApplication
from domain.cities import City
from domain.quotas import QuotaLedger
from infrastructure.eventstore.recorded_times import RecordedTimes
from infrastructure.views import plain
from projections.public import CONTRACT, ENVELOPE, data_of, masked

FEED_TOPICS = sorted(get_topic(cls) for cls in CONTRACT)
# The public types that hold personal values (sealed: see domain/personal.py).
PERSONAL_TYPES = frozenset({"application.submitted", "city.contact_updated"})
SCAN_PAGE = 1000
WINDOW_ROWS = 2  # positions per row asked for (at least SCAN_PAGE) in one query: Feed.page

Subject = tuple[str | None, str | None]  # (city_id, country)


@dataclass(frozen=True)
class FeedEvent:
    position: int
    id: str
    type: str
    version: int
    city_id: str | None
    country: str | None
    recorded_at: str
    effective_at: str
    actor: dict[str, str]
    data: dict[str, Any]

    @classmethod
    def make(cls, position: int, id: str, type: str, version: int, city_id: str | None,
             country: str | None, recorded_at: str, effective_at: str, actor: dict[str, str],
             data: dict[str, Any]) -> FeedEvent:
        """As the constructor, at half its cost (a frozen dataclass's __init__ sets each
        field through object.__setattr__; the library builds its domain events the same way)."""
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", {
            "position": position, "id": id, "type": type, "version": version,
            "city_id": city_id, "country": country, "recorded_at": recorded_at,
            "effective_at": effective_at, "actor": actor, "data": data})
        return event

    def public(self, personal_data: bool) -> dict[str, Any]:
        """The JSON form; personal fields are null without `personal_data`, sealed with it
        (`Feed.public` opens them)."""
        data = self.data if personal_data else masked(self.type, self.data)
        return {
            "position": self.position, "id": self.id, "type": self.type,
            "version": self.version, "city_id": self.city_id, "country": self.country,
            "recorded_at": self.recorded_at, "effective_at": self.effective_at,
            "actor": self.actor, "data": data,
        }


@dataclass(frozen=True)
class Filter:
    types: frozenset[str] | None = None
    country: str | None = None
    city_id: str | None = None

    def matches(self, event: FeedEvent) -> bool:
        return ((self.types is None or event.type in self.types)
                and (self.country is None or event.country == self.country)
                and (self.city_id is None or event.city_id == self.city_id))


@dataclass(slots=True)
class Parts:
    """A stored event in public form, before the feed adds its position, id and subject."""

    cls: type
    recorded_at: str
    effective_at: str
    actor: dict[str, str]
    data: dict[str, Any]


class Unexpected(Exception):
    """Something the fast decoding does not handle: the library's mapper decodes instead."""


# How the feed learns an aggregate's subject from an event of each class (see Feed._learn).
_APPLICATION, _CITY, _LEDGER, _TAKEN, _FREED = range(5)
_KIND: dict[type, int] = {
    CityApplication.Submitted: _APPLICATION, CityApplication.Imported: _APPLICATION,
    City.Registered: _CITY, QuotaLedger.Opened: _LEDGER,
    QuotaLedger.PlaceTaken: _TAKEN, QuotaLedger.PlaceFreed: _FREED,
}
_BY_TOPIC: dict[str, tuple[type, int]] = {  # topic: (class, class_version)
    get_topic(cls): (cls, getattr(cls, "class_version", 1)) for cls in CONTRACT}
_HEX32 = re.compile(r"[0-9a-f]{32}").fullmatch
# orjson reads an integer beyond 64 bits as a float; the stdlib as an int. Beyond this, decode
# slowly (a float this large that really is a float costs no more than that).
_LARGE = float(2**63)


def _uuid_text(data: Any) -> str:
    if type(data) is str and len(data) == 32 and _HEX32(data):
        return f"{data[:8]}-{data[8:12]}-{data[12:16]}-{data[16:20]}-{data[20:]}"
    if type(data) is not str:
        raise Unexpected(f"uuid_hex of {type(data).__name__}")
    return str(UUID(data))


# datetime.isoformat() writes exactly these; fromisoformat() of one gives it back unchanged (no
# fraction for 0 microseconds, "+00:00" for UTC). Others (`Z`, `.000000`, …) take the round trip.
_ISOFORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(?!000000)\d{6})?"
                        r"(?:\+\d\d:\d\d|-(?!00:00)\d\d:\d\d)?", re.ASCII).fullmatch


def _datetime_text(data: Any) -> str:
    """What `datetime.fromisoformat(data).isoformat()` gives (the slow path), cheaper."""
    if type(data) is not str:
        raise Unexpected(f"datetime_iso of {type(data).__name__}")
    moment = datetime.fromisoformat(data)  # raises ValueError as the slow path would
    return data if _ISOFORMAT(data) else moment.isoformat()


def _date_text(data: Any) -> str:
    if type(data) is not str:
        raise Unexpected(f"date_iso of {type(data).__name__}")
    return date.fromisoformat(data).isoformat()


# The public form of each transcoding registered on the registry's JSONTranscoder (what plain()
# makes of the decoded value). Others (decimal_str: plain() keeps a Decimal) decode slowly.
_TRANSCODED = {"uuid_hex": _uuid_text, "datetime_iso": _datetime_text, "date_iso": _date_text}
_TRANSCODINGS = {"uuid_hex": UUIDAsHex, "datetime_iso": DatetimeAsISO, "date_iso": DateAsISO}


_PLAIN = frozenset({str, int, bool, type(None)})  # as they are, in both forms


def _public(value: Any) -> Any:
    """A parsed JSON value with the transcoder's tagged values in their public form."""
    kind = type(value)
    if kind is dict:
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            convert = _TRANSCODED.get(value["_type_"])
            if convert is None:
                raise Unexpected(f"transcoding {value['_type_']!r}")
            return convert(value["_data_"])
        return {k: v if type(v) in _PLAIN else _public(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _PLAIN else _public(v) for v in value]
    if kind is float and not -_LARGE < value < _LARGE:
        raise Unexpected("a number beyond 64 bits")
    return value


def public_event_id(prefix: bytes, originator_version: int) -> str:
    """projections.public.event_id as text, given `_id_prefix(originator_id)`: the same uuid5,
    without the UUID objects."""
    digest = bytearray(sha1(prefix + str(originator_version).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _id_prefix(originator_id: UUID) -> bytes:
    return NAMESPACE_URL.bytes + f"gnlc:event:{originator_id}:".encode()


class Feed:
    """Pages of public events after a position, with the city and country each concerns."""

    def __init__(self, registry: Registry, fast: bool = True) -> None:
        """`fast=False`: every event through the library's mapper (the reference for tests)."""
        self.registry = registry
        # The recorded time shown is the chain row's (what `known_at` compares), not the
        # event's own timestamp: see infrastructure/eventstore/recorded_times.py.
        self.recorded_times = RecordedTimes(registry.recorder)
        # Which city and country an aggregate concerns never changes: remember it, with the
        # start of the hashed name of its events' public ids (see public_event_id).
        self._known: dict[UUID, tuple[bytes, Subject]] = {}
        # The fast decoding knows unencrypted, uncompressed state and the transcodings of the
        # library and the registry under their names; a registry set up otherwise (a cipher, a
        # transcoding of another class under one of these names) decodes every event slowly.
        mapper = registry.mapper
        names = getattr(mapper.transcoder, "names", {})
        self._fast = (fast and mapper.cipher is None and mapper.compressor is None
                      and all(isinstance(names.get(name), transcoding)
                              for name, transcoding in _TRANSCODINGS.items()))

    def head(self) -> int:
        return self.registry.recorder.max_notification_id() or 0

    def public(self, events: Sequence[FeedEvent], personal_data: bool) -> list[dict[str, Any]]:
        """The events' JSON forms. Personal values are null without `personal_data`; with it
        they are opened with their data keys (one query for the page), and shown erased once
        the keys are gone: read at each call, so an erasure shows in every process at once."""
        shown = [event.public(personal_data) for event in events]
        if not personal_data:
            return shown
        personal = [form for form in shown if form["type"] in PERSONAL_TYPES]
        if personal:
            opened = self.registry.personal_data.shown([f["data"] for f in personal], True)
            for form, data in zip(personal, opened, strict=True):
                form["data"] = data
        return shown

    def page(self, after: int, limit: int, where: Filter = Filter()
             ) -> tuple[list[FeedEvent], int]:
        """Up to `limit` matching events after `after`, and the last position examined.

        Scans on until it has found one or reached the head, so an empty page means caught up.
        """
        head = self.head()
        found: list[FeedEvent] = []
        examined = after
        unfiltered = where == Filter()
        rows = limit if unfiltered else max(limit, SCAN_PAGE)
        while len(found) < limit and examined < head:
            # A window of positions, not all up to the head: on a table whose statistics are
            # stale (a freshly filled store) PostgreSQL plans `notification_id BETWEEN a AND
            # head` as a bitmap scan of the whole range and a sort, so every page of a replay
            # from 0 read the rest of the log (0.1 s a page at 100,000 events).
            stop = min(head, examined + max(WINDOW_ROWS * rows, SCAN_PAGE))
            batch = self.registry.recorder.select_notifications(
                examined + 1, rows, stop=stop, topics=FEED_TOPICS)
            # One query for the page's chain times: committed with the events, so every
            # event just read has its row.
            times = self.recorded_times.between(batch[0].id, batch[-1].id) if batch else {}
            for notification in batch:
                examined = notification.id
                event = self.decode(notification, times.get(notification.id))
                if unfiltered or where.matches(event):
                    found.append(event)
                    if len(found) == limit:
                        break
            else:
                if len(batch) < rows:
                    examined = stop  # the rest of the window holds no feed event
        return found, examined

    def decode(self, notification: Any, recorded_at: str | None = None) -> FeedEvent:
        """A stored event with its position (a library `Notification`) as a feed event;
        `recorded_at` is its chain row's time (looked up when not given)."""
        if recorded_at is None:
            recorded_at = self.recorded_times.between(notification.id, notification.id).get(
                notification.id)
        return self._event(notification, self.parts(notification), recorded_at)

    def parts(self, stored: StoredEvent) -> Parts:
        if self._fast:
            try:
                parts = self.fast_parts(stored)
            except (Unexpected, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
                parts = None
            if parts is not None:
                return parts
        return self.slow_parts(stored)

    def fast_parts(self, stored: StoredEvent) -> Parts | None:
        """The public form straight from the stored JSON; None if the event must be upcast."""
        known = _BY_TOPIC.get(stored.topic)
        if known is None:
            raise Unexpected(f"topic {stored.topic!r}")
        cls, class_version = known
        state = orjson.loads(stored.state)
        if type(state) is not dict or state.pop("class_version", 1) != class_version:
            return None
        for moment in ("timestamp", "effective_at"):  # the slow path needs datetimes there
            if type(state[moment]) is not dict or state[moment].get("_type_") != "datetime_iso":
                raise Unexpected(moment)
        actor = state["actor"]  # passed on as decoded: {"name": …, "role": …}, as the slow path
        if (type(actor) is not dict or len(actor) != 2 or type(actor.get("name")) is not str
                or type(actor.get("role")) is not str):
            raise Unexpected("actor")
        return Parts(cls, _datetime_text(state["timestamp"]["_data_"]),
                     _datetime_text(state["effective_at"]["_data_"]), actor,
                     {k: v if type(v) in _PLAIN else _public(v)
                      for k, v in state.items() if k not in ENVELOPE})

    def slow_parts(self, stored: StoredEvent) -> Parts:
        event: Any = self.registry.mapper.to_domain_event(stored)
        return Parts(type(event), event.timestamp.isoformat(), event.effective_at.isoformat(),
                     event.actor, plain(data_of(event)))

    def _event(self, notification: Any, parts: Parts, recorded_at: str | None) -> FeedEvent:
        public = CONTRACT[parts.cls]
        originator_id: UUID = notification.originator_id
        version: int = notification.originator_version
        known = self._known.get(originator_id)
        if known is None:
            known = self._first_sight(originator_id, version, parts.cls, parts.data)
        prefix, (city, country) = known
        kind = _KIND.get(parts.cls)
        if kind == _TAKEN:
            city = parts.data["city_id"]
        elif kind == _FREED:
            application_id = UUID(parts.data["application_id"])
            application = self._known.get(application_id)
            city = (application[1] if application else self._look_up(application_id))[0]
        return FeedEvent.make(
            notification.id, public_event_id(prefix, version), public.name, public.version,
            city, country,
            # The event's own timestamp only for an event without a chain row: a log that
            # does not verify (`gnlc audit verify` reports it).
            parts.recorded_at if recorded_at is None else recorded_at,
            parts.effective_at, parts.actor, parts.data)

    def _first_sight(self, originator_id: UUID, originator_version: int, cls: type,
                     data: dict[str, Any]) -> tuple[bytes, Subject]:
        subject = (self._learn(originator_id, originator_version, cls, data)
                   or self._look_up(originator_id))
        return self._known.get(originator_id) or (_id_prefix(originator_id), subject)

    def _learn(self, originator_id: UUID, originator_version: int, cls: type,
               data: dict[str, Any]) -> Subject | None:
        """The subject an aggregate's first event names, remembered for its later events.

        `data` is the event's data in public form (ids as text)."""
        subject: Subject
        kind = _KIND.get(cls)
        if kind == _APPLICATION:
            subject = (data["city_id"], data["country"])
        elif kind == _CITY:
            subject = (str(originator_id), data["country"])
        elif kind == _LEDGER:
            subject = (None, data["country"])
        elif originator_version == 1:
            subject = (None, None)  # the intake calendar: no city, no country
        else:
            return None
        self._known[originator_id] = (_id_prefix(originator_id), subject)
        return subject

    def _look_up(self, originator_id: UUID) -> Subject:
        first: Sequence[StoredEvent] = self.registry.recorder.select_events(
            originator_id, limit=1)
        if not first:
            return (None, None)
        if first[0].topic in _BY_TOPIC:
            parts = self.parts(first[0])
            cls, data = parts.cls, parts.data
        else:  # not a feed event (or one stored under an older topic)
            event = self.registry.mapper.to_domain_event(first[0])
            cls, data = type(event), plain(data_of(event))
        return self._learn(originator_id, first[0].originator_version, cls, data) or (None, None)

