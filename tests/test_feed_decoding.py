"""The feed's fast decoding (stored JSON straight to the public form) against the library's mapper.

`Feed` parses a stored event's state with orjson and turns the transcoder's tagged values into
their public form itself; `Feed(registry, fast=False)` decodes every event into a domain event (with
upcasting) and takes it apart with `plain()`, as the feed did before. On a varied log, on SQLite
and PostgreSQL, both must give exactly the same feed events; events the fast path does not expect
(stored in an older class version, odd JSON) must take the slow path.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, replace
from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

import infrastructure.feed.public_events as feed_module
from application.registry import Registry
from domain.acts import Actor, Role
from domain.applications import CityApplication
from domain.cities import City
from domain.forms import parse
from domain.history import HistoryRow
from domain.quotas import QuotaLedger
from infrastructure.feed.public_events import (
    FEED_TOPICS,
    Feed,
    FeedEvent,
    Filter,
    _datetime_text,
    _id_prefix,
    public_event_id,
)
from infrastructure.http.events import _json
from projections.public import BY_NAME, event_id
from tests.conftest import (
    CITY,
    COMMISSION,
    SECRETARIAT,
    SettableClock,
    admitted_city,
    application_form,
    progress_report,
)
from tests.synthetic import generate
from tests.test_event_contract import _store_report_in_its_v1_form

IMPORTER = Actor("history-import", Role.SECRETARIAT, source="import")


def _text(event: FeedEvent) -> str:
    return json.dumps(asdict(event), sort_keys=True, ensure_ascii=False, default=repr)


def _notifications(registry: Registry) -> list[Any]:
    return list(registry.recorder.select_notifications(1, 1_000_000, topics=FEED_TOPICS))


def _store_crafted(registry: Registry, name: str, change: Any) -> None:
    """A city's registration stored with its JSON state changed by `change(state)`."""
    city = City.register(registry._act(SECRETARIAT), "DE", name)
    (event,) = city.collect_events()
    stored = registry.mapper.to_stored_event(event)
    state = json.loads(stored.state)
    change(state)
    registry.recorder.insert_events(
        [replace(stored, state=json.dumps(state).encode())])  # \u escapes


def _tagged(kind: str, data: Any) -> dict[str, Any]:
    return {"_type_": kind, "_data_": data}


CRAFTED: dict[str, Any] = {
    # datetimes isoformat() would write differently: the public form is isoformat()'s
    "Zulu": lambda s: s["timestamp"].update(_data_="2021-06-01T08:00:00Z"),
    "Zero fraction": lambda s: s["timestamp"].update(_data_="2021-06-01T08:00:00.000000+00:00"),
    "Minus zero": lambda s: s["effective_at"].update(_data_="2021-06-01T10:00:00-00:00"),
    "Offset": lambda s: s["effective_at"].update(_data_="2021-06-01T10:00:00.5+05:30"),
    # tagged values nested in lists and dicts; an id in capitals
    "Nested": lambda s: s.update(extra={
        "on": _tagged("date_iso", "2021-06-01"),
        "ids": [_tagged("uuid_hex", uuid4().hex.upper()), _tagged("uuid_hex", uuid4().hex)],
        "at": [[_tagged("datetime_iso", "2021-06-01T10:00:00+02:00")]],
        "plain": {"n": 1, "x": 1.5, "t": True, "none": None, "s": "é ✓ \u2028 😀"}}),
    # what orjson reads otherwise than the standard library, or not at all
    "Huge integer": lambda s: s.update(extra={"n": 2**70, "m": -(2**64)}),
    "Huge float": lambda s: s.update(extra=1e300),
    "Not a number": lambda s: s.update(extra=float("nan")),
    "Lone surrogate": lambda s: s.update(extra="\ud800"),
    "Decimal": lambda s: s.update(extra=_tagged("decimal_str", "1.10")),
}
# Those the fast path must leave to the mapper.
SLOW = {"Huge integer", "Huge float", "Not a number", "Lone surrogate", "Decimal"}


@pytest.fixture
def varied_log(registry: Registry, clock: SettableClock) -> dict[str, Any]:
    """Synthetic history, the use cases of 2019 to 2021 and a few crafted stored events."""
    generate(registry, 800, seed=11, tag="decoding")
    # imported admissions: one ongoing, one ended (with a lapsed membership ended on import)
    clock.set("2019-01-10 12:00")
    for values in ({"city": "Suwon", "country": "KR", "year_joined": 2016},
                   {"city": "Espoo", "country": "FI", "year_joined": 2016,
                    "left_on": "2017-05-01", "left_reason": "withdrawn_by_city",
                    "source_url": "https://www.example.org/espoo"}):
        assert registry.import_membership(IMPORTER, parse(HistoryRow, values))
    # a report stored in its v1 form (upcast on reading), the intake of 2019 with it
    report_city = _store_report_in_its_v1_form(registry, clock)  # Hamburg's
    # submissions, admissions, declines, withdrawals, rejections, retractions, reports, endings
    clock.set("2019-03-16 12:00")
    registry.extend_intake(SECRETARIAT, 2019, date(2019, 9, 30), "jury met late")
    bremen = admitted_city(registry, "Bremen", "DE")
    lyon = admitted_city(registry, "Lyon", "FR")
    zurich = registry.submit_application(CITY, application_form(
        "Zürich", "CH", motivation="Lernen für alle — «überall» ✓ 😀"))
    registry.endorse(COMMISSION, zurich.application_id)
    registry.reject(SECRETARIAT, zurich.application_id, "Part 2 incomplete", "not_recommended")
    nantes = registry.submit_application(CITY, application_form("Nantes", "FR"))
    registry.decline(COMMISSION, nantes.application_id, "Part 2 missing")
    graz = registry.submit_application(CITY, application_form("Graz", "AT"))
    registry.withdraw(CITY, graz.application_id, "next year")
    clock.set("2019-04-20 12:00")
    registry.retract(SECRETARIAT, lyon.application_id, "admitted in error")
    clock.set("2021-03-01 12:00")
    registry.submit_report(CITY, bremen.city_id, progress_report())
    clock.set("2021-06-02 12:00")  # after the v1 report (business time never runs backwards)
    registry.end_membership(SECRETARIAT, report_city.id, "not_reporting", "no report since 2021")
    registry.end_membership(SECRETARIAT, bremen.city_id, "withdrawn_by_city")
    # a new contact person, then the erasure of Lyon's personal data
    registry.update_contacts(SECRETARIAT, lyon.city_id, {"contact": {
        "full_name": "Perpetua Nightingale", "email": "p@nightingale.example"}})
    registry.erase_personal_data(SECRETARIAT, lyon.city_id, ["mayor"], "left office")
    for name, change in CRAFTED.items():
        _store_crafted(registry, name, change)
    return {"bremen": bremen, "report_city": report_city}


class OldSubjects:
    """The feed's subject resolution as it was, on domain events: the reference for both paths."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.known: dict[UUID, tuple[str | None, str | None]] = {}

    def __call__(self, event: Any) -> tuple[str | None, str | None]:
        known = self.known.get(event.originator_id)
        if known is None:
            known = self.learn(event) or self.look_up(event.originator_id)
        if isinstance(event, QuotaLedger.PlaceTaken):
            return str(event.city_id), known[1]
        if isinstance(event, QuotaLedger.PlaceFreed):
            city = self.known.get(event.application_id) or self.look_up(event.application_id)
            return city[0], known[1]
        return known

    def learn(self, event: Any) -> tuple[str | None, str | None] | None:
        subject: tuple[str | None, str | None]
        if isinstance(event, CityApplication.Submitted | CityApplication.Imported):
            subject = (str(event.city_id), event.country)
        elif isinstance(event, City.Registered):
            subject = (str(event.originator_id), event.country)
        elif isinstance(event, QuotaLedger.Opened):
            subject = (None, event.country)
        elif event.originator_version == 1:
            subject = (None, None)
        else:
            return None
        self.known[event.originator_id] = subject
        return subject

    def look_up(self, originator_id: UUID) -> tuple[str | None, str | None]:
        first = self.registry.recorder.select_events(originator_id, limit=1)
        return self.learn(self.registry.mapper.to_domain_event(first[0])) or (None, None)


def test_the_fast_decoding_gives_exactly_the_events_the_library_decoding_gives(
    registry: Registry, varied_log: dict[str, Any]
) -> None:
    fast, slow, subject = Feed(registry), Feed(registry, fast=False), OldSubjects(registry)
    notifications = _notifications(registry)
    assert len(notifications) > 800
    seen: set[str] = set()
    for notification in notifications:
        expected, got = slow.decode(notification), fast.decode(notification)
        assert got == expected, notification.id
        # the id and the subject, derived without the feed's shortcuts
        domain_event: Any = registry.mapper.to_domain_event(notification)
        assert got.id == str(event_id(domain_event.originator_id, domain_event.originator_version))
        assert (got.city_id, got.country) == subject(domain_event)
        assert _text(got) == _text(expected)
        for personal in (False, True):
            assert (json.dumps(got.public(personal), sort_keys=True, default=repr)
                    == json.dumps(expected.public(personal), sort_keys=True, default=repr))
        seen.add(got.type)
    assert seen == set(BY_NAME)  # every public type occurs


def test_only_upcast_and_unexpected_events_take_the_slow_path(
    registry: Registry, varied_log: dict[str, Any]
) -> None:
    feed = Feed(registry)
    slow = []
    for notification in _notifications(registry):
        try:
            if feed.fast_parts(notification) is not None:
                continue
            slow.append("upcast")
        except Exception:
            slow.append(feed.slow_parts(notification).data.get("name", "?"))
    # the report stored as v1 is upcast; of the crafted events only the odd JSON goes slowly
    assert sorted(slow) == sorted(["upcast", *SLOW])


def test_an_upcast_report_comes_out_as_version_2_with_days_late(
    registry: Registry, varied_log: dict[str, Any]
) -> None:
    found, _ = Feed(registry).page(0, 100_000, Filter(types=frozenset({"report.submitted"})))
    days_late = {e.city_id: e.data["days_late"] for e in found}
    assert {e.version for e in found} == {2}
    assert days_late[str(varied_log["report_city"].id)] == 78
    assert days_late[str(varied_log["bremen"].city_id)] == 0
    for event in found:
        BY_NAME["report.submitted"].model.model_validate(event.data)


@pytest.mark.parametrize("where", [
    Filter(), Filter(country="FR"), Filter(country="DE"),
    Filter(types=frozenset({"quota.place_freed", "membership.ended", "application.imported"})),
])
def test_pages_are_the_same_either_way(
    registry: Registry, varied_log: dict[str, Any], where: Filter
) -> None:
    fast, slow = Feed(registry), Feed(registry, fast=False)
    for limit in (7, 1000):
        after_fast = after_slow = 0
        while True:
            got, after_fast = fast.page(after_fast, limit, where)
            expected, after_slow = slow.page(after_slow, limit, where)
            assert (got, after_fast) == (expected, after_slow)
            if not got:
                break


def test_pages_step_over_runs_of_positions_outside_the_feed_longer_than_a_query_window(
    registry: Registry, clock: SettableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feed.page reads a window of positions at a time; token events fill whole windows here."""
    monkeypatch.setattr(feed_module, "SCAN_PAGE", 1)  # windows of 2 positions per row asked

    def tokens(prefix: str) -> None:
        for number in range(13):
            registry.issue_token(SECRETARIAT, f"{prefix}-{number}", Role.SUBSCRIBER)

    tokens("before")
    registry.open_intake(SECRETARIAT, 2019)
    tokens("between")
    clock.set("2019-03-15 12:00")
    admitted_city(registry, "Hamburg", "DE")
    tokens("among")
    admitted_city(registry, "Lyon", "FR")
    admitted_city(registry, "Bremen", "DE")
    tokens("after")
    expected = [n.id for n in _notifications(registry)]
    head = registry.recorder.max_notification_id()
    assert head > expected[-1] + 12
    for where, limit in ((Filter(), 1), (Filter(), 3), (Filter(), 1000),
                         (Filter(country="DE"), 1), (Filter(country="FR"), 2),
                         (Filter(types=frozenset({"membership.started"})), 1)):
        feed, positions, after = Feed(registry), [], 0
        while True:
            found, after = feed.page(after, limit, where)
            if not found:
                break
            assert len(found) <= limit
            positions += [e.position for e in found]
        assert after == head  # an empty page only at the head
        assert positions == [p for p, e in zip(expected, Feed(registry).page(0, 10**6)[0],
                                               strict=True) if where.matches(e)]


def test_the_public_event_id_is_the_contracts_uuid5() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        originator = UUID(int=rng.getrandbits(128))
        version = rng.choice([1, 2, 9, 10, 99, 1000, rng.randrange(1, 10**12)])
        assert public_event_id(_id_prefix(originator), version) == str(
            event_id(originator, version))


@pytest.mark.parametrize("text", [
    "2021-06-01T08:00:00+00:00", "2021-06-01T08:00:00.000001+00:00", "2021-06-01T08:00:00",
    "2021-06-01T08:00:00.123456-04:00", "2021-06-01T08:00:00Z", "2021-06-01T08:00:00.000000+00:00",
    "2021-06-01T08:00:00-00:00", "2021-06-01T08:00:00.5+05:30", "2021-06-01 08:00:00+00:00",
    "2021-06-01T08:00+00:00", "2021-06-01T08:00:00+05:30:15", "2021-06-01",
])
def test_datetimes_come_out_as_isoformat_writes_them(text: str) -> None:
    assert _datetime_text(text) == datetime.fromisoformat(text).isoformat()


def test_the_endpoints_json_falls_back_to_the_standard_library_for_huge_integers() -> None:
    value = {"n": 2**70, "s": "é ✓"}
    assert json.loads(_json(value)) == value
    assert _json({"s": "é ✓", "n": 1}) == '{"s":"é ✓","n":1}'.encode()
