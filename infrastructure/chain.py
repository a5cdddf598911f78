"""The hash chain over the whole log: each stored event's hash covers the one before it.

`hash(n) = SHA-256(hash(n-1) || the event's bytes exactly as stored)`: its position, stream id,
stream version, topic, state bytes and recorded time, each length-prefixed so that no two
different rows can give the same bytes. The chain row is written by the recorder in the same
transaction as the event (see infrastructure/recorders.py), while the writer holds the store's
write lock (PostgreSQL: the library's EXCLUSIVE table lock; SQLite: the database write lock), so
two writers can never fork the chain.
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
    parts = (str(position).encode(), str(UUID(str(originator_id))).encode(),
             str(originator_version).encode(), topic.encode(), bytes(state),
             recorded_at.encode())
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


def link(previous: str, row: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + row).hexdigest()


def recorded_now() -> str:
    return datetime.now(UTC).isoformat()


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
