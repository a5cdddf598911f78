"""A city is identified by its country and its normalised name; its status follows its periods."""

import pytest

from domain.cities import city_id, city_status, normalise_name


def test_case_accents_and_spacing_do_not_change_a_city_id() -> None:
    assert city_id("DE", "Köln") == city_id("de", "  KOLN ")
    assert normalise_name("  São   Paulo ") == "sao paulo"


def test_the_same_name_in_two_countries_is_two_cities() -> None:
    assert city_id("US", "Cork") != city_id("IE", "Cork")


@pytest.mark.parametrize(("periods", "status"), [
    ([], "applicant"),
    (["active"], "active"),
    (["ended"], "ended"),
    (["retracted"], "applicant"),
    (["ended", "active"], "active"),
    (["ended", "retracted"], "ended"),
    (["retracted", "active"], "active"),
])
def test_a_citys_status_is_that_of_its_latest_period_not_retracted(
        periods: list[str], status: str) -> None:
    assert city_status(periods) == status
