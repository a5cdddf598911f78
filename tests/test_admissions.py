"""Applications from submission to decision: endorsement, the window, the quota, retraction."""

from datetime import date

import pytest

from application.registry import Registry
from domain.applications import CityApplication, Status
from domain.cities import City
from domain.errors import (
    AlreadyMember,
    DuplicateApplication,
    InvalidInput,
    InvalidTransition,
    NotEndorsed,
    NotFound,
    QuotaExhausted,
    WindowClosed,
)
from domain.quotas import QuotaLedger, ledger_id
from tests.conftest import (
    CITY,
    COMMISSION,
    SECRETARIAT,
    SettableClock,
    admitted_city,
    application_form,
    endorsed_application,
)


@pytest.fixture
def intake_2019(registry: Registry, clock: SettableClock) -> Registry:
    clock.set("2019-01-10 09:00")
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    return registry


def test_the_fourth_admission_of_a_country_in_one_intake_year_is_refused_quota_exhausted(
    intake_2019: Registry,
) -> None:
    registry = intake_2019
    for name in ("Hamburg", "Bremen", "Munich"):
        admitted_city(registry, name)
    fourth = endorsed_application(registry, "Cologne")
    with pytest.raises(QuotaExhausted):
        registry.admit(SECRETARIAT, fourth.application_id)
    assert registry.application(SECRETARIAT, fourth.application_id).status == Status.ENDORSED


def test_the_quota_counts_each_country_separately(intake_2019: Registry) -> None:
    registry = intake_2019
    for name in ("Hamburg", "Bremen", "Munich"):
        admitted_city(registry, name)
    admission = registry.admit(SECRETARIAT, endorsed_application(registry, "Lyon", "FR")
                               .application_id)
    assert (admission.country, admission.used, admission.limit) == ("FR", 1, 3)


def test_an_admission_records_the_regulation_version_quota_year_places_used_before_and_limit(
    intake_2019: Registry,
) -> None:
    registry = intake_2019
    admitted_city(registry, "Hamburg")
    second = admitted_city(registry, "Bremen")
    admitted = [e for e in registry.repository.event_store.get(second.application_id)
                if isinstance(e, CityApplication.Admitted)]
    assert [(e.regulation_version, e.quota_year, e.used_before, e.limit) for e in admitted] == [
        ("2018", 2019, 1, 3)]


def test_a_retraction_frees_the_quota_place(intake_2019: Registry, clock: SettableClock) -> None:
    registry = intake_2019
    first = admitted_city(registry, "Hamburg")
    admitted_city(registry, "Bremen")
    admitted_city(registry, "Munich")
    fourth = endorsed_application(registry, "Cologne")
    registry.retract(SECRETARIAT, first.application_id, "corrigendum")
    admission = registry.admit(SECRETARIAT, fourth.application_id)
    assert (admission.used, admission.limit) == (3, 3)
    ledger = registry.repository.get(ledger_id("DE", 2019))
    assert isinstance(ledger, QuotaLedger)
    assert (ledger.used, len(ledger.retracted)) == (3, 1)


def test_ending_a_membership_does_not_give_the_place_back(intake_2019: Registry) -> None:
    registry = intake_2019
    first = admitted_city(registry, "Hamburg")
    admitted_city(registry, "Bremen")
    admitted_city(registry, "Munich")
    registry.end_membership(SECRETARIAT, first.city_id, "withdrawn_by_city")
    with pytest.raises(QuotaExhausted):
        registry.admit(SECRETARIAT, endorsed_application(registry, "Cologne").application_id)


def test_a_retraction_is_allowed_after_the_window_closed(
    intake_2019: Registry, clock: SettableClock
) -> None:
    registry = intake_2019
    first = admitted_city(registry, "Hamburg")
    clock.set("2019-12-01 10:00")
    registry.retract(SECRETARIAT, first.application_id, "corrigendum")
    assert registry.application(SECRETARIAT, first.application_id).status == Status.RETRACTED


def test_a_retracted_admission_is_as_if_it_had_not_happened_and_the_city_may_apply_again(
    intake_2019: Registry,
) -> None:
    registry = intake_2019
    first = admitted_city(registry, "Hamburg")
    registry.retract(SECRETARIAT, first.application_id, "corrigendum")
    city = registry.city(SECRETARIAT, first.city_id)
    assert city.active_membership is None
    again = registry.submit_application(CITY, application_form("Hamburg"))
    assert again.city_id == first.city_id


def test_a_retraction_after_the_membership_has_a_report_is_an_invalid_transition(
    intake_2019: Registry, clock: SettableClock
) -> None:
    from tests.conftest import progress_report

    registry = intake_2019
    first = admitted_city(registry, "Hamburg")
    clock.set("2020-06-01 10:00")
    registry.submit_report(CITY, first.city_id, progress_report())
    with pytest.raises(InvalidTransition):
        registry.retract(SECRETARIAT, first.application_id, "too late")


def test_an_application_not_endorsed_by_the_national_commission_cannot_be_decided(
    intake_2019: Registry,
) -> None:
    registry = intake_2019
    submission = registry.submit_application(CITY, application_form())
    with pytest.raises(NotEndorsed):
        registry.admit(SECRETARIAT, submission.application_id)
    with pytest.raises(NotEndorsed):
        registry.reject(SECRETARIAT, submission.application_id, "not endorsed")


def test_admitting_a_rejected_application_is_an_invalid_transition(intake_2019: Registry):
    registry = intake_2019
    submission = endorsed_application(registry, "Hamburg")
    registry.reject(SECRETARIAT, submission.application_id, "plan too vague", "not_recommended")
    with pytest.raises(InvalidTransition):
        registry.admit(SECRETARIAT, submission.application_id)


def test_a_declined_application_cannot_be_endorsed_and_frees_the_city(intake_2019: Registry):
    registry = intake_2019
    submission = registry.submit_application(CITY, application_form())
    registry.decline(COMMISSION, submission.application_id, "incomplete")
    with pytest.raises(InvalidTransition):
        registry.endorse(COMMISSION, submission.application_id)
    assert registry.city(SECRETARIAT, submission.city_id).open_application_id is None


def test_endorsing_twice_is_an_invalid_transition(intake_2019: Registry) -> None:
    registry = intake_2019
    submission = endorsed_application(registry, "Hamburg")
    with pytest.raises(InvalidTransition):
        registry.endorse(COMMISSION, submission.application_id)


def test_a_city_may_withdraw_an_open_application_and_apply_again(intake_2019: Registry):
    registry = intake_2019
    submission = endorsed_application(registry, "Hamburg")
    registry.withdraw(CITY, submission.application_id, "not ready")
    with pytest.raises(InvalidTransition):
        registry.withdraw(CITY, submission.application_id, "twice")
    assert registry.submit_application(CITY, application_form()).city_id == submission.city_id


def test_a_city_has_at_most_one_open_application(intake_2019: Registry) -> None:
    registry = intake_2019
    registry.submit_application(CITY, application_form("Hamburg"))
    with pytest.raises(DuplicateApplication):
        registry.submit_application(CITY, application_form(" HAMBURG "))


def test_a_member_city_cannot_apply_again(intake_2019: Registry) -> None:
    registry = intake_2019
    admitted_city(registry, "Hamburg")
    with pytest.raises(AlreadyMember):
        registry.submit_application(CITY, application_form("Hamburg"))


def test_a_city_whose_membership_ended_may_apply_again_and_starts_a_new_period(
    registry: Registry, clock: SettableClock
) -> None:
    # Muharraq (Bahrain) is listed as a new member in 2019 and again in 2024.
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    first = admitted_city(registry, "Muharraq", "BH")
    clock.set("2022-01-10 12:00")
    registry.end_membership(SECRETARIAT, first.city_id, "not_reporting", "no report since 2019")
    registry.open_intake(SECRETARIAT, 2024)
    clock.set("2024-03-15 12:00")
    second = admitted_city(registry, "Muharraq", "BH")
    city = registry.city(SECRETARIAT, second.city_id)
    assert second.city_id == first.city_id
    assert [(m.period, m.status, m.intake_year) for m in city.memberships] == [
        (1, "ended", 2019), (2, "active", 2024)]


def test_decisions_after_the_window_closed_are_refused_until_the_intake_is_extended(
    intake_2019: Registry, clock: SettableClock
) -> None:
    registry = intake_2019
    submission = endorsed_application(registry, "Hamburg")
    clock.set("2019-09-01 10:00")
    with pytest.raises(WindowClosed):
        registry.admit(SECRETARIAT, submission.application_id)
    with pytest.raises(WindowClosed):
        registry.reject(SECRETARIAT, submission.application_id, "late")
    registry.extend_intake(SECRETARIAT, 2019, date(2019, 9, 30), "jury met late")
    assert registry.admit(SECRETARIAT, submission.application_id).used == 1


def test_pre_2018_admissions_have_no_quota(registry: Registry, clock: SettableClock) -> None:
    # The Republic of Korea had 21 cities admitted in 2016.
    registry.open_intake(SECRETARIAT, 2016)
    clock.set("2016-08-01 10:00")
    admissions = [admitted_city(registry, f"City {n}", "KR") for n in range(5)]
    last = registry.application(SECRETARIAT, admissions[-1].application_id)
    assert last.quota == {"country": "KR", "year": 2016, "used": 5, "limit": None,
                          "regulation_version": "pre-2018"}


def test_an_admission_from_1_october_2018_counts_the_earlier_admissions_of_its_intake_year(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2018)  # pre-2018 rules: the whole year
    clock.set("2018-09-30 12:00")
    for name in ("Suwon", "Busan", "Incheon", "Gwangmyeong"):
        admitted_city(registry, name, "KR")
    late = endorsed_application(registry, "Daegu", "KR")
    clock.set("2018-10-01 00:01")
    with pytest.raises(QuotaExhausted):
        registry.admit(SECRETARIAT, late.application_id)


def test_the_quota_year_is_the_intake_year_even_when_decided_in_the_next_year(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2021, date(2021, 9, 1), date(2022, 2, 28))
    clock.set("2021-10-01 12:00")
    submission = endorsed_application(registry, "Hamburg")
    clock.set("2022-02-28 23:30")
    assert registry.admit(SECRETARIAT, submission.application_id).quota_year == 2021


def test_an_unknown_application_id_is_not_found(intake_2019: Registry) -> None:
    from uuid import uuid4

    with pytest.raises(NotFound):
        intake_2019.admit(SECRETARIAT, uuid4())


def test_a_city_id_is_not_an_application_id(intake_2019: Registry) -> None:
    submission = intake_2019.submit_application(CITY, application_form())
    with pytest.raises(NotFound):
        intake_2019.endorse(COMMISSION, submission.city_id)


def test_a_jury_recommendation_outside_the_two_values_is_invalid_input(intake_2019: Registry):
    submission = endorsed_application(intake_2019, "Hamburg")
    with pytest.raises(InvalidInput) as refused:
        intake_2019.admit(SECRETARIAT, submission.application_id, jury="maybe")
    assert refused.value.field == "jury"


def test_a_decline_without_a_reason_is_invalid_input(intake_2019: Registry) -> None:
    submission = intake_2019.submit_application(CITY, application_form())
    with pytest.raises(InvalidInput):
        intake_2019.decline(COMMISSION, submission.application_id, "")


def test_the_city_and_the_ledger_are_saved_with_the_admission(intake_2019: Registry) -> None:
    registry = intake_2019
    submission = admitted_city(registry, "Hamburg")
    city = registry.city(SECRETARIAT, submission.city_id)
    assert isinstance(city, City)
    assert city.active_membership is not None
    assert city.active_membership.admitted_on == date(2019, 3, 15)
