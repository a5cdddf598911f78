"""A city is identified by its country and its normalised name."""

from domain.cities import city_id, normalise_name


def test_case_accents_and_spacing_do_not_change_a_city_id() -> None:
    assert city_id("DE", "Köln") == city_id("de", "  KOLN ")
    assert normalise_name("  São   Paulo ") == "sao paulo"


def test_the_same_name_in_two_countries_is_two_cities() -> None:
    assert city_id("US", "Cork") != city_id("IE", "Cork")
