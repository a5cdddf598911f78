"""The quota ledger: the admissions in force for one country and intake year."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.acts import Act, AuditedAggregate
from domain.errors import QuotaExhausted
from domain.regulations import Regulations


def ledger_id(country: str, year: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"gnlc:quota:{country.upper()}:{year}")


class QuotaLedger(AuditedAggregate):
    """Saved together with every admission and retraction, so concurrent decisions conflict here."""

    class Opened(AuditedAggregate.Event, Aggregate.Created):
        country: str
        year: int

    def __init__(self, country: str, year: int, **_audit: Any) -> None:
        self.country = country
        self.year = year
        self.admitted: list[UUID] = []
        self.retracted: list[UUID] = []

    @classmethod
    def open(cls, act: Act, country: str, year: int) -> QuotaLedger:
        return cls._create(
            cls.Opened,
            id=ledger_id(country, year),
            country=country,
            year=year,
            **act.event_fields(),
        )

    class PlaceTaken(AuditedAggregate.Event):
        application_id: UUID
        city_id: UUID
        used_before: int
        limit: int | None
        regulation_version: str

        def apply(self, ledger: QuotaLedger) -> None:
            ledger.admitted.append(self.application_id)

    class PlaceFreed(AuditedAggregate.Event):
        application_id: UUID
        reason: str

        def apply(self, ledger: QuotaLedger) -> None:
            ledger.admitted.remove(self.application_id)
            ledger.retracted.append(self.application_id)

    @property
    def used(self) -> int:
        """Admissions in force: a retraction frees its place, an ended membership does not."""
        return len(self.admitted)

    def take_place(
        self, act: Act, application_id: UUID, city_id: UUID, regulations: Regulations,
        historical: bool = False,
    ) -> PlaceTaken:
        """Take a place of the year, if one is left. A `historical` admission (history import)
        may precede the ledger's last act: the ledger counts places, in no order, and no as-of
        answer is folded from it."""
        limit = regulations.quota_per_country_per_year
        if limit is not None and self.used >= limit:
            raise QuotaExhausted(
                f"{self.country} has used {self.used} of {limit} places of intake year {self.year}"
            )
        self.trigger_event(
            self.PlaceTaken,
            historical=historical,
            application_id=application_id,
            city_id=city_id,
            used_before=self.used,
            limit=limit,
            regulation_version=regulations.version,
            **act.event_fields(),
        )
        event = self.pending_events[-1]
        assert isinstance(event, QuotaLedger.PlaceTaken)
        return event

    def free_place(self, act: Act, application_id: UUID, reason: str) -> None:
        self.trigger_event(
            self.PlaceFreed, application_id=application_id, reason=reason, **act.event_fields()
        )
