"""The event feed over HTTP: pages (`GET /events`), a live stream (SSE) and the public schemas."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from domain.access import PERSONAL_DATA, Action, authorise
from domain.acts import Actor
from domain.errors import InvalidInput
from domain.forms import CountryCode
from infrastructure.eventstore.head_watch import HeadWatcher
from infrastructure.feed.public_events import Feed, FeedEvent, Filter
from infrastructure.http.api import Caller
from infrastructure.http.limits import StreamSlots
from infrastructure.http.problems import TooManyRequests
from projections.public import BY_NAME, schemas

HEARTBEAT_SECONDS = 15.0
STREAM_PAGE = 500
MAX_PAGE = 1000


@dataclass
class EventServices:
    feed: Feed
    watcher: HeadWatcher
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    # Open streams per token (no limit unless configured).
    slots: StreamSlots = field(default_factory=lambda: StreamSlots(0))


class HeldStream(StreamingResponse):
    """A stream that frees its slot when it ends, however it ends (the client gone, the server
    stopping, or the generator never started)."""

    def __init__(self, free: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.free = free

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.free()


class FeedItem(BaseModel):
    position: int
    id: UUID
    type: str
    version: int
    city_id: UUID | None
    country: str | None
    recorded_at: str
    effective_at: str
    actor: dict[str, str]
    data: dict[str, Any]


class FeedPage(BaseModel):
    events: list[FeedItem]
    next_after: int


Types = Annotated[str | None, Query(
    description="comma-separated public types, e.g. application.admitted,membership.ended")]
Country = Annotated[CountryCode | None, Query(description="ISO 3166-1 alpha-2")]
City = Annotated[UUID | None, Query(description="a city id")]


def _filter(types: str | None, country: str | None, city: UUID | None) -> Filter:
    names = frozenset(t.strip() for t in types.split(",") if t.strip()) if types else None
    if names and (unknown := sorted(names - BY_NAME.keys())):
        raise InvalidInput(f"unknown event type {unknown[0]!r}; see /events/schemas",
                           field="types")
    return Filter(names, country, str(city) if city else None)


def _reader(actor: Actor) -> bool:
    """Authorise a feed reader; whether it may see personal data."""
    authorise(actor, Action.READ_FEED)
    return PERSONAL_DATA in actor.scopes


def add_event_routes(api: FastAPI, services: EventServices) -> None:
    feed, watcher = services.feed, services.watcher

    # The page is written as JSON here, in one go: FeedPage documents it (OpenAPI) but does not
    # validate and serialise it item by item, which cost more than reading the page.
    @api.get("/events", response_model=FeedPage, tags=["events"])
    def events(actor: Caller,
               after: Annotated[int, Query(ge=0, description="the last position seen")] = 0,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
               types: Types = None, country: Country = None, city: City = None
               ) -> Response:
        """Events after a position, in commit order; an empty page means caught up."""
        personal = _reader(actor)
        where = _filter(types, country, city)
        found, next_after = feed.page(after, limit, where)
        body = _json({"events": feed.public(found, personal), "next_after": next_after})
        return Response(body, media_type="application/json")

    @api.get("/events/stream", tags=["events"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "Server-Sent Events; each id is a position"}})
    async def stream(request: Request, actor: Caller,
                     after: Annotated[int | None, Query(ge=0)] = None,
                     types: Types = None, country: Country = None, city: City = None,
                     last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
                     ) -> StreamingResponse:
        """Live events; resumes after `Last-Event-ID` (or `after`), else starts at the head.
        A token holds a few streams at once (`GNLC_STREAMS_PER_TOKEN`); beyond them, 429."""
        personal = _reader(actor)
        where = _filter(types, country, city)
        start = _start(last_event_id, after)
        if start is None:
            start = await run_in_threadpool(feed.head)
        if not services.slots.take(actor.name):
            # A slot frees when a client goes; the server notices by the next heartbeat.
            raise TooManyRequests(services.heartbeat_seconds,
                                  f"{actor.name} holds {services.slots.limit} open streams "
                                  "already; close one first")
        return HeldStream(
            lambda: services.slots.free(actor.name),
            _events(request, feed, watcher, start, where, personal, services.heartbeat_seconds),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.get("/events/schemas", tags=["events"])
    def event_schemas() -> dict[str, Any]:
        """The JSON Schema of every public event type and version (also in docs/events/)."""
        return schemas()


def _start(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is None:
        return after
    if not last_event_id.isdigit():
        raise InvalidInput("Last-Event-ID must be a position (a whole number)",
                           field="Last-Event-ID")
    return int(last_event_id)


async def _events(request: Request, feed: Feed, watcher: HeadWatcher, after: int, where: Filter,
                  personal: bool, heartbeat: float) -> AsyncIterator[str]:
    """Pages read in a worker thread (a slow client holds only its own generator).

    A page goes out in one write: message by message, a client gone mid-page would still be
    written the rest of the page (the loop does not notice in between), each write logged."""
    while not await request.is_disconnected():
        found, after = await run_in_threadpool(feed.page, after, STREAM_PAGE, where)
        if found:
            shown = await run_in_threadpool(feed.public, found, personal)
            yield "".join(_message(event, form) for event, form in zip(found, shown, strict=True))
        if not found and not await watcher.wait_beyond(after, heartbeat):
            yield ": heartbeat\n\n"


def _message(event: FeedEvent, form: dict[str, Any]) -> str:
    data = _json(form).decode()
    return f"id: {event.position}\nevent: {event.type}\ndata: {data}\n\n"


def _json(value: Any) -> bytes:
    """Compact UTF-8 JSON; orjson, or the standard library for what orjson refuses (an integer
    beyond 64 bits in a form)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
