"""Intakes: windows in Europe/Berlin (both bounds inclusive), one open at a time, extensions."""

from datetime import date

import pytest

from application.registry import Registry
from domain.errors import InvalidInput, InvalidTransition, NotFound, WindowClosed
from domain.intakes import CALENDAR_ID, IntakeCalendar
from tests.conftest import CITY, SECRETARIAT, SettableClock, application_form


def test_an_intake_window_defaults_to_1_march_to_30_april(registry: Registry) -> None:
    intake = registry.open_intake(SECRETARIAT, 2019)
    assert (intake.opens, intake.closes) == (date(2019, 3, 1), date(2019, 4, 30))
    assert intake.regulation_version == "2018"


def test_an_intake_under_the_pre_2018_regulations_spans_the_whole_year(registry: Registry):
    intake = registry.open_intake(SECRETARIAT, 2016)
    assert (intake.opens, intake.closes) == (date(2016, 1, 1), date(2016, 12, 31))
    assert intake.regulation_version == "pre-2018"


def test_the_window_opens_at_the_first_minute_of_1_march_in_berlin(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-02-28T23:59:00+01:00")
    with pytest.raises(WindowClosed):
        registry.submit_application(CITY, application_form())
    clock.set("2019-03-01T00:00:00+01:00")  # 2019-02-28 23:00 UTC: already March in Berlin
    assert registry.submit_application(CITY, application_form()).application_id


def test_the_window_closes_after_the_last_minute_of_30_april_in_berlin(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-04-30T23:59:00+02:00")
    assert registry.submit_application(CITY, application_form("Hamburg"))
    clock.set("2019-05-01T00:00:00+02:00")  # still 30 April in UTC, but May in Berlin
    with pytest.raises(WindowClosed):
        registry.submit_application(CITY, application_form("Bremen"))


def test_a_submission_without_any_intake_is_refused_as_window_closed(registry: Registry) -> None:
    with pytest.raises(WindowClosed):
        registry.submit_application(CITY, application_form())


def test_an_extension_records_its_reason_and_admits_later_submissions(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2020)
    clock.set("2020-04-29 10:00")
    registry.extend_intake(SECRETARIAT, 2020, date(2020, 6, 30), "COVID-19")
    clock.set("2020-06-30 23:30")
    assert registry.submit_application(CITY, application_form())
    calendar = registry.repository.get(CALENDAR_ID)
    assert isinstance(calendar, IntakeCalendar)
    extended = [e for e in registry.repository.event_store.get(CALENDAR_ID)
                if isinstance(e, IntakeCalendar.IntakeExtended)]
    assert [(e.previous_closes, e.closes, e.reason) for e in extended] == [
        (date(2020, 4, 30), date(2020, 6, 30), "COVID-19")]


def test_an_application_belongs_to_the_intake_whose_window_contains_its_submission(
    registry: Registry, clock: SettableClock
) -> None:
    # The 2021 call ran 1 September to 1 November and was extended to 28 February 2022.
    registry.open_intake(SECRETARIAT, 2021, date(2021, 9, 1), date(2021, 11, 1))
    registry.extend_intake(SECRETARIAT, 2021, date(2022, 2, 28), "more time for applicants")
    clock.set("2022-01-20 09:00")
    submission = registry.submit_application(CITY, application_form())
    assert registry.application(SECRETARIAT, submission.application_id).intake_year == 2021


def test_opening_an_intake_that_exists_is_an_invalid_transition(registry: Registry) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    with pytest.raises(InvalidTransition):
        registry.open_intake(SECRETARIAT, 2019)


def test_opening_an_intake_that_overlaps_another_is_an_invalid_transition(registry: Registry):
    registry.open_intake(SECRETARIAT, 2021, date(2021, 9, 1), date(2022, 2, 28))
    with pytest.raises(InvalidTransition):
        registry.open_intake(SECRETARIAT, 2022, date(2022, 2, 1), date(2022, 4, 30))
    assert registry.open_intake(SECRETARIAT, 2022, date(2022, 3, 1), date(2022, 4, 30))


def test_extending_into_another_intake_is_an_invalid_transition(registry: Registry) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    registry.open_intake(SECRETARIAT, 2020)
    with pytest.raises(InvalidTransition):
        registry.extend_intake(SECRETARIAT, 2019, date(2020, 3, 1), "too long")


def test_extending_an_intake_that_does_not_exist_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFound):
        registry.extend_intake(SECRETARIAT, 2019, date(2019, 6, 30), "late")
    registry.open_intake(SECRETARIAT, 2020)
    with pytest.raises(NotFound):
        registry.extend_intake(SECRETARIAT, 2019, date(2019, 6, 30), "late")


def test_extending_to_a_date_not_after_the_current_close_is_invalid_input(registry: Registry):
    registry.open_intake(SECRETARIAT, 2019)
    with pytest.raises(InvalidInput) as refused:
        registry.extend_intake(SECRETARIAT, 2019, date(2019, 4, 30), "no change")
    assert refused.value.field == "closes"


def test_an_extension_without_a_reason_is_invalid_input(registry: Registry) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    with pytest.raises(InvalidInput) as refused:
        registry.extend_intake(SECRETARIAT, 2019, date(2019, 6, 30), "  ")
    assert refused.value.field == "reason"
