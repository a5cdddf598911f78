"""Who may report, and when: a city that is a member on the report's business date (a calendar
date in GNLC_TIMEZONE, the days of admission and of the end included), and only from 2018-10-01,
when the regulations introduced reporting."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.registry import Registry
from domain.errors import InvalidTransition, NotAMember
from tests.conftest import CITY, SECRETARIAT, SettableClock, admitted_city, progress_report
from tests.test_cli import Gnlc


def _member(registry: Registry, clock: SettableClock, year: int, admitted_at: str) -> UUID:
    """A city admitted at `admitted_at` (Berlin wall clock) in the intake of `year`."""
    clock.set(f"{year}-01-05 10:00")
    registry.open_intake(SECRETARIAT, year)
    clock.set(admitted_at)
    city: UUID = admitted_city(registry, "Hamburg").city_id
    return city


def _report(registry: Registry, clock: SettableClock, city: UUID, at: str) -> Any:
    clock.set(at)
    return registry.submit_report(CITY, city, progress_report())


def test_a_report_on_the_day_of_admission_counts_and_one_before_its_hour_runs_backwards(
        registry: Registry, clock: SettableClock) -> None:
    # Eligibility is by business date, but no act may precede the city's last act (item 5): a
    # report earlier that day than the admission (only possible with --now) is refused as
    # running backwards, naming both times, not as `not_a_member`.
    city = _member(registry, clock, 2019, "2019-03-15 15:00")
    with pytest.raises(InvalidTransition, match="never runs backwards"):
        _report(registry, clock, city, "2019-03-15 09:00")
    report = _report(registry, clock, city, "2019-03-15 23:30")
    assert (report.cycle, report.due, report.submitted_on, report.late) == (
        1, date(2021, 3, 15), date(2019, 3, 15), False)
    assert registry.city(SECRETARIAT, city).memberships[0].reports == [report]


def test_a_report_on_the_day_the_membership_ended_is_accepted_the_day_after_is_not(
        registry: Registry, clock: SettableClock) -> None:
    city = _member(registry, clock, 2019, "2019-03-15 12:00")
    clock.set("2021-12-01 10:00")
    registry.end_membership(SECRETARIAT, city, "not_reporting")
    report = _report(registry, clock, city, "2021-12-01 23:59")
    assert (report.cycle, report.due, report.late) == (1, date(2021, 3, 15), True)
    with pytest.raises(NotAMember) as refused:
        _report(registry, clock, city, "2021-12-02 00:00")
    assert "2021-12-02" in refused.value.message
    assert len(registry.city(SECRETARIAT, city).memberships[0].reports) == 1


def test_on_a_day_one_membership_ended_and_the_next_began_a_report_counts_for_the_one_in_force(
        registry: Registry, clock: SettableClock) -> None:
    city = _member(registry, clock, 2019, "2019-03-15 12:00")
    clock.set("2019-04-01 10:00")
    registry.end_membership(SECRETARIAT, city, "withdrawn_by_city")
    before = _report(registry, clock, city, "2019-04-01 12:00")
    clock.set("2019-04-01 14:00")
    admitted_city(registry, "Hamburg")
    after = _report(registry, clock, city, "2019-04-01 16:00")
    assert [len(m.reports) for m in registry.city(SECRETARIAT, city).memberships] == [1, 1]
    assert (before.due, after.due) == (date(2021, 3, 15), date(2021, 4, 1))


def test_a_report_dated_before_1_october_2018_is_refused_as_the_rules_then_had_no_reporting(
        registry: Registry, clock: SettableClock) -> None:
    city = _member(registry, clock, 2016, "2016-09-01 12:00")
    events = registry.count_events()
    with pytest.raises(InvalidTransition) as refused:
        _report(registry, clock, city, "2018-09-30 23:59")
    assert "2018-09-30" in refused.value.message
    assert "no reporting" in refused.value.message
    assert "2018-10-01" in refused.value.message
    assert registry.count_events() == events
    assert registry.city(SECRETARIAT, city).memberships[0].reports == []


def test_a_member_since_before_2018_reports_from_1_october_2018_in_the_secretariats_time_zone(
        registry: Registry, clock: SettableClock) -> None:
    city = _member(registry, clock, 2016, "2016-09-01 12:00")
    # 00:30 in Berlin on 1 October is still 30 September in UTC: the business date counts.
    report = _report(registry, clock, city, "2018-10-01 00:30")
    assert (report.cycle, report.due, report.submitted_on, report.late) == (
        1, date(2020, 10, 1), date(2018, 10, 1), False)


def test_the_command_line_refuses_a_report_before_2018_10_01_with_exit_3_and_stores_nothing(
        database_url: str, tmp_path: Path) -> None:
    gnlc = Gnlc(database_url, tmp_path)
    history = gnlc.file("city,country,year_joined,admitted_on\nSuwon,KR,2016,2016-09-01\n",
                        "history.csv")
    assert gnlc.ok("import", "history", history, now="2018-09-30T10:00:00+02:00")[
        "imported"] == 1
    city = gnlc.ok("city-id", "KR", "Suwon")["city_id"]
    report = gnlc.file(progress_report(), "report.json")
    events = gnlc.event_count()
    result = gnlc("report", city, report, now="2018-09-30T23:00:00+02:00")
    assert result.exit_code == 3, result.stdout
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "invalid_transition"
    assert "no reporting" in error["message"]
    assert gnlc.event_count() == events
    assert gnlc.ok("report", city, report, now="2018-10-01T09:00:00+02:00") == {
        "city_id": city, "cycle": 1, "due": "2020-10-01", "late": False}
