"""Every event says who acted, in which role, when it took effect and when it was recorded."""

from datetime import UTC, datetime, timedelta

from application.clock import SystemClock
from application.registry import Registry
from domain.acts import AuditedAggregate
from infrastructure.bootstrap import build_registry
from infrastructure.settings import Settings
from tests.conftest import AUDITOR, SECRETARIAT, SettableClock, admitted_city, progress_report


def _all_events(registry: Registry) -> list[AuditedAggregate.Event]:
    return [recorded.event for recorded in registry.read_log(AUDITOR)]


def test_every_event_records_the_actor_role_business_time_and_recorded_time_in_utc(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    admitted_city(registry, "Hamburg")
    before = datetime.now(UTC)
    events = _all_events(registry)
    assert len(events) >= 8
    for event in events:
        assert event.actor["name"] and event.actor["role"] in {
            "secretariat", "national_commission", "city"}
        assert event.effective_at.utcoffset() == timedelta(0)
        assert event.timestamp.utcoffset() == timedelta(0)
        # recorded_at is the real clock, not the simulated business clock
        assert abs(event.timestamp - before) < timedelta(minutes=5)
        assert event.clock_overridden is True
    assert {e.actor["role"] for e in events} == {"secretariat", "national_commission", "city"}


def test_events_written_on_the_real_clock_say_the_clock_was_not_overridden(
    settings: Settings,
) -> None:
    registry = build_registry(settings, SystemClock())
    try:
        registry.open_intake(SECRETARIAT, datetime.now(UTC).year + 1)
        (event,) = _all_events(registry)[-1:]
        assert event.clock_overridden is False
        assert abs(event.effective_at - event.timestamp) < timedelta(seconds=5)
    finally:
        registry.close()


def test_a_replay_gives_the_same_state_whatever_the_time_zone_setting(
    settings: Settings, registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-04-30T23:30:00+02:00")  # 30 April in Berlin, 29 April in Tokyo... or UTC
    submission = admitted_city(registry, "Hamburg")
    clock.set("2021-05-01 10:00")
    registry.submit_report(SECRETARIAT, submission.city_id, progress_report())
    elsewhere = build_registry(settings.model_copy(update={"timezone": "Pacific/Auckland"}),
                               clock)
    try:
        here = registry.city(SECRETARIAT, submission.city_id)
        there = elsewhere.city(SECRETARIAT, submission.city_id)
        assert here.memberships == there.memberships
        assert there.memberships[0].admitted_on.isoformat() == "2019-04-30"
        assert registry.application(SECRETARIAT, submission.application_id).__dict__ == (
            elsewhere.application(SECRETARIAT, submission.application_id).__dict__)
    finally:
        elsewhere.close()


def test_a_city_history_lists_the_city_and_application_events_in_log_order(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    submission = admitted_city(registry, "Hamburg")
    admitted_city(registry, "Bremen")
    history = registry.history(SECRETARIAT, submission.city_id)
    names = [type(r.event).__qualname__ for r in history]
    assert names == [
        "City.Registered", "City.ApplicationLodged", "CityApplication.Submitted",
        "CityApplication.Endorsed", "CityApplication.Admitted", "City.MembershipStarted",
    ]
    positions = [r.position for r in history]
    assert positions == sorted(positions)
    assert {r.event.originator_id for r in history} == {
        submission.city_id, submission.application_id}


def test_every_decision_event_records_the_regulation_version_it_was_checked_against(
    registry: Registry, clock: SettableClock
) -> None:
    from domain.applications import CityApplication
    from domain.cities import City

    registry.open_intake(SECRETARIAT, 2018)
    clock.set("2018-09-30 12:00")
    early = admitted_city(registry, "Suwon", "KR")
    clock.set("2018-10-01 12:00")
    late = admitted_city(registry, "Busan", "KR")
    registry.end_membership(SECRETARIAT, early.city_id, "other")
    decisions = [r.event for r in registry.read_log(AUDITOR) if isinstance(r.event, (
        CityApplication.Submitted, CityApplication.StatusChanged, City.MembershipStarted,
        City.MembershipEnded))]
    versions = {(type(e).__qualname__, e.originator_id): e.regulation_version for e in decisions}
    assert versions[("CityApplication.Admitted", early.application_id)] == "pre-2018"
    assert versions[("CityApplication.Admitted", late.application_id)] == "2018"
    assert versions[("City.MembershipEnded", early.city_id)] == "2018"
    assert all(v in {"pre-2018", "2018"} for v in versions.values())
