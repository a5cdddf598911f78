"""A synthetic network of learning cities, written through the domain aggregates, for benchmarks.

Run from the repository root (the store must be empty):

    .venv/bin/python benchmarks/network.py --database-url URL [--events 1000000] [--seed 7]
                                           [--batch-events 2000]

Every country of ISO 3166-1 (pycountry) takes part in every intake from 2015 to 2025. Cities
register, apply, are endorsed or declined by their National Commission, withdraw, are admitted or
rejected by the secretariat, some admissions are retracted; members report every two years, some
memberships end (not reporting, withdrawn by the city) and some of those cities are readmitted in a
later intake (a new application and a new membership period). The rules are those of the domain:
intakes 2015-2018 follow the pre-2018 regulations (open all year, no quota; all their acts fall
before 2018-10-01), intakes from 2019 the 2018 regulations (window 1 March - 30 April, sometimes
extended, and 3 admissions per country and year, held by one `QuotaLedger` per country and year).
Each step calls the aggregates' own commands, so an invalid sequence would raise as it does in the
use cases; the use cases themselves are not called (too slow for a million events). Business times
are set explicitly (`clock_overridden`), the source is `import`.

The size follows `--events`: the number of cities per intake is scaled from an estimate of events
per city, and if the timeline falls short, a 2026 reporting season tops the log up to at least the
requested number. Pending events are saved in batches of about `--batch-events` events, one
`registry.save(*aggregates)` (one transaction) per batch. The same seed gives the same network.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pycountry
from eventsourcing.domain import Aggregate

from application.registry import Registry
from domain.acts import Act, Role
from domain.applications import CityApplication
from domain.cities import City
from domain.forms import ApplicationForm, ProgressReport, parse
from domain.intakes import IntakeCalendar
from domain.quotas import QuotaLedger
from infrastructure.bootstrap import build_registry
from infrastructure.settings import Settings

FIRST_YEAR, LAST_YEAR = 2015, 2025
TIMEZONE = "Europe/Berlin"
REGULATIONS_2018_FROM = date(2018, 10, 1)
# Events per unit of scale, measured on this generator (seed 7); a shortfall is topped up.
EVENTS_PER_UNIT = 100_000
FIXED_EVENTS = 44_000  # the part that does not grow with the scale (post-2018 quota admissions)

PREFIXES = ("Al", "Bel", "Cor", "Dal", "Es", "Fon", "Gra", "Hal", "Is", "Jun", "Kar", "Lin",
            "Mar", "Nor", "Or", "Por", "Quin", "Ros", "San", "Tor", "Ul", "Val", "Wes", "Zel")
SUFFIXES = ("ba", "burg", "dorf", "ford", "grad", "haven", "holm", "ia", "ino", "mont", "polis",
            "sala", "stad", "ton", "ville", "wick")


# --- the shapes of forms and reports, validated once by the domain's own schemas --------------


def _application_template() -> dict[str, Any]:
    data = {
        "city": "Template", "country": "DE", "website": "https://www.example.org",
        "mayor": {"title": "Dr", "full_name": "Ada Mayor", "official_title": "Mayor"},
        "contact": {
            "full_name": "Grace Contact", "official_title": "Head of Learning",
            "organisation": "City Hall", "postal_address": "1 Town Square",
            "phone": "+00 0000 0000", "email": "learning@example.org",
        },
        "language": "en",
        "profile": {"population": {"value": 250_000, "year": 2015},
                    "area_km2": {"value": 120, "year": 2015}},
        "motivation": "Lifelong learning for all citizens, in every district and at every age.",
        "implementation": "Learning festivals, community learning centres and a city-wide plan.",
        "pledge": True,
        "signed_on": "2015-02-01",
    }
    return parse(ApplicationForm, data).model_dump(mode="json")


def _report_template() -> dict[str, Any]:
    data = {
        "covering_from": "2019-01-01", "covering_to": "2020-12-31",
        "summary": "Progress on the learning city plan: festivals, centres, partnerships.",
        "statistics": {"learners": 12_000, "centres": 14},
        "links": ["https://www.example.org/report"],
    }
    return parse(ProgressReport, data).model_dump(mode="json")


APPLICATION_FORM = _application_template()
REPORT = _report_template()


def application_form(name: str, country: str, signed_on: date, population: int) -> dict[str, Any]:
    year = signed_on.year - 1
    return {
        **APPLICATION_FORM, "city": name, "country": country, "signed_on": signed_on.isoformat(),
        "profile": {**APPLICATION_FORM["profile"],
                    "population": {"value": float(population), "year": year},
                    "area_km2": {"value": float(population // 2000 + 10), "year": year}},
    }


def progress_report(covering_from: date, covering_to: date, learners: int) -> dict[str, Any]:
    return {**REPORT, "covering_from": covering_from.isoformat(),
            "covering_to": covering_to.isoformat(),
            "statistics": {"learners": float(learners), "centres": float(learners // 900)}}


# --- batched saving ---------------------------------------------------------------------------


class Writer:
    """Collects the aggregates with pending events; saves them together, one transaction a batch."""

    def __init__(self, registry: Registry, batch_events: int,
                 progress: Callable[[int], None] | None = None) -> None:
        self.registry, self.batch_events, self.progress = registry, batch_events, progress
        self.dirty: dict[UUID, tuple[Aggregate, int]] = {}
        self.pending = 0
        self.written = 0
        self.saves = 0
        self.types: Counter[str] = Counter()

    def touch(self, *aggregates: Aggregate) -> None:
        """Call after each complete command, with every aggregate it changed."""
        for aggregate in aggregates:
            seen = self.dirty.get(aggregate.id, (aggregate, 0))[1]
            count = len(aggregate.pending_events)
            self.pending += count - seen
            self.dirty[aggregate.id] = (aggregate, count)
        if self.pending >= self.batch_events:
            self.flush()

    def flush(self) -> None:
        if not self.dirty:
            return
        aggregates = [aggregate for aggregate, _ in self.dirty.values()]
        for aggregate in aggregates:
            self.types.update(type(e).__qualname__ for e in aggregate.pending_events)
        self.registry.save(*aggregates)
        self.written += self.pending
        self.saves += 1
        self.dirty.clear()
        self.pending = 0
        if self.progress:
            self.progress(self.written)


# --- the network ------------------------------------------------------------------------------


@dataclass
class Returning:
    """A city that may apply again: after a refusal, a withdrawal, a retraction or an end."""

    city: City
    from_year: int
    former_member: bool


@dataclass
class Stats:
    events: int = 0
    saves: int = 0
    seconds: float = 0.0
    scale: float = 0.0
    countries: int = 0
    cities: int = 0
    applications: int = 0
    admissions: int = 0
    readmissions: int = 0
    retractions: int = 0
    reports: int = 0
    ends: int = 0
    topped_up: int = 0
    types: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (f"{self.events:,} events in {self.saves:,} saves, {self.seconds:.1f} s "
                f"({self.rate:,.0f} events/s); scale {self.scale:.2f}: {self.countries} "
                f"countries, {self.cities:,} cities, {self.applications:,} applications, "
                f"{self.admissions:,} admissions ({self.readmissions:,} readmissions, "
                f"{self.retractions:,} retracted), {self.reports:,} reports, "
                f"{self.ends:,} memberships ended, {self.topped_up:,} top-up reports")


def at(day: date, rng: random.Random) -> datetime:
    """A moment of office hours on `day` (06:00-16:00 UTC: the same date in Europe/Berlin)."""
    return datetime(day.year, day.month, day.day, 6, tzinfo=UTC) + timedelta(
        seconds=rng.randrange(10 * 3600))


class Network:
    """Plays the intakes 2015..2025 through the aggregates; see the module docstring."""

    def __init__(self, registry: Registry, events: int, seed: int, batch_events: int,
                 progress: Callable[[int], None] | None = None) -> None:
        self.rng = random.Random(seed)
        self.writer = Writer(registry, batch_events, progress)
        self.target = events
        self.scale = max(0.05, (events - FIXED_EVENTS) / EVENTS_PER_UNIT)
        self.stats = Stats(scale=self.scale)
        self.countries = sorted(c.alpha_2 for c in pycountry.countries)
        # Some countries have many more cities than others.
        self.weights = {c: self.rng.lognormvariate(0, 0.6) for c in self.countries}
        self.calendar: IntakeCalendar | None = None
        self.names: Counter[str] = Counter()
        self.members: dict[UUID, City] = {}  # active members
        self.returning: dict[str, list[Returning]] = {c: [] for c in self.countries}
        self.last_at: dict[UUID, datetime] = {}  # the latest act on each city

    # --- helpers ---------------------------------------------------------------------------

    def act(self, role: Role, moment: datetime) -> Act:
        actor = {Role.CITY: "city-hall", Role.NATIONAL_COMMISSION: "national-commission",
                 Role.SECRETARIAT: "uil-secretariat"}[role]
        return Act(actor=actor, role=role, effective_at=moment, timezone=TIMEZONE,
                   clock_overridden=True, source="import")

    def new_id(self) -> UUID:
        return UUID(int=self.rng.getrandbits(128), version=4)

    def day_between(self, first: date, last: date) -> date:
        return first + timedelta(days=self.rng.randint(0, max(0, (last - first).days)))

    def city_name(self, country: str) -> str:
        base = f"{self.rng.choice(PREFIXES)}{self.rng.choice(SUFFIXES)}"
        self.names[country + base] += 1
        return f"{base} {self.names[country + base]}"

    def count(self, mean: float) -> int:
        """A count around `mean` (Poisson-like spread, never negative)."""
        if mean <= 0:
            return 0
        return max(0, round(self.rng.gauss(mean, math.sqrt(mean))))

    # --- intakes ---------------------------------------------------------------------------

    def open_intake(self, year: int) -> tuple[date, date]:
        """Open `year`'s intake (and sometimes extend it); the days on which cities apply."""
        opened = self.act(Role.SECRETARIAT, at(date(year, 1, 10), self.rng))
        if self.calendar is None:
            self.calendar = IntakeCalendar.start(opened)
        intake = self.calendar.open_intake(opened, year)
        if year < 2019:
            # Open all year under the pre-2018 rules; decide before the 2018 rules take effect.
            first, last = date(year, 2, 1), date(year, 9, 15)
        else:
            first, last = intake.opens, intake.closes
            if self.rng.random() < 0.35:
                extended = self.act(Role.SECRETARIAT, at(date(year, 4, 20), self.rng))
                closes = date(year, 5, self.rng.randint(10, 31))
                self.calendar.extend_intake(extended, year, closes,
                                            "late endorsements by National Commissions")
                last = closes
        self.writer.touch(self.calendar)
        return first, last

    def applicants(self, year: int, country: str) -> list[City | None]:
        """New cities (None: to be registered) and returning ones, for one country's intake."""
        weight = self.weights[country]
        mean = (6.0 if year < 2019 else 1.6) * self.scale * weight
        if year >= 2019:
            mean += 2.5 * weight  # the quota keeps admissions flat; applicants still come
        chosen: list[City | None] = [None] * self.count(mean)
        staying = []
        for returning in self.returning[country]:
            chance = 0.3 if returning.former_member else 0.15
            if returning.from_year <= year and self.rng.random() < chance:
                chosen.append(returning.city)
            else:
                staying.append(returning)
        self.returning[country] = staying
        self.rng.shuffle(chosen)
        return chosen

    def intake(self, year: int, country: str, first: date, last: date) -> None:
        assert self.calendar is not None
        endorsed: list[tuple[datetime, CityApplication, City]] = []
        for city in self.applicants(year, country):
            submitted_on = self.day_between(first, last - timedelta(days=4))
            submitted = self.act(Role.CITY, at(submitted_on, self.rng))
            self.calendar.check_open(year, submitted)
            if city is None:
                city = City.register(submitted, country, self.city_name(country))
                self.stats.cities += 1
            # Sealed as the use case seals it (keys staged, written by the batch's save).
            form = self.writer.registry.sealed_form(city.id, application_form(
                city.name, country, submitted_on - timedelta(days=10),
                self.rng.randrange(20_000, 5_000_000)))
            application = CityApplication.submit(submitted, self.new_id(), city.id, year, form)
            city.lodge_application(submitted, application.id)
            self.writer.touch(city, application)
            self.stats.applications += 1
            reviewed_on = self.day_between(submitted_on + timedelta(days=1),
                                           last - timedelta(days=3))
            reviewed = at(reviewed_on, self.rng)
            roll = self.rng.random()
            if roll < 0.06:
                act = self.act(Role.NATIONAL_COMMISSION, reviewed)
                self.calendar.check_open(year, act)  # the registry checks only decisions
                application.decline(act, "the application does not meet the national criteria")
                self.close(act, application, city, "declined", year)
            elif roll < 0.09:
                act = self.act(Role.CITY, reviewed)
                application.withdraw(act, "the city council postponed the application")
                self.close(act, application, city, "withdrawn", year)
            else:
                application.endorse(self.act(Role.NATIONAL_COMMISSION, reviewed))
                self.writer.touch(application)
                decided_on = self.day_between(reviewed_on + timedelta(days=1),
                                              last - timedelta(days=1))
                endorsed.append((at(decided_on, self.rng), application, city))
            self.last_at[city.id] = reviewed
        self.decide(year, country, sorted(endorsed, key=lambda e: e[0]))

    def close(self, act: Act, application: CityApplication, city: City, outcome: str,
              year: int) -> None:
        city.close_application(act, application.id, outcome)
        self.writer.touch(application, city)
        self.returning[city.country].append(Returning(city, year + 1, former_member=False))

    def decide(self, year: int, country: str,
               endorsed: Sequence[tuple[datetime, CityApplication, City]]) -> None:
        """The secretariat decides in time order; the quota ledger holds from 2018-10-01."""
        assert self.calendar is not None
        ledger: QuotaLedger | None = None
        clock = datetime.min.replace(tzinfo=UTC)
        for moment, application, city in endorsed:
            clock = max(moment, clock + timedelta(seconds=1))
            act = self.act(Role.SECRETARIAT, clock)
            self.calendar.check_open(year, act)
            regulations = act.regulations
            limit = regulations.quota_per_country_per_year
            jury = self.rng.choice(("recommended", "recommended", "recommended",
                                    "not_recommended", None))
            used = ledger.used if ledger is not None else 0
            if jury != "not_recommended" and (limit is None or used < limit):
                if ledger is None:  # as the registry does: opened by the first admission
                    ledger = QuotaLedger.open(act, country, year)
                place = ledger.take_place(act, application.id, city.id, regulations)
                application.admit(act, None, jury, place)
                if city.memberships:
                    self.stats.readmissions += 1
                city.start_membership(act, application.id, year)
                self.writer.touch(application, city, ledger)
                self.members[city.id] = city
                self.stats.admissions += 1
                if self.rng.random() < 0.02:
                    clock += timedelta(minutes=5)
                    self.retract(self.act(Role.SECRETARIAT, clock), application, city, ledger,
                                 year)
            else:
                reason = "quota reached" if jury != "not_recommended" else "not recommended"
                application.reject(act, f"{reason} for {country} in {year}", jury)
                self.close(act, application, city, "rejected", year)
            self.last_at[city.id] = clock

    def retract(self, act: Act, application: CityApplication, city: City, ledger: QuotaLedger,
                year: int) -> None:
        reason = "corrigendum: the admission was recorded in error"
        application.retract(act, reason)
        city.retract_membership(act, application.id, reason)
        ledger.free_place(act, application.id, reason)
        self.writer.touch(application, city, ledger)
        del self.members[city.id]
        self.returning[city.country].append(Returning(city, year + 1, former_member=False))
        self.stats.retractions += 1

    # --- memberships -----------------------------------------------------------------------

    def report(self, city: City, moment: datetime) -> None:
        membership = city.active_membership
        assert membership is not None
        covering_from = membership.due_date(membership.next_cycle() - 1) \
            if membership.reports else membership.admitted_on
        city.submit_report(self.act(Role.CITY, moment),
                           progress_report(covering_from, moment.date(),
                                           self.rng.randrange(1_000, 90_000)))
        self.writer.touch(city)
        self.last_at[city.id] = moment
        self.stats.reports += 1

    def end(self, city: City, moment: datetime, reason: str, year: int) -> None:
        note = "the city asked to leave the network" if reason == "withdrawn_by_city" else None
        city.end_membership(self.act(Role.SECRETARIAT, moment), reason, note)
        self.writer.touch(city)
        self.last_at[city.id] = moment
        del self.members[city.id]
        self.returning[city.country].append(Returning(city, year + 1, former_member=True))
        self.stats.ends += 1

    def reporting_season(self, year: int) -> None:
        """Reports around their due dates; ends for long-missed reports and departures."""
        december = date(year, 12, 28)
        for city in list(self.members.values()):
            membership = city.active_membership
            assert membership is not None
            due = membership.due_date(membership.next_cycle())
            after = self.last_at[city.id].date() + timedelta(days=1)
            if due.year == year and self.rng.random() < 0.88:
                day = min(max(due + timedelta(days=self.rng.randint(-90, 45)), after), december)
                self.report(city, at(day, self.rng))
            elif due.year < year:  # a report missed in an earlier year
                if self.rng.random() < 0.45:
                    day = max(self.day_between(date(year, 1, 5), date(year, 3, 31)), after)
                    self.report(city, at(day, self.rng))
                else:
                    day = max(due + timedelta(days=181 + self.rng.randint(0, 60)), after)
                    self.end(city, at(min(day, december), self.rng), "not_reporting", year)
                    continue
            if self.rng.random() < 0.012:
                after = self.last_at[city.id].date() + timedelta(days=1)
                day = max(self.day_between(date(year, 10, 1), december), after)
                reason = self.rng.choice(("withdrawn_by_city", "other"))
                self.end(city, at(min(day, date(year, 12, 31)), self.rng), reason, year)

    def top_up(self) -> None:
        """A 2026 reporting season, a week per round, until the log holds the target."""
        rounds = 0
        while self.written() < self.target and self.members:
            rounds += 1
            day = date(2026, 1, 5) + timedelta(days=7 * rounds)
            for city in list(self.members.values()):
                if self.written() >= self.target:
                    return
                self.report(city, at(day, self.rng))
                self.stats.reports -= 1
                self.stats.topped_up += 1

    def written(self) -> int:
        """Events written or pending."""
        return self.writer.written + self.writer.pending

    # --- the whole timeline ----------------------------------------------------------------

    def run(self) -> Stats:
        started = time.perf_counter()
        for year in range(FIRST_YEAR, LAST_YEAR + 1):
            # The cities live to the end: keep the collector from scanning them again and again
            # (a third of the run time at a million events otherwise).
            gc.freeze()
            first, last = self.open_intake(year)
            for country in self.countries:
                self.intake(year, country, first, last)
            self.reporting_season(year)
        self.top_up()
        self.writer.flush()
        gc.unfreeze()
        self.stats.seconds = time.perf_counter() - started
        self.stats.events = self.writer.written
        self.stats.saves = self.writer.saves
        self.stats.countries = len(self.countries)
        self.stats.types = dict(self.writer.types.most_common())
        return self.stats


def generate(registry: Registry, events: int = 1_000_000, seed: int = 7,
             batch_events: int = 2000, progress: Callable[[int], None] | None = None) -> Stats:
    """Write a synthetic network of at least `events` events into the (empty) store."""
    if registry.recorder.max_notification_id():
        raise SystemExit("the store is not empty: the network is written into an empty store")
    # One stage for the whole run: each batch's save writes the keys sealed since the last.
    with registry.personal_data.staging():
        return Network(registry, events, seed, batch_events, progress).run()


def generate_at(database_url: str, events: int = 1_000_000, seed: int = 7,
                batch_events: int = 2000, progress: Callable[[int], None] | None = None
                ) -> Stats:
    """`generate` on a registry built by the composition root on `database_url`."""
    registry = build_registry(Settings(database_url=database_url))
    try:
        return generate(registry, events, seed, batch_events, progress)
    finally:
        registry.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", required=True,
                        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB[?schema=NAME]")
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="at least this many events (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-events", type=int, default=2000,
                        help="about this many events per save (one transaction)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    last = [0.0]

    def progress(written: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 5:
            last[0] = now
            print(f"  {written:,} events written", file=sys.stderr, flush=True)

    stats = generate_at(args.database_url, args.events, args.seed, args.batch_events, progress)
    print(stats.summary())
    for name, count in stats.types.items():
        print(f"  {name:32} {count:>9,}")


if __name__ == "__main__":
    main()
