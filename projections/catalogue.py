"""Every projection gnlc keeps, by name."""

from __future__ import annotations

from projections.applications import ApplicationsProjection
from projections.base import Projection
from projections.members import DeadlinesProjection, MembersProjection
from projections.quotas import QuotasProjection

PROJECTIONS: dict[str, type[Projection]] = {
    p.name: p for p in (MembersProjection, DeadlinesProjection, QuotasProjection,
                        ApplicationsProjection)
}


def fold(events: object, timezone: str, names: tuple[str, ...] = tuple(PROJECTIONS)
         ) -> dict[str, Projection]:
    """Every projection folded in memory from `events` (an iterable of domain events)."""
    folded = {name: PROJECTIONS[name](timezone) for name in names}
    for event in events:  # type: ignore[attr-defined]
        for projection in folded.values():
            projection.apply(event)
    return folded
