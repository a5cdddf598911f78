"""The business clock, injected so that tests, simulations and migrations can set the time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    @property
    def overridden(self) -> bool:
        """Whether the time is set by an operator rather than read from the real clock."""
        ...

    def now(self) -> datetime: ...


@dataclass(frozen=True)
class SystemClock:
    """The real time, in UTC."""

    overridden: bool = False

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class FixedClock:
    """A business time set by the operator (`--now`); events say the clock was overridden."""

    at: datetime
    overridden: bool = True

    def now(self) -> datetime:
        return self.at
