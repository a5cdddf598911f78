"""The hash chain over the whole log: each stored event's hash covers the one before it.

`hash(n) = SHA-256(hash(n-1) || the event's bytes exactly as stored)`: its position, stream id,
stream version, topic, state bytes and recorded time, each length-prefixed so that no two
different rows can give the same bytes. The chain row is written by the recorder in the same
transaction as the event (see infrastructure/eventstore/recorders.py), while the writer holds
the store's write lock (PostgreSQL: the library's EXCLUSIVE table lock; SQLite: the database
write lock), so two writers can never fork the chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

GENESIS = "0" * 64
CHAIN_TABLE = "gnlc_event_hashes"


@dataclass(frozen=True)
class Link:
    position: int
    hash: str
    recorded_at: str


def event_bytes(position: int, originator_id: UUID | str, originator_version: int, topic: str,
                state: bytes, recorded_at: str) -> bytes:
    """The stored row as hashed: length-prefixed fields."""
    p, s, v = str(position).encode(), stream_text(originator_id).encode(), \
        str(originator_version).encode()
    t, r = topic.encode(), recorded_at.encode()
    # One join, no intermediate copies of the (large) state.
    return b"".join((_size(p), p, _size(s), s, _size(v), v, _size(t), t, _size(state), state,
                     _size(r), r))


def _size(part: bytes) -> bytes:
    return len(part).to_bytes(8, "big")


def stream_text(originator_id: UUID | str) -> str:
    """The stream id as a UUID's text (SQLite stores 32 hex digits, PostgreSQL a uuid).

    Hex is sliced rather than parsed: faster, and a stored id whose case was changed no longer
    gives the same text, so that change is detected too.
    """
    if isinstance(originator_id, UUID):
        return str(originator_id)
    h = originator_id
    if len(h) == 32:
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return str(UUID(h))


def link(previous: str, row: bytes) -> str:
    digest = hashlib.sha256(bytes.fromhex(previous))
    digest.update(row)
    return digest.hexdigest()


def recorded_text(moment: datetime) -> str:
    """A fixed-width UTC time, so that the text sorts as the time does (also in SQL)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def recorded_now() -> str:
    """When a transaction recorded its events: one time for all of them, taken under the lock."""
    return recorded_text(datetime.now(UTC))


def extend(previous: str, positions: Sequence[int], events: Iterable[object],
           recorded_at: str) -> list[Link]:
    """The links for newly inserted events (StoredEvent-like objects), in position order."""
    links = []
    for position, event in zip(positions, events, strict=True):
        previous = link(previous, event_bytes(
            position, event.originator_id, event.originator_version,  # type: ignore[attr-defined]
            event.topic, event.state, recorded_at))  # type: ignore[attr-defined]
        links.append(Link(position, previous, recorded_at))
    return links
