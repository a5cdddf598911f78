"""A synthetic event log for load and crash tests: thousands of cities taken through the domain API
and saved many aggregates per `registry.save` (the library writes each call in one transaction).

The use cases write about 600 admissions a second on SQLite and 200 on PostgreSQL; this writes tens
of thousands of events in a few seconds. The acts are those of 2016 and 2017 (the regulations
before 2018: no quota, no window), so no rule refuses them, except the progress reports and what
follows them, dated from 2018-10-01 when reporting began; every event type the projections handle
occurs: submissions, endorsements, declines, withdrawals, rejections, admissions,
retractions, progress reports and ended memberships, spread over every country.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pycountry

from application.registry import Registry, StreamReader, replay
from domain.acts import Act, AuditedAggregate, Role
from domain.applications import CityApplication
from domain.cities import City
from domain.forms import ApplicationForm, ProgressReport, parse
from domain.quotas import QuotaLedger, ledger_id

COUNTRIES = sorted(c.alpha_2 for c in pycountry.countries)
YEARS = (2016, 2017)
# A report comes this long after the act that would otherwise have dated it: the earliest (from
# an admission in early March 2016) falls in November 2018, after reporting began on 2018-10-01.
REPORTS_LATER = timedelta(days=800)

_FORM = parse(ApplicationForm, {
    "city": "Template", "country": "DE",
    "mayor": {"full_name": "Ada Mayor"},
    "contact": {"full_name": "Grace Contact", "email": "learning@example.org"},
    "language": "en", "motivation": "Lifelong learning for all.",
    "implementation": "Learning festivals in every district.", "pledge": True,
    "signed_on": "2016-02-20",
}).model_dump(mode="json")
_REPORT = parse(ProgressReport, {
    "covering_from": "2016-07-01", "covering_to": "2017-06-30",
    "summary": "Ten community learning centres opened.", "statistics": {"learners": 1200},
}).model_dump(mode="json")


def _act(role: Role, moment: datetime) -> Act:
    return Act(actor=f"synthetic-{role}", role=role, effective_at=moment,
               timezone="Europe/Berlin", clock_overridden=True, source="import")


class _Writer:
    """Collects changed aggregates and saves them in one `registry.save` per chunk."""

    def __init__(self, registry: Registry, chunk_events: int) -> None:
        self.registry, self.chunk_events = registry, chunk_events
        self.pending: dict[Any, AuditedAggregate] = {}
        self.ledgers: dict[tuple[str, int], QuotaLedger] = {}
        self.written = 0

    def add(self, *aggregates: AuditedAggregate) -> None:
        for aggregate in aggregates:
            self.pending[aggregate.id] = aggregate
        if sum(len(a.pending_events) for a in self.pending.values()) >= self.chunk_events:
            self.flush()

    def flush(self) -> None:
        aggregates = [a for a in self.pending.values() if a.pending_events]
        count = sum(len(a.pending_events) for a in aggregates)
        if aggregates:
            self.registry.save(*aggregates)
        self.written += count
        self.pending.clear()

    def load_ledgers(self) -> None:
        """Every ledger stored before, in one query (the store's recorders read many streams)."""
        ids = {ledger_id(c, y): (c, y) for c in COUNTRIES for y in YEARS}
        recorder = self.registry.recorder
        assert isinstance(recorder, StreamReader)
        streams: dict[Any, list[Any]] = {}
        for stored in recorder.select_streams(list(ids)):
            event = self.registry.mapper.to_domain_event(stored)
            streams.setdefault(stored.originator_id, []).append(event)
        for aggregate_id, events in streams.items():
            self.ledgers[ids[aggregate_id]] = replay(None, events)

    def ledger(self, act: Act, country: str, year: int) -> QuotaLedger:
        """The country's ledger of the year: the stored one, or opened now."""
        if (country, year) not in self.ledgers:
            self.ledgers[(country, year)] = QuotaLedger.open(act, country, year)
        return self.ledgers[(country, year)]


def generate(registry: Registry, events_at_least: int, *, seed: int = 0, tag: str | None = None,
             chunk_events: int = 4000) -> int:
    """Write at least `events_at_least` events; return how many were written.

    Cities are named after `tag` (random by default), so calls with different tags add new
    cities; ledgers already stored are loaded and extended."""
    rng = random.Random(seed)
    tag = tag or uuid.uuid4().hex[:8]
    writer = _Writer(registry, chunk_events)
    writer.load_ledgers()
    number = 0
    while writer.written + sum(len(a.pending_events) for a in writer.pending.values()) \
            < events_at_least:
        number += 1
        _one_city(writer, rng, COUNTRIES[number % len(COUNTRIES)], f"Synthetic {tag} {number}")
    writer.flush()
    return writer.written


def _one_city(writer: _Writer, rng: random.Random, country: str, name: str) -> None:
    year = rng.choice(YEARS)
    start = datetime(year, 3, 1, 9, tzinfo=UTC) + timedelta(minutes=rng.randrange(60 * 24 * 60))
    city_act = _act(Role.CITY, start)
    city = City.register(city_act, country, name)
    application = CityApplication.submit(
        city_act, uuid.uuid4(), city.id, year, {**_FORM, "city": name, "country": country})
    city.lodge_application(city_act, application.id)
    later = start + timedelta(days=rng.randrange(1, 60))
    commission = _act(Role.NATIONAL_COMMISSION, later)
    secretariat = _act(Role.SECRETARIAT, later + timedelta(days=rng.randrange(1, 60)))
    fate = rng.random()
    if fate < 0.05:  # still pending: submitted, or endorsed and waiting for a decision
        if rng.random() < 0.5:
            application.endorse(commission)
        writer.add(city, application)
        return
    if fate < 0.15:
        application.decline(commission, "Part 2 missing")
        city.close_application(commission, application.id, "declined")
        writer.add(city, application)
        return
    if fate < 0.25:
        application.withdraw(_act(Role.CITY, later), "the council changed its mind")
        city.close_application(commission, application.id, "withdrawn")
        writer.add(city, application)
        return
    application.endorse(commission)
    if fate < 0.40:
        application.reject(secretariat, "not yet ready", "not_recommended")
        city.close_application(secretariat, application.id, "rejected")
        writer.add(city, application)
        return
    ledger = writer.ledger(secretariat, country, year)
    if ledger.last_act_at is not None and ledger.last_act_at > secretariat.effective_at:
        # Business time never runs backwards on the shared ledger: decide after its last act.
        secretariat = _act(Role.SECRETARIAT, ledger.last_act_at)
    place = ledger.take_place(secretariat, application.id, city.id, secretariat.regulations)
    application.admit(secretariat, None, "recommended", place)
    city.start_membership(secretariat, application.id, year)
    after = rng.random()
    afterwards = _act(Role.SECRETARIAT, secretariat.effective_at + timedelta(days=200))
    if after < 0.10:  # the next day: the ledger's later admissions are not pushed far ahead
        corrigendum = _act(Role.SECRETARIAT, secretariat.effective_at + timedelta(days=1))
        application.retract(corrigendum, "admitted in error")
        city.retract_membership(corrigendum, application.id, "admitted in error")
        ledger.free_place(corrigendum, application.id, "admitted in error")
    elif after < 0.30:
        reported = afterwards.effective_at + REPORTS_LATER
        city.submit_report(_act(Role.CITY, reported), _REPORT)
        if after < 0.15:
            city.end_membership(_act(Role.SECRETARIAT, reported + timedelta(days=30)),
                                "withdrawn_by_city", None)
    elif after < 0.40:
        city.end_membership(afterwards, "not_reporting", "no report")
    writer.add(city, application, ledger)
