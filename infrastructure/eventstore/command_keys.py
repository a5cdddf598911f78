"""The Idempotency-Key of the command being saved, recorded in the event store in the same
transaction as the command's events (by the recorders, see infrastructure/eventstore/recorders.py).

Whatever happens after that commit (the process dies, the database refuses the next write), a
retry with the key finds the row and answers from it: the command never runs twice."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from infrastructure.eventstore.chain import recorded_text

COMMAND_KEYS_TABLE = "gnlc_idempotency"
COLUMNS = "owner, idem_key, fingerprint, first_position, last_position, created_at"


@dataclass
class PendingKey:
    """A keyed command while it runs; `recorded` is set once its events were inserted (in a
    transaction that may still roll back)."""

    owner: str
    key: str
    fingerprint: str
    recorded: bool = False


# Set by the HTTP edge around one use case, in the thread that runs it.
pending_key: ContextVar[PendingKey | None] = ContextVar("gnlc_pending_key", default=None)


def key_row(positions: list[int] | tuple[int, ...]) -> tuple[object, ...] | None:
    """The row to insert with these events' positions, if a keyed command is saving them."""
    pending = pending_key.get()
    if pending is None or not positions:
        return None
    pending.recorded = True
    return (pending.owner, pending.key, pending.fingerprint, min(positions), max(positions),
            recorded_text(datetime.now(UTC)))
