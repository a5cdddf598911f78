"""Property: whatever commands the registry accepts or refuses, the read models that the projection
runner keeps live equal a rebuild from zero, the pure fold of the same events, and an independent
derivation from the domain aggregates themselves (on SQLite and on PostgreSQL). The business clock
also moves backwards (before the last act) and the history import records memberships among the
live acts; every command succeeds or is refused with a domain error, and the as-of and known-at
folds never raise and equal the aggregates replayed in business-time order at that point.

Each example runs on a store of its own: a fresh SQLite file, or a fresh PostgreSQL schema.
`pytest --hypothesis-show-statistics` shows how often each command was done or refused (and why)
in the generated runs."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from time import monotonic, sleep
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.application import AggregateNotFoundError
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from application.registry import Registry, replay_selection
from domain.acts import Actor, AuditedAggregate, Role
from domain.applications import CityApplication
from domain.calendar import local_date
from domain.cities import City, city_id, normalise_name
from domain.errors import GnlcError
from domain.forms import parse
from domain.history import HistoryRow
from domain.quotas import QuotaLedger, ledger_id
from domain.regulations import regulations_on
from domain.reporting import REVIEW_AFTER_DAYS, deadlines
from infrastructure.bootstrap import build_read_models, build_registry, build_runner
from infrastructure.readmodels.tables import ReadModelStore
from infrastructure.settings import Settings
from projections import answers
from projections.catalogue import PROJECTIONS, fold
from tests.conftest import (
    AUDITOR,
    BERLIN,
    CITY,
    COMMISSION,
    SECRETARIAT,
    SettableClock,
    application_form,
    progress_report,
)

TIMEZONE = "Europe/Berlin"
Row = dict[str, Any]
Step = tuple[Any, ...]

# Four German cities, so that a fourth admission in one intake year meets the quota; two Moroccan.
CITIES = (("Hamburg", "DE"), ("München", "DE"), ("Leipzig", "DE"), ("Köln", "DE"),
          ("Rabat", "MA"), ("Fès", "MA"))
UNKNOWN_ID = UUID("00000000-0000-4000-8000-00000000dead")
IMPORTER = Actor("history-import", Role.SECRETARIAT, source="import")
# Where the business clock starts: before and after the 2018 regulations took effect (1 October).
FIRST_DAYS = (date(2018, 6, 1), date(2018, 9, 20), date(2019, 1, 10), date(2021, 1, 10))
LAST_DAY = date(2025, 12, 31)
# The days the members and deadline answers are asked about (besides the last day of the run).
TODAYS = (date(2018, 12, 31), date(2020, 10, 1), date(2021, 3, 15), date(2023, 4, 30),
          date(2026, 6, 30))
TABLES = {table: name for name, projection in PROJECTIONS.items() for table in projection.keys}
KEYS = {table: PROJECTIONS[name].keys[table] for table, name in TABLES.items()}

WINDOWS: dict[str, Callable[[int], tuple[date | None, date | None]]] = {
    "default": lambda year: (None, None),
    "spring": lambda year: (date(year, 2, 1), date(year, 6, 30)),
    "autumn": lambda year: (date(year, 9, 1), date(year, 11, 1)),
    "inverted": lambda year: (date(year, 4, 30), date(year, 3, 1)),
    "opens_the_year_before": lambda year: (date(year - 1, 12, 1), date(year, 4, 30)),
}

# --- the commands, as data (hypothesis shows a failing run as a list of these tuples) ---------

def _mostly(usual: Any, *unusual: Any) -> st.SearchStrategy[Any]:
    """`usual` three times as often as all of `unusual` (invalid input, mostly) together."""
    return st.sampled_from([usual] * 3 * len(unusual) + list(unusual))


def _weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each as often as its weight (st.one_of draws its distinct
    strategies evenly, whatever their number of repeats)."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(lambda s: s)


_application = st.integers(-1, 7)  # the n-th newest application; -1: an unknown id
_city = st.integers(-1, len(CITIES) - 1)  # a city of the pool (maybe never registered); -1: unknown
_spelling = _mostly("as_registered", "respelled", "without_pledge")
_reason = _mostly("as the jury found", "  ")  # a blank reason is invalid input
_jury = _mostly(None, "recommended", "not_recommended", "undecided")
_hour = st.sampled_from([0, 9, 13, 23])  # 00:30 and 23:30 in Berlin fall on another UTC day
_projections = st.lists(st.sampled_from(sorted(PROJECTIONS)), min_size=1, unique=True).map(tuple)

# The commands that take the newest application (pick 0) one step on, each through its use case.
ENDORSE, ADMIT = ("endorse", 0), ("admit", 0, None)
PATHS: dict[str, tuple[Step, ...]] = {
    "submitted": (),
    "endorsed": (ENDORSE,),
    "declined": (("decline", 0, "incomplete"),),
    "withdrawn": (ENDORSE, ("withdraw", 0, "not this year")),
    "admitted": (ENDORSE, ADMIT),
    "rejected": (ENDORSE, ("reject", 0, "not recommended", "not_recommended")),
    "retracted": (ENDORSE, ADMIT, ("retract", 0, "corrigendum")),
}
_lifecycle = st.tuples(st.just("lifecycle"), st.integers(0, len(CITIES) - 1), _spelling,
                       _mostly("admitted", *(p for p in sorted(PATHS) if p != "admitted")))

ACTIONS = _weighted(
    (12, _lifecycle),
    # every city of a country takes the path: four German admissions in one year meet the quota
    (2, st.tuples(st.just("cohort"), st.sampled_from(["DE", "MA"]), _spelling,
                  _mostly("admitted", "retracted", "rejected"))),
    (4, st.tuples(st.just("advance"), _mostly(1, 0, 10, 30, 90, 400), _hour)),
    # the injected clock set back, before the last act (1 hour to 400 days)
    (2, st.tuples(st.just("rewind"), st.sampled_from([1, 24, 240, 24 * 400]))),
    # a membership from the network's records: admitted days ago, ended some days later (or not)
    (3, st.tuples(st.just("import_history"), st.integers(0, len(CITIES) - 1),
                  st.sampled_from([0, 1, 40, 400, 1500, 3000]),
                  st.sampled_from([None, 0, 30, 300, 1000]))),
    (2, st.tuples(st.just("extend_intake"), _mostly(0, -1), st.integers(-5, 320), _reason)),
    (2, st.tuples(st.just("submit"), st.integers(0, len(CITIES) - 1), _spelling)),
    (2, st.tuples(st.just("endorse"), _application)),
    (2, st.tuples(st.just("decline"), _application, _reason)),
    (2, st.tuples(st.just("withdraw"), _application, _reason)),
    (2, st.tuples(st.just("admit"), _application, _jury)),
    (2, st.tuples(st.just("reject"), _application, _reason, _jury)),
    (2, st.tuples(st.just("retract"), _application, _reason)),
    (4, st.tuples(st.just("report"), _city, _mostly(True, False))),
    (2, st.tuples(st.just("end_membership"), _city,
                  _mostly("not_reporting", "withdrawn_by_city", "other", "bored"))),
    # the live runner catches up, on some projections
    (4, st.tuples(st.just("catch_up"), _projections)),
    # a rebuild (slow: new tables); True: a live runner catches up while it folds the log
    (1, st.tuples(st.just("rebuild"), _projections, st.booleans())),
)

# An intake round: open the next intake (or a wrong one), go to its window (or near it), act.
ROUND = st.tuples(
    st.tuples(st.just("open_intake"), _mostly(0, -1, 1), _mostly("default", *WINDOWS)),
    st.tuples(st.just("to_window"), st.integers(-3, 70), _hour),
    st.lists(ACTIONS, min_size=4, max_size=20),
).map(lambda r: [r[0], r[1], *r[2]])
RUNS = st.lists(ROUND, min_size=2, max_size=7).map(lambda rounds: [s for r in rounds for s in r])


@dataclass
class Run:
    """One example: the registry on a fresh store, driven through its use cases."""

    settings: Settings
    registry: Registry
    store: ReadModelStore
    clock: SettableClock
    batch_size: int
    applications: list[UUID] = field(default_factory=list)
    cities: set[UUID] = field(default_factory=set)
    # The head after each command that wrote: what a known-at moment can see (whole commands).
    positions: list[int] = field(default_factory=list)

    @property
    def today(self) -> date:
        return local_date(self.clock.at, TIMEZONE)

    def head(self) -> int:
        return self.registry.recorder.max_notification_id() or 0

    def do(self, step: Step) -> None:
        kind, *args = step
        if kind in ("advance", "rewind", "to_window", "catch_up", "rebuild", "lifecycle",
                    "cohort"):
            getattr(self, kind)(*args)
            return
        before = self.head()
        try:
            getattr(self, kind)(*args)
        except GnlcError as refusal:
            event(f"{kind} refused: {refusal.code}")
            assert self.head() == before, f"the refused command {step} wrote events"
        else:
            event(f"{kind} done")
            if self.head() != before:
                self.positions.append(self.head())

    def lifecycle(self, city: int, spelling: str, outcome: str) -> None:
        """Submit, then take the new application towards `outcome`, one command at a time (any
        of them may be refused: the window closes, the quota is used up, ...)."""
        submitted = len(self.applications)
        self.do(("submit", city, spelling))
        if len(self.applications) > submitted:
            for step in PATHS[outcome]:
                self.do(step)

    def cohort(self, country: str, spelling: str, outcome: str) -> None:
        for index, (_, city_country) in enumerate(CITIES):
            if city_country == country:
                self.lifecycle(index, spelling, outcome)

    # --- the business clock: only forward, up to the end of 2025 ------------------------------

    def advance(self, days: int, hour: int) -> None:
        self._set(self.today + timedelta(days=days), hour)

    def to_window(self, offset: int, hour: int) -> None:
        """To `offset` days after the opening of the next intake window not yet closed, or after
        the next 1 March when there is none (so a few days before or after a window, too)."""
        opens = [i.opens for i in self.registry.intakes(SECRETARIAT) if i.closes >= self.today]
        day = min(opens, default=date(self.today.year + (self.today.month >= 3), 3, 1))
        self._set(day + timedelta(days=offset), hour)

    def rewind(self, hours: int) -> None:
        """Set the clock back (as `--now` can): acts before an aggregate's last act are refused."""
        self.clock.at -= timedelta(hours=hours)
        event("the clock set back")

    def _set(self, day: date, hour: int) -> None:
        moment = datetime.combine(min(day, LAST_DAY), time(hour, 30), BERLIN)
        self.clock.at = max(self.clock.at, moment)

    # --- the read side ------------------------------------------------------------------------

    def catch_up(self, names: Iterable[str] = tuple(PROJECTIONS)) -> None:
        runner = build_runner(self.settings, self.registry, self.store, names, self.batch_size)
        try:
            taken = set(runner.acquire())
            deadline = monotonic() + 5
            while taken != set(names) and monotonic() < deadline:
                # On PostgreSQL a released lock may still be held for a moment: release() closes
                # the lock's connection, and the server frees it when that session has ended.
                sleep(0.01)
                taken |= set(runner.acquire())
            assert taken == set(names), f"no other runner works here, yet {names} not all taken"
            runner.catch_up()
        finally:
            runner.release()

    def rebuild(self, names: Iterable[str] = tuple(PROJECTIONS), racing: bool = False) -> None:
        """Rebuild from zero; `racing`: the live runner catches up after the rebuild's first batch
        (as another process would), so the rebuild must catch up to it before it swaps."""
        raced = []

        def progress(position: int, target: int) -> None:
            if racing and not raced:
                raced.append(position)
                self.catch_up()

        runner = build_runner(self.settings, self.registry, self.store, batch_size=self.batch_size)
        runner.rebuild(list(names), progress)

    # --- the use cases ------------------------------------------------------------------------

    def open_intake(self, year_offset: int, window: str) -> None:
        """Open the intake after the latest one (the clock's year for the first), or another."""
        year = self._latest_intake_year(default=self.today.year - 1) + 1 + year_offset
        self.registry.open_intake(SECRETARIAT, year, *WINDOWS[window](year))

    def extend_intake(self, year_offset: int, days: int, reason: str) -> None:
        year = self._latest_intake_year(default=self.today.year) + year_offset
        closes = next((i.closes for i in self.registry.intakes(SECRETARIAT) if i.year == year),
                      date(year, 4, 30))
        self.registry.extend_intake(SECRETARIAT, year, closes + timedelta(days=days), reason)

    def submit(self, index: int, spelling: str) -> None:
        name, country = CITIES[index]
        if spelling == "respelled":  # the same city: case, accents and the country's case differ
            name, country = normalise_name(name).upper(), country.lower()
        form = application_form(name, country, pledge=spelling != "without_pledge")
        submission = self.registry.submit_application(CITY, form)
        self.applications.append(submission.application_id)
        self.cities.add(submission.city_id)

    def endorse(self, pick: int) -> None:
        self.registry.endorse(COMMISSION, self._application(pick))

    def decline(self, pick: int, reason: str) -> None:
        self.registry.decline(COMMISSION, self._application(pick), reason)

    def withdraw(self, pick: int, reason: str) -> None:
        self.registry.withdraw(CITY, self._application(pick), reason)

    def admit(self, pick: int, jury: str | None) -> None:
        self.registry.admit(SECRETARIAT, self._application(pick), jury=jury)

    def reject(self, pick: int, reason: str, jury: str | None) -> None:
        self.registry.reject(SECRETARIAT, self._application(pick), reason, jury)

    def retract(self, pick: int, reason: str) -> None:
        self.registry.retract(SECRETARIAT, self._application(pick), reason)

    def report(self, pick: int, valid: bool) -> None:
        report = progress_report() if valid else progress_report(covering_to="2019-01-01")
        self.registry.submit_report(CITY, self._city(pick), report)

    def end_membership(self, pick: int, reason: str) -> None:
        self.registry.end_membership(SECRETARIAT, self._city(pick), reason)

    def import_history(self, index: int, days_ago: int, lasted: int | None) -> None:
        """Import a membership of the city admitted `days_ago`, ended `lasted` days later (maybe
        after today: invalid input) or still running: before, among or after the live acts."""
        name, country = CITIES[index]
        admitted = self.today - timedelta(days=days_ago)
        values: dict[str, Any] = {"city": name, "country": country,
                                  "year_joined": admitted.year, "admitted_on": admitted}
        if lasted is not None:
            values |= {"left_on": admitted + timedelta(days=lasted),
                       "left_reason": "withdrawn_by_city"}
        cid = city_id(country, name)
        last_act = self._last_act(cid)
        if self.registry.import_membership(IMPORTER, parse(HistoryRow, values)):
            city = self.registry.city(SECRETARIAT, cid)
            self.cities.add(cid)
            self.applications.append(city.memberships[-1].application_id)
            if last_act is not None and last_act > city.memberships[-1].admitted_at:
                event("an import recorded before the city's last act")

    def _last_act(self, aggregate_id: UUID) -> datetime | None:
        try:
            aggregate = self.registry.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        assert isinstance(aggregate, AuditedAggregate)
        return aggregate.last_act_at

    def _latest_intake_year(self, default: int) -> int:
        return max((i.year for i in self.registry.intakes(SECRETARIAT)), default=default)

    def _application(self, pick: int) -> UUID:
        if pick < 0 or not self.applications:
            return UNKNOWN_ID
        return self.applications[-1 - pick % len(self.applications)]

    @staticmethod
    def _city(pick: int) -> UUID:
        if pick < 0:
            return UNKNOWN_ID
        name, country = CITIES[pick]
        return city_id(country, name)  # not registered until it applies: then not_found


# --- what the aggregates say, derived without the projections' code ----------------------------

def _current(city: City) -> Any:
    """The latest membership not retracted (a retracted admission is as if it never happened)."""
    periods = [m for m in city.memberships if not m.retracted]
    return periods[-1] if periods else None


def expected_member_statuses(cities: list[City]) -> dict[str, str]:
    statuses = {}
    for city in cities:
        current = _current(city)
        statuses[str(city.id)] = ("applicant" if current is None
                                  else "ended" if current.ended_at else "active")
    return statuses


def expected_members(cities: list[City], today: date) -> list[Row]:
    answer = []
    for city in cities:
        current = _current(city)
        if current is None:
            continue
        active = current.ended_at is None
        reported = [r for r in current.reports if r.submitted_on <= today]
        due = current.due_date(len(reported) + 1) if active else None
        overdue = max(0, (today - due).days) if due else None
        answer.append({
            "city_id": str(city.id), "name": city.name, "country": city.country,
            "status": "active" if active else "ended", "admitted_on": current.admitted_on,
            "intake_year": current.intake_year,
            "periods": sum(1 for m in city.memberships if not m.retracted),
            "reports_submitted": len(reported), "next_report_due": due,
            "days_overdue": overdue,
            "flagged_for_review": overdue is not None and overdue > REVIEW_AFTER_DAYS,
            "ended_on": current.ended_on,
        })
    return answer


def expected_deadlines(cities: list[City], today: date) -> list[Row]:
    answer = []
    for city in cities:
        for membership in city.memberships:
            if membership.retracted:
                continue
            for deadline in deadlines(membership.admitted_on,
                                      [r.submitted_on for r in membership.reports], today,
                                      membership.ended_on):
                answer.append({
                    "city_id": str(city.id), "name": city.name, "country": city.country,
                    "period": membership.period, "cycle": deadline.cycle, "due": deadline.due,
                    "submitted_on": deadline.submitted_on, "late": deadline.late,
                    "status": deadline.status, "days_overdue": deadline.days_overdue(today),
                })
    return answer


def expected_applications(applications: list[CityApplication]) -> list[Row]:
    steps = ("submitted", "endorsed", "declined", "withdrawn", "admitted", "rejected",
             "retracted")
    return [{
        "application_id": str(a.id), "city_id": str(a.city_id), "city": a.city,
        "country": a.country, "intake_year": a.intake_year, "status": str(a.status),
        **{f"{step}_on": local_date(a.steps[step], TIMEZONE) if step in a.steps else None
           for step in steps},
    } for a in applications]


QUOTA_STATUS = {"submitted": "pending", "endorsed": "pending", "declined": "closed",
                "withdrawn": "closed", "rejected": "closed", "admitted": "admitted",
                "retracted": "retracted"}


def expected_quota_applications(applications: list[CityApplication]) -> list[Row]:
    return [{"application_id": str(a.id), "country": a.country, "year": a.intake_year,
             "status": QUOTA_STATUS[str(a.status)]} for a in applications]


def expected_quotas(registry: Registry, applications: list[CityApplication]) -> list[Row]:
    rows = []
    for country, year in sorted({(a.country, a.intake_year) for a in applications}):
        try:
            ledger = registry.repository.get(ledger_id(country, year))
            assert isinstance(ledger, QuotaLedger)
            admitted, retracted = ledger.used, len(ledger.retracted)
        except AggregateNotFoundError:  # no admission yet: the ledger opens with the first
            admitted, retracted = 0, 0
        rows.append({
            "country": country, "year": year,
            # the limit in force on the last day of the intake year (None where there is none)
            "limit": regulations_on(date(year, 12, 31)).quota_per_country_per_year,
            "admitted": admitted, "retracted": retracted,
            "pending": sum(1 for a in applications if (a.country, a.intake_year) == (country, year)
                           and a.is_open),
        })
    return rows


def expected_quotas_at(applications: list[CityApplication]) -> list[Row]:
    """The quota rows from the applications alone (the ledgers take no as-of answer)."""
    rows = []
    for country, year in sorted({(a.country, a.intake_year) for a in applications}):
        mine = [a for a in applications if (a.country, a.intake_year) == (country, year)]
        rows.append({
            "country": country, "year": year,
            "limit": regulations_on(date(year, 12, 31)).quota_per_country_per_year,
            "admitted": sum(1 for a in mine if a.status == "admitted"),
            "retracted": sum(1 for a in mine if a.status == "retracted"),
            "pending": sum(1 for a in mine if a.is_open),
        })
    return rows


def business_order(events: list[Any]) -> list[Any]:
    """One aggregate's events in the order of their business time (its creation first; equal
    times as recorded): the order in which the acts took effect."""
    return sorted(events, key=lambda e: (e.originator_version != 1, e.effective_at,
                                         e.originator_version))


# --- comparing ---------------------------------------------------------------------------------

def assert_same_rows(actual: Iterable[Row], expected: Iterable[Row], key: Callable[[Row], Any],
                     what: str) -> None:
    """Equal as sets of rows, keyed; the message names what is missing, extra or different."""
    got = {key(r): r for r in actual}
    want = {key(r): r for r in expected}
    problems = [f"missing {k}: {want[k]}" for k in want.keys() - got.keys()]
    problems += [f"unexpected {k}: {got[k]}" for k in got.keys() - want.keys()]
    problems += [f"{k}:\n    got  {got[k]}\n    want {want[k]}"
                 for k in want.keys() & got.keys() if got[k] != want[k]]
    assert not problems, f"{what}:\n  " + "\n  ".join(sorted(problems)[:8])


def row_key(table: str) -> Callable[[Row], Any]:
    return lambda row: tuple(row[c] for c in KEYS[table])


def assert_every_event_counted_once(store: ReadModelStore, head: int) -> None:
    """The batches each projection committed in its current generation cover 1..head once."""
    for name, (_, generation) in store.positions().items():
        spans = [(first, last) for g, first, last in store.batches(name) if g == generation]
        covered = 0
        for first, last in spans:
            assert first == covered + 1, f"{name}: batches {spans} leave a gap or overlap"
            covered = last
        assert covered == head, f"{name}: batches {spans} end at {covered}, not at {head}"


def check_read_models(run: Run, rebuild_one_by_one: bool) -> None:
    run.catch_up()
    head = run.head()
    assert {n: p for n, (p, _) in run.store.positions().items()} == dict.fromkeys(PROJECTIONS, head)
    assert_every_event_counted_once(run.store, head)
    live = {table: run.store.rows(table) for table in TABLES}

    # The live rows equal the pure fold of the same events.
    folded = fold([r.event for r in run.registry.read_log(AUDITOR)], TIMEZONE)
    for table, name in TABLES.items():
        assert_same_rows(live[table], folded[name].rows(table), row_key(table),
                         f"{table}: live rows and the fold of the log")

    # The live rows answer what the aggregates say.
    cities = [run.registry.city(SECRETARIAT, i) for i in sorted(run.cities)]
    applications = [run.registry.application(SECRETARIAT, i) for i in run.applications]
    for table in ("members", "deadlines"):
        assert_same_rows(
            [{"city_id": r["city_id"], "status": r["status"]} for r in live[table]],
            [{"city_id": i, "status": s} for i, s in expected_member_statuses(cities).items()],
            row_key("members"), f"{table}: one row per registered city, with its status")
    for today in sorted({*TODAYS, run.today}):
        assert_same_rows(answers.members(live["members"], today, status="all"),
                         expected_members(cities, today), lambda r: r["city_id"],
                         f"members answer on {today}")
        assert_same_rows(answers.deadline_list(live["deadlines"], today),
                         expected_deadlines(cities, today),
                         lambda r: (r["city_id"], r["period"], r["cycle"]),
                         f"deadlines answer on {today}")
    assert_same_rows(live["applications"], expected_applications(applications),
                     row_key("applications"), "applications rows")
    assert_same_rows(live["quota_applications"], expected_quota_applications(applications),
                     row_key("quota_applications"), "quota_applications rows")
    quotas = expected_quotas(run.registry, applications)
    assert_same_rows(live["quotas"], quotas, row_key("quotas"), "quotas rows")
    assert_same_rows(
        answers.quotas(live["quotas"]),
        [{**q, "remaining": None if q["limit"] is None else q["limit"] - q["admitted"]}
         for q in quotas],
        row_key("quotas"), "quotas answer")

    # The live rows equal a rebuild from zero: of each projection alone, or of all in one pass.
    for names in [[n] for n in PROJECTIONS] if rebuild_one_by_one else [list(PROJECTIONS)]:
        run.rebuild(names)
    assert {n: p for n, (p, _) in run.store.positions().items()} == dict.fromkeys(PROJECTIONS, head)
    for table in TABLES:
        assert_same_rows(run.store.rows(table), live[table], row_key(table),
                         f"{table}: rebuilt rows and the live rows")

    # What the run reached (shown by pytest --hypothesis-show-statistics, with each command's
    # outcome): the coverage of the generated runs can be checked at a glance.
    event("events in the log: " + (">= 100" if head >= 100 else "< 100"))
    if any(len(c.memberships) > 1 for c in cities):
        event("a city with two periods")


def check_past_folds(run: Run) -> None:
    """The as-of and known-at folds, as the read side selects their events, at every command's
    end (known at) and every business day of the log and the day before it (as of, at the head
    and at two earlier positions): none raises, and each equals the aggregates replayed from the
    same events in business-time order (where the history import recorded a city's past after
    its later acts, the log order differs from that)."""
    recorded = list(run.registry.read_log(AUDITOR))
    streams: dict[UUID, list[Any]] = {}
    for r in recorded:
        streams.setdefault(r.event.originator_id, []).append(r)
    # The quota ledgers and the intake calendar feed no fold (the import may precede a ledger's
    # opening: it counts places, in no order).
    streams = {i: events for i, events in streams.items()
               if isinstance(events[0].event, City.Registered | CityApplication.Submitted
                             | CityApplication.Imported)}
    head = recorded[-1].position if recorded else 0
    positions = sorted({*run.positions, head})
    event_days = {local_date(r.event.effective_at, TIMEZONE) for r in recorded}
    days = sorted({d for day in event_days for d in (day - timedelta(days=1), day)})
    points: list[tuple[int, date | None]] = [(p, None) for p in positions]
    for position in {head, positions[len(positions) // 3], positions[2 * len(positions) // 3]}:
        points += [(position, day) for day in days]
    for position, day in points:
        def counts(r: Any, position: int = position, day: date | None = day) -> bool:
            return r.position <= position and (day is None
                                               or r.event.took_effect_by(day, TIMEZONE))

        folded = fold([r.event for r in recorded if counts(r)], TIMEZONE)
        cities: list[City] = []
        applications: list[CityApplication] = []
        for stream in streams.values():
            chosen = [r.event for r in stream if counts(r)]
            aggregate = replay_selection(business_order(chosen)) if chosen else None
            if isinstance(aggregate, City):
                cities.append(aggregate)
            elif isinstance(aggregate, CityApplication):
                applications.append(aggregate)
        today = day or run.today
        at = f"as of {day} known at position {position}"
        rows = {table: folded[name].rows(table) for table, name in TABLES.items()}
        assert_same_rows(
            [{"city_id": r["city_id"], "status": r["status"]} for r in rows["members"]],
            [{"city_id": i, "status": s} for i, s in expected_member_statuses(cities).items()],
            row_key("members"), f"members rows {at}")
        assert_same_rows(answers.members(rows["members"], today, status="all"),
                         expected_members(cities, today), lambda r: r["city_id"],
                         f"members answer {at}")
        assert_same_rows(answers.deadline_list(rows["deadlines"], today),
                         expected_deadlines(cities, today),
                         lambda r: (r["city_id"], r["period"], r["cycle"]),
                         f"deadlines answer {at}")
        assert_same_rows(rows["applications"], expected_applications(applications),
                         row_key("applications"), f"applications rows {at}")
        assert_same_rows(rows["quota_applications"], expected_quota_applications(applications),
                         row_key("quota_applications"), f"quota_applications rows {at}")
        assert_same_rows(rows["quotas"], expected_quotas_at(applications), row_key("quotas"),
                         f"quotas rows {at}")


# --- the stores --------------------------------------------------------------------------------

FreshStore = Callable[[], AbstractContextManager[Settings]]


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_store(request: pytest.FixtureRequest) -> FreshStore:
    """Settings on an empty store, one per example: a new SQLite file or a new PostgreSQL schema
    (PostgreSQL skips, or fails under --require-postgres, as the rest of the suite does)."""
    if request.param == "sqlite":
        @contextmanager
        def sqlite_store() -> Iterator[Settings]:
            with tempfile.TemporaryDirectory(prefix="gnlc-property-") as directory:
                yield Settings(database_url=f"sqlite:///{directory}/gnlc.sqlite")
        return sqlite_store

    postgres_url: str = request.getfixturevalue("postgres_url")

    @contextmanager
    def postgres_store() -> Iterator[Settings]:
        schema = f"p_{uuid.uuid4().hex[:12]}"
        try:
            yield Settings(database_url=f"{postgres_url}?schema={schema}")
        finally:
            with psycopg.connect(postgres_url, autocommit=True) as connection:
                connection.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return postgres_store


@contextmanager
def fresh_run(fresh_store: FreshStore, first_day: date, batch_size: int) -> Iterator[Run]:
    with fresh_store() as store_settings:
        clock = SettableClock(at=datetime.combine(first_day, time(10), BERLIN))
        registry = build_registry(store_settings, clock)
        store = build_read_models(store_settings)
        try:
            yield Run(store_settings, registry, store, clock, batch_size)
        finally:
            registry.close()
            store.engine.dispose()


PROPERTY = settings(
    max_examples=25, deadline=None, phases=[p for p in Phase if p is not Phase.explain],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(first_day=st.sampled_from(FIRST_DAYS), steps=RUNS, batch_size=st.sampled_from([3, 5000]),
       rebuild_one_by_one=_mostly(False, True))
# A rebuild of an empty log, then the first events.
@example(first_day=FIRST_DAYS[0], steps=[("rebuild", ("quotas",), False),
                                          ("open_intake", 0, "default")],
         batch_size=3, rebuild_one_by_one=True)
# A rebuild that a live runner overtakes: it must catch up to the runner, then swap.
@example(first_day=FIRST_DAYS[0], steps=[("open_intake", 0, "default"),
                                          ("submit", 0, "as_registered"),
                                          ("rebuild", ("quotas",), True)],
         batch_size=3, rebuild_one_by_one=False)
# Hamburg applies; its membership of 2012-2013 is imported after that (a running one of 2017 is
# refused: it overlaps the open application); it is admitted; a retraction dated before the
# admission is refused, a later one done.
@example(first_day=FIRST_DAYS[3], steps=[("open_intake", 0, "default"), ("to_window", 5, 9),
                                          ("submit", 0, "as_registered"),
                                          ("import_history", 0, 3000, 300),
                                          ("import_history", 0, 1500, None),
                                          ("endorse", 1), ("admit", 1, None), ("rewind", 240),
                                          ("retract", 1, "corrigendum"), ("advance", 10, 13),
                                          ("retract", 1, "corrigendum")],
         batch_size=3, rebuild_one_by_one=False)
def test_live_read_models_equal_a_rebuild_the_fold_of_the_log_and_what_the_aggregates_say(
    fresh_store: FreshStore, first_day: date, steps: list[Step], batch_size: int,
    rebuild_one_by_one: bool,
) -> None:
    with fresh_run(fresh_store, first_day, batch_size) as run:
        for step in steps:
            run.do(step)
        check_read_models(run, rebuild_one_by_one)
        check_past_folds(run)
