"""The event feed: the log, in commit order, as public events (see projections/public.py).

Read straight from the event store, so an event is in the feed the moment it is committed. On
PostgreSQL the library locks the events table for every insert, so positions are assigned in
commit order: a reader that has seen position N will never later find a new event below N
(positions may skip numbers, though: rolled-back inserts consume them).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from application.registry import Registry
from domain.applications import CityApplication
from domain.cities import City
from domain.quotas import QuotaLedger
from infrastructure.views import plain
from projections.public import CONTRACT, data_of, event_id, masked

FEED_TOPICS = sorted(get_topic(cls) for cls in CONTRACT)
SCAN_PAGE = 1000

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

    def public(self, personal_data: bool) -> dict[str, Any]:
        """The JSON form; personal fields are null unless the reader may see them."""
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


class Feed:
    """Pages of public events after a position, with the city and country each concerns."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        # Which city and country an aggregate concerns never changes: remember it.
        self._subjects: dict[UUID, Subject] = {}

    def head(self) -> int:
        return self.registry.recorder.max_notification_id() or 0

    def page(self, after: int, limit: int, where: Filter = Filter()
             ) -> tuple[list[FeedEvent], int]:
        """Up to `limit` matching events after `after`, and the last position examined.

        Scans on until it has found one or reached the head, so an empty page means caught up.
        """
        head = self.head()
        found: list[FeedEvent] = []
        examined = after
        while len(found) < limit and examined < head:
            batch = self.registry.recorder.select_notifications(
                examined + 1, max(limit, SCAN_PAGE) if where != Filter() else limit,
                stop=head, topics=FEED_TOPICS)
            if not batch:
                examined = head
                break
            for notification in batch:
                examined = notification.id
                event = self.decode(notification)
                if where.matches(event):
                    found.append(event)
                    if len(found) == limit:
                        break
        return found, examined

    def decode(self, notification: Notification) -> FeedEvent:
        event = self.registry.mapper.to_domain_event(notification)
        public = CONTRACT[type(event)]
        city, country = self._subject(event)
        return FeedEvent(
            position=notification.id,
            id=str(event_id(event.originator_id, event.originator_version)),
            type=public.name, version=public.version, city_id=city, country=country,
            recorded_at=event.timestamp.isoformat(),
            effective_at=event.effective_at.isoformat(),  # type: ignore[attr-defined]
            actor=event.actor,  # type: ignore[attr-defined]
            data=plain(data_of(event)),
        )

    def _subject(self, event: Any) -> Subject:
        known = self._subjects.get(event.originator_id)
        if known is None:
            known = self._learn(event) or self._look_up(event.originator_id)
        if isinstance(event, QuotaLedger.PlaceTaken):
            return str(event.city_id), known[1]
        if isinstance(event, QuotaLedger.PlaceFreed):
            city = self._subjects.get(event.application_id) or self._look_up(
                event.application_id)
            return city[0], known[1]
        return known

    def _learn(self, event: Any) -> Subject | None:
        """The subject an aggregate's first event names, remembered for its later events."""
        subject: Subject
        if isinstance(event, CityApplication.Submitted | CityApplication.Imported):
            subject = (str(event.city_id), event.country)
        elif isinstance(event, City.Registered):
            subject = (str(event.originator_id), event.country)
        elif isinstance(event, QuotaLedger.Opened):
            subject = (None, event.country)
        elif event.originator_version == 1:
            subject = (None, None)  # the intake calendar: no city, no country
        else:
            return None
        self._subjects[event.originator_id] = subject
        return subject

    def _look_up(self, originator_id: UUID) -> Subject:
        first: Sequence[Any] = self.registry.recorder.select_events(originator_id, limit=1)
        if not first:
            return (None, None)
        return self._learn(self.registry.mapper.to_domain_event(first[0])) or (None, None)


def type_filter(types: Collection[str] | None) -> frozenset[str] | None:
    return frozenset(types) if types else None
