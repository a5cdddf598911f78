"""The NATS JetStream relay: every public event, in commit order, published exactly once.

Each event goes to `<prefix>.<type>` with `Nats-Msg-Id` set to its public id and a
`Gnlc-Position` header. The relay's position is stored in the database only after JetStream
acknowledged; on start it also reads the stream's last message, so a relay killed between the
acknowledgement and the store does not publish again what the stream already holds (and
JetStream's duplicate window would drop it anyway). One relay publishes at a time (a lock, as the
projection runners); others wait and take over when it dies. Personal data is always masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import nats
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from infrastructure.eventstore.head_watch import HeadWatcher
from infrastructure.feed.public_events import Feed, FeedEvent
from infrastructure.readmodels.runner import ProjectionLock

POSITION_HEADER = "Gnlc-Position"
DUPLICATE_WINDOW_SECONDS = 24 * 3600.0
PAGE = 500
log = logging.getLogger("gnlc.relay")


class RelayPositions:
    """The last position each relay has had acknowledged (beside the read models)."""

    def __init__(self, engine: Engine, schema: str | None) -> None:
        self.engine = engine
        self.table = Table(
            "relay_positions", MetaData(schema=schema),
            Column("relay", String(200), primary_key=True),
            Column("position", Integer, nullable=False),
            Column("updated_at", DateTime(timezone=True), nullable=False),
        )

    def create(self) -> None:
        self.table.metadata.create_all(self.engine, checkfirst=True)

    def get(self, relay: str) -> int:
        with self.engine.connect() as connection:
            found = connection.execute(
                select(self.table.c.position).where(self.table.c.relay == relay)).scalar()
        return int(found or 0)

    def set(self, relay: str, position: int) -> None:
        values = {"relay": relay, "position": position, "updated_at": datetime.now(UTC)}
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        # One upsert: the rowcount of INSERT .. ON CONFLICT DO NOTHING is -1 on PostgreSQL (psycopg
        # through SQLAlchemy), so "insert, and update when nothing was inserted" never updated.
        upsert = dialect.insert(self.table).values(values).on_conflict_do_update(
            index_elements=[self.table.c.relay],
            set_={"position": position, "updated_at": values["updated_at"]})
        with self.engine.begin() as connection:
            connection.execute(upsert)


@dataclass
class NatsTarget:
    url: str = "nats://127.0.0.1:4222"
    stream: str = "GNLC"
    prefix: str = "gnlc.events"

    @property
    def name(self) -> str:
        return f"nats:{self.stream}:{self.prefix}"


class NatsRelay:
    def __init__(self, feed: Feed, positions: RelayPositions, lock: ProjectionLock,
                 watcher: HeadWatcher, target: NatsTarget) -> None:
        self.feed, self.positions, self.lock = feed, positions, lock
        self.watcher, self.target = watcher, target

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set, whenever this relay holds the lock."""
        connection = await nats.connect(self.target.url, max_reconnect_attempts=-1)
        js = connection.jetstream()
        self.watcher.start()
        try:
            await self._ensure_stream(js)
            while not stop.is_set():
                if not await asyncio.to_thread(self.lock.try_acquire):
                    await _wait(stop, 1.0)  # another relay publishes; take over when it dies
                    continue
                await self._publish_while_held(js, stop)
        finally:
            self.watcher.stop()
            await asyncio.to_thread(self.lock.release)
            await connection.drain()

    async def _publish_while_held(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        position = max(self.positions.get(self.target.name), await self._last_published(js))
        while not stop.is_set():
            if await asyncio.to_thread(self.lock.lost):
                log.warning("lost the relay lock; another relay may publish now")
                self.lock.release()
                return
            found, examined = await asyncio.to_thread(self.feed.page, position, PAGE)
            for event in found:
                await self._publish(js, event)
            if examined > position:
                await asyncio.to_thread(self.positions.set, self.target.name, examined)
                position = examined
            if not found:
                await self.watcher.wait_beyond(position, 1.0)

    async def _publish(self, js: JetStreamContext, event: FeedEvent) -> None:
        payload = json.dumps(event.public(personal_data=False), ensure_ascii=False,
                             separators=(",", ":")).encode()
        await js.publish(
            f"{self.target.prefix}.{event.type}", payload, stream=self.target.stream,
            headers={"Nats-Msg-Id": event.id, POSITION_HEADER: str(event.position)})

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        try:
            await js.stream_info(self.target.stream)
        except NotFoundError:
            await js.add_stream(name=self.target.stream, subjects=[f"{self.target.prefix}.>"],
                                duplicate_window=DUPLICATE_WINDOW_SECONDS)

    async def _last_published(self, js: JetStreamContext) -> int:
        """The position of the stream's last message (0 for an empty stream)."""
        info = await js.stream_info(self.target.stream)
        if not info.state.last_seq:
            return 0
        try:
            message = await js.get_msg(self.target.stream, seq=info.state.last_seq)
        except NotFoundError:
            return 0
        return int((message.headers or {}).get(POSITION_HEADER, 0))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
