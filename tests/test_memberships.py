"""Memberships: biennial progress reports, due dates, late reports, and the end of membership."""

from datetime import date
from uuid import uuid4

import pytest

from application.registry import Registry
from domain.errors import InvalidInput, NotAMember, NotFound
from tests.conftest import (
    CITY,
    SECRETARIAT,
    SettableClock,
    admitted_city,
    application_form,
    progress_report,
)


def _member_admitted_on(registry: Registry, clock: SettableClock, day: str, year: int,
                        name: str = "Hamburg") -> object:
    clock.set(f"{year}-01-05 10:00")
    opens = date(year, 1, 1) if year < 2018 else date(year, 2, 1)
    registry.open_intake(SECRETARIAT, year, opens, date(year, 4, 30) if year >= 2018 else None)
    clock.set(f"{day} 12:00")
    return admitted_city(registry, name).city_id


def test_the_first_report_is_due_two_years_after_admission(
    registry: Registry, clock: SettableClock
) -> None:
    city_id = _member_admitted_on(registry, clock, "2019-03-15", 2019)
    clock.set("2021-03-15 20:00")
    report = registry.submit_report(CITY, city_id, progress_report())
    assert (report.cycle, report.due, report.late) == (1, date(2021, 3, 15), False)


def test_an_admission_on_29_february_falls_due_on_28_february(
    registry: Registry, clock: SettableClock
) -> None:
    city_id = _member_admitted_on(registry, clock, "2020-02-29", 2020)
    clock.set("2022-03-01 09:00")
    first = registry.submit_report(CITY, city_id, progress_report())
    assert (first.cycle, first.due, first.late) == (1, date(2022, 2, 28), True)
    clock.set("2024-02-29 09:00")
    second = registry.submit_report(CITY, city_id, progress_report())
    assert (second.cycle, second.due, second.late) == (2, date(2024, 2, 29), False)


def test_members_admitted_before_the_2018_regulations_count_cycles_from_1_october_2018(
    registry: Registry, clock: SettableClock
) -> None:
    city_id = _member_admitted_on(registry, clock, "2016-09-01", 2016)
    clock.set("2020-10-01 23:00")
    report = registry.submit_report(CITY, city_id, progress_report())
    assert (report.cycle, report.due, report.late) == (1, date(2020, 10, 1), False)


def test_a_report_before_its_due_date_counts_for_the_earliest_cycle_not_yet_reported(
    registry: Registry, clock: SettableClock
) -> None:
    city_id = _member_admitted_on(registry, clock, "2019-03-15", 2019)
    clock.set("2019-12-01 10:00")
    first = registry.submit_report(CITY, city_id, progress_report())
    second = registry.submit_report(CITY, city_id, progress_report())
    assert [(r.cycle, r.due, r.late) for r in (first, second)] == [
        (1, date(2021, 3, 15), False), (2, date(2023, 3, 15), False)]


def test_a_report_after_its_due_date_is_late_but_accepted(
    registry: Registry, clock: SettableClock
) -> None:
    city_id = _member_admitted_on(registry, clock, "2019-03-15", 2019)
    clock.set("2021-03-16 00:00")
    report = registry.submit_report(CITY, city_id, progress_report())
    assert (report.cycle, report.late) == (1, True)
    assert len(registry.city(SECRETARIAT, city_id).memberships[0].reports) == 1


def test_a_report_from_a_known_city_that_is_not_a_member_is_refused(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    applicant = registry.submit_application(CITY, application_form())
    with pytest.raises(NotAMember):
        registry.submit_report(CITY, applicant.city_id, progress_report())


def test_a_report_from_an_unknown_city_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFound):
        registry.submit_report(CITY, uuid4(), progress_report())


def test_a_report_after_the_membership_ended_is_refused(
    registry: Registry, clock: SettableClock
) -> None:
    city_id = _member_admitted_on(registry, clock, "2019-03-15", 2019)
    clock.set("2021-12-01 10:00")
    registry.end_membership(SECRETARIAT, city_id, "not_reporting")
    clock.set("2021-12-02 10:00")
    with pytest.raises(NotAMember):
        registry.submit_report(CITY, city_id, progress_report())


def test_a_report_dated_before_the_admission_is_refused(
    registry: Registry, clock: SettableClock
) -> None:
    city_id = _member_admitted_on(registry, clock, "2019-03-15", 2019)
    clock.set("2019-03-14 10:00")
    with pytest.raises(NotAMember):
        registry.submit_report(CITY, city_id, progress_report())


def test_a_membership_ends_only_for_one_of_the_three_reasons(
    registry: Registry, clock: SettableClock
) -> None:
    city_id = _member_admitted_on(registry, clock, "2019-03-15", 2019)
    with pytest.raises(InvalidInput) as refused:
        registry.end_membership(SECRETARIAT, city_id, "bored")
    assert refused.value.field == "reason"
    for reason in ("not_reporting", "withdrawn_by_city", "other"):
        assert reason in refused.value.message
    ended = registry.end_membership(SECRETARIAT, city_id, "other", "merged with a neighbour")
    assert (ended.status, ended.end_reason) == ("ended", "other")


def test_ending_a_membership_that_is_not_active_is_refused_not_a_member(
    registry: Registry, clock: SettableClock
) -> None:
    city_id = _member_admitted_on(registry, clock, "2019-03-15", 2019)
    registry.end_membership(SECRETARIAT, city_id, "withdrawn_by_city")
    with pytest.raises(NotAMember):
        registry.end_membership(SECRETARIAT, city_id, "withdrawn_by_city")


def test_a_report_with_its_period_out_of_order_is_invalid_input(
    registry: Registry, clock: SettableClock
) -> None:
    city_id = _member_admitted_on(registry, clock, "2019-03-15", 2019)
    with pytest.raises(InvalidInput):
        registry.submit_report(CITY, city_id, progress_report(covering_to="2018-01-01"))
