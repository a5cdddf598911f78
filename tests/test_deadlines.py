"""The deadline rules: cycles every two years, 29 February, early and late reports, the review
flag, and readmitted cities starting a new cycle count (pure rules, then through the read side)."""

from __future__ import annotations

from datetime import date, timedelta

from application.registry import Registry
from domain.reporting import REVIEW_AFTER_DAYS, deadlines, next_report_due, report_due
from infrastructure.bootstrap import build_read_side
from infrastructure.settings import Settings
from projections import answers
from tests.conftest import (
    CITY,
    SECRETARIAT,
    SettableClock,
    admitted_city,
    progress_report,
)

ADMITTED = date(2019, 3, 15)


def test_cycles_fall_due_every_two_years_from_the_admission() -> None:
    assert [report_due(ADMITTED, k) for k in (1, 2, 3)] == [
        date(2021, 3, 15), date(2023, 3, 15), date(2025, 3, 15)]


def test_cycles_of_an_admission_on_29_february_fall_due_on_28_february_in_common_years() -> None:
    assert [report_due(date(2020, 2, 29), k) for k in (1, 2)] == [
        date(2022, 2, 28), date(2024, 2, 29)]


def test_cycles_of_members_admitted_before_the_regulations_count_from_1_october_2018() -> None:
    assert report_due(date(2016, 5, 1), 1) == date(2020, 10, 1)


def test_every_cycle_due_up_to_the_day_asked_about_is_listed_plus_the_next_one() -> None:
    listed = deadlines(ADMITTED, [], date(2023, 6, 1))
    assert [(d.cycle, d.status) for d in listed] == [
        (1, "overdue"), (2, "overdue"), (3, "upcoming")]


def test_a_cycle_is_overdue_only_after_its_due_date() -> None:
    on_the_day = deadlines(ADMITTED, [], date(2021, 3, 15))
    assert [(d.cycle, d.status) for d in on_the_day] == [(1, "upcoming"), (2, "upcoming")]
    day_after = deadlines(ADMITTED, [], date(2021, 3, 16))
    assert [(d.cycle, d.status, d.days_overdue(date(2021, 3, 16))) for d in day_after] == [
        (1, "overdue", 1), (2, "upcoming", 0)]


def test_early_reports_count_for_the_earliest_open_cycles() -> None:
    listed = deadlines(ADMITTED, [date(2019, 12, 1), date(2020, 1, 1)], date(2020, 6, 1))
    assert [(d.cycle, d.status, d.late) for d in listed] == [
        (1, "submitted", False), (2, "submitted", False), (3, "upcoming", None)]


def test_a_late_report_is_listed_as_submitted_and_late() -> None:
    listed = deadlines(ADMITTED, [date(2021, 9, 1)], date(2021, 10, 1))
    assert [(d.cycle, d.status, d.late) for d in listed] == [
        (1, "submitted", True), (2, "upcoming", None)]


def test_a_report_dated_after_the_day_asked_about_does_not_count_yet() -> None:
    listed = deadlines(ADMITTED, [date(2021, 9, 1)], date(2021, 6, 1))
    assert [(d.cycle, d.status) for d in listed] == [(1, "overdue"), (2, "upcoming")]
    assert next_report_due(ADMITTED, [date(2021, 9, 1)], date(2021, 6, 1)) == date(2021, 3, 15)


def test_an_ended_membership_lists_the_cycles_due_up_to_its_end_and_those_reported() -> None:
    listed = deadlines(ADMITTED, [date(2021, 1, 1)], date(2026, 1, 1), ended_on=date(2024, 1, 1))
    assert [(d.cycle, d.status) for d in listed] == [(1, "submitted"), (2, "overdue")]



def _member(settings: Settings, registry: Registry, today: date) -> dict[str, object]:
    rows = build_read_side(settings, registry).rows("members", reader=SECRETARIAT)
    (member,) = answers.members(rows, today, status="all")
    return member


def test_a_member_more_than_180_days_overdue_is_flagged_for_review(
    settings: Settings, registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    admitted_city(registry, "Hamburg")
    due = date(2021, 3, 15)
    on_the_limit = _member(settings, registry, due + timedelta(days=REVIEW_AFTER_DAYS))
    assert (on_the_limit["days_overdue"], on_the_limit["flagged_for_review"]) == (180, False)
    past = _member(settings, registry, due + timedelta(days=REVIEW_AFTER_DAYS + 1))
    assert (past["days_overdue"], past["flagged_for_review"]) == (181, True)
    assert past["next_report_due"] == due


def test_a_readmitted_city_starts_a_new_cycle_count(
    settings: Settings, registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    first = admitted_city(registry, "Muharraq", "BH")
    clock.set("2021-02-01 12:00")
    registry.submit_report(CITY, first.city_id, progress_report())
    clock.set("2022-01-10 12:00")
    registry.end_membership(SECRETARIAT, first.city_id, "not_reporting")
    registry.open_intake(SECRETARIAT, 2024)
    clock.set("2024-03-20 12:00")
    admitted_city(registry, "Muharraq", "BH")
    member = _member(settings, registry, date(2024, 6, 1))
    assert (member["periods"], member["reports_submitted"], member["next_report_due"]) == (
        2, 0, date(2026, 3, 20))
    rows = build_read_side(settings, registry).rows("deadlines", reader=SECRETARIAT)
    listed = answers.deadline_list(rows, date(2024, 6, 1))
    assert [(d["period"], d["cycle"], d["status"]) for d in listed] == [
        (1, 1, "submitted"), (2, 1, "upcoming")]
