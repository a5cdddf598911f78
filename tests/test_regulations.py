"""The 2018 regulations, versioned by effective date (pure domain, no store)."""

from datetime import date

from domain.calendar import add_years
from domain.regulations import regulations_on


def test_regulations_before_1_october_2018_set_no_quota_no_window_and_no_reporting() -> None:
    rules = regulations_on(date(2018, 9, 30))
    assert rules.version == "pre-2018"
    assert rules.quota_per_country_per_year is None
    assert rules.window is None
    assert rules.report_every_years is None


def test_regulations_from_1_october_2018_set_three_places_a_spring_window_and_biennial_reports():
    rules = regulations_on(date(2018, 10, 1))
    assert rules.version == "2018"
    assert rules.quota_per_country_per_year == 3
    assert rules.default_window(2019) == (date(2019, 3, 1), date(2019, 4, 30))
    assert rules.report_every_years == 2


def test_regulations_without_a_window_give_an_intake_the_whole_year() -> None:
    assert regulations_on(date(2016, 1, 1)).default_window(2016) == (
        date(2016, 1, 1), date(2016, 12, 31))


def test_29_february_moved_by_whole_years_falls_on_28_february_in_a_common_year() -> None:
    assert add_years(date(2020, 2, 29), 2) == date(2022, 2, 28)
    assert add_years(date(2020, 2, 29), 4) == date(2024, 2, 29)
