"""Queries answer from the projections, or replayed as of a past day or a past moment of the
registry's knowledge; both paths give the same answer."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from application.registry import Registry
from domain.cities import City
from infrastructure.bootstrap import build_read_models, build_read_side, build_runner
from infrastructure.cli import app
from infrastructure.readmodels.runner import ProjectionFailed
from infrastructure.settings import Settings
from projections import answers
from projections.catalogue import PROJECTIONS
from projections.members import MembersProjection
from tests.conftest import (
    AUDITOR,
    CITY,
    COMMISSION,
    SECRETARIAT,
    SettableClock,
    admitted_city,
    application_form,
    endorsed_application,
    progress_report,
)

TODAY = date(2022, 6, 1)


@pytest.fixture
def network(registry: Registry, clock: SettableClock) -> dict[str, Any]:
    """Morocco's 2020 intake with its corrigendum, a report, an ended membership, a pending one."""
    registry.open_intake(SECRETARIAT, 2020)
    clock.set("2020-03-10 10:00")
    ids = {name: endorsed_application(registry, name, "MA")
           for name in ("Benguerir", "Chefchaouen", "Ifrane", "Oujda")}
    pending = registry.submit_application(CITY, application_form("Lyon", "FR"))
    clock.set("2020-04-20 10:00")
    for name in ("Benguerir", "Chefchaouen", "Ifrane"):
        registry.admit(SECRETARIAT, ids[name].application_id)
    clock.set("2020-09-01 10:00")
    registry.retract(SECRETARIAT, ids["Ifrane"].application_id, "corrigendum")
    clock.set("2022-03-01 10:00")
    registry.submit_report(CITY, ids["Benguerir"].city_id, progress_report())
    registry.end_membership(SECRETARIAT, ids["Chefchaouen"].city_id, "withdrawn_by_city")
    return {"ids": ids, "pending": pending, "retracted_known_from": datetime.now(UTC)}


def _all_answers(rows_of: Any, today: date) -> dict[str, Any]:
    return {
        "members": answers.members(rows_of("members"), today, status="all"),
        "deadlines": answers.deadline_list(rows_of("deadlines"), today),
        "quotas": answers.quotas(rows_of("quotas")),
        "applications": answers.applications(rows_of("applications")),
    }


def test_the_projections_and_a_replay_of_the_whole_log_give_the_same_answers(
    settings: Settings, registry: Registry, network: dict[str, Any]
) -> None:
    read_side = build_read_side(settings, registry)
    rows = partial(read_side.rows, reader=AUDITOR)
    stored = _all_answers(rows, TODAY)
    replayed = _all_answers(lambda t: rows(t, as_of=date(2099, 1, 1)), TODAY)
    known_now = _all_answers(lambda t: rows(t, known_at=datetime.now(UTC)), TODAY)
    assert stored == replayed == known_now
    assert [m["name"] for m in stored["members"]] == ["Benguerir", "Chefchaouen"]
    assert stored["quotas"] == [
        {"country": "FR", "year": 2020, "limit": 3, "admitted": 0, "retracted": 0,
         "remaining": 3, "pending": 1},
        {"country": "MA", "year": 2020, "limit": 3, "admitted": 2, "retracted": 1,
         "remaining": 1, "pending": 1},
    ]


def test_as_of_a_day_shows_the_network_at_the_end_of_that_day(
    settings: Settings, registry: Registry, network: dict[str, Any]
) -> None:
    read_side = build_read_side(settings, registry)
    rows = partial(read_side.rows, reader=AUDITOR)
    before = answers.members(rows("members", as_of=date(2020, 4, 19)), TODAY)
    assert before == []
    on_the_day = answers.members(rows("members", as_of=date(2020, 4, 20)),
                                 date(2020, 4, 20))
    assert [m["name"] for m in on_the_day] == ["Benguerir", "Chefchaouen", "Ifrane"]
    quota = answers.quotas(rows("quotas", as_of=date(2020, 8, 31)), country="MA")
    assert (quota[0]["admitted"], quota[0]["remaining"]) == (3, 0)


def test_known_at_a_moment_does_not_see_what_was_recorded_later(
    settings: Settings, registry: Registry, clock: SettableClock, network: dict[str, Any]
) -> None:
    read_side = build_read_side(settings, registry)
    rows = partial(read_side.rows, reader=AUDITOR)
    moment = datetime.now(UTC)
    clock.set("2022-05-01 10:00")
    registry.end_membership(SECRETARIAT, network["ids"]["Benguerir"].city_id, "other")
    then = answers.members(rows("members", known_at=moment), TODAY)
    now = answers.members(rows("members"), TODAY)
    assert [m["name"] for m in then] == ["Benguerir"]
    assert now == []
    both = answers.members(rows("members", as_of=date(2020, 5, 1), known_at=moment),
                           date(2020, 5, 1))
    assert [m["name"] for m in both] == ["Benguerir", "Chefchaouen", "Ifrane"]


def test_a_query_brings_the_projections_up_to_the_head_when_no_runner_is_running(
    settings: Settings, registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    admitted_city(registry, "Hamburg")
    read_side = build_read_side(settings, registry)
    rows = partial(read_side.rows, reader=AUDITOR)
    assert len(rows("members")) == 1
    admitted_city(registry, "Bremen")
    assert len(rows("members")) == 2
    head = registry.recorder.max_notification_id()
    assert read_side.store.positions()["members"][0] == head


class Broken(MembersProjection):
    """A members projection with a bug: it fails on every report."""

    def _reported(self, e: Any) -> None:
        raise ValueError("report handler is broken")

    handlers = {**MembersProjection.handlers, City.ReportSubmitted: _reported}


def test_a_failing_projection_stops_names_the_event_and_resumes_from_it_when_fixed(
    settings: Settings, registry: Registry, network: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = build_read_models(settings)
    monkeypatch.setitem(PROJECTIONS, "members", Broken)
    runner = build_runner(settings, registry, store, ["members"], batch_size=4)
    runner.acquire()
    with pytest.raises(ProjectionFailed) as failed:
        runner.catch_up()
    message = str(failed.value)
    assert "ReportSubmitted" in message and "report handler is broken" in message
    assert "ReportSubmitted" in message and "report handler is broken" in message
    stopped_at = store.positions()["members"][0]
    assert stopped_at < failed.value.position
    monkeypatch.setitem(PROJECTIONS, "members", MembersProjection)
    fixed = build_runner(settings, registry, store, ["members"])
    fixed.acquire()
    fixed.catch_up()
    fixed.release()
    live = sorted(store.rows("members"), key=lambda r: r["city_id"])
    fixed.acquire()
    fixed.rebuild("members")
    fixed.release()
    assert live == sorted(store.rows("members"), key=lambda r: r["city_id"])
    batches = store.batches("members")
    assert all(b[1] == a[2] + 1 for a, b in itertools.pairwise(batches)
               if a[0] == b[0])


def test_a_rebuild_swaps_in_new_tables_with_the_same_rows(
    settings: Settings, registry: Registry, network: dict[str, Any]
) -> None:
    read_side = build_read_side(settings, registry)
    rows = partial(read_side.rows, reader=AUDITOR)
    before = {t: sorted(map(str, rows(t))) for t in ("members", "quotas")}
    runner = build_runner(settings, registry, read_side.store)
    for name in PROJECTIONS:
        runner.rebuild(name)
    after = {t: sorted(map(str, read_side.store.rows(t))) for t in ("members", "quotas")}
    assert before == after
    assert {g for _, g in read_side.store.positions().values()} == {1}


def _gnlc(database_url: str, *args: str) -> Any:
    result = CliRunner().invoke(app, ["--database-url", database_url, *args, "--json"])
    return result


def test_the_query_commands_answer_in_json_with_the_read_model_field_names(
    database_url: str, settings: Settings, registry: Registry, network: dict[str, Any],
    tmp_path: Path,
) -> None:
    members = json.loads(_gnlc(database_url, "members", "--status", "all", "--today",
                               "2022-06-01").stdout)
    assert set(members[0]) == {
        "city_id", "name", "country", "status", "admitted_on", "intake_year", "periods",
        "reports_submitted", "next_report_due", "days_overdue", "flagged_for_review",
        "ended_on", "contacts"}
    assert set(members[0]["contacts"]) == {"mayor", "contact"}
    quotas = json.loads(_gnlc(database_url, "quotas", "--country", "ma").stdout)
    assert [(q["admitted"], q["retracted"], q["remaining"], q["pending"]) for q in quotas] == [
        (2, 1, 1, 1)]
    overdue = json.loads(_gnlc(database_url, "deadlines", "--overdue", "--today",
                               "2022-06-01").stdout)
    assert {(d["name"], d["cycle"], d["status"]) for d in overdue} == set()
    late = json.loads(_gnlc(database_url, "deadlines", "--today", "2023-01-01").stdout)
    # Chefchaouen left before its first report fell due: nothing is listed for it.
    assert {(d["name"], d["cycle"], d["status"]) for d in late} == {
        ("Benguerir", 1, "submitted"), ("Benguerir", 2, "upcoming")}
    pending = json.loads(_gnlc(database_url, "applications", "--status", "endorsed").stdout)
    assert [a["city"] for a in pending] == ["Oujda"]
    as_of = json.loads(_gnlc(database_url, "members", "--as-of", "2020-04-20").stdout)
    assert len(as_of) == 3


@pytest.mark.parametrize(("args", "field"), [
    (["members", "--as-of", "2020-02-30"], "as_of"),
    (["members", "--known-at", "2020-01-01T10:00:00"], "known_at"),
    (["members", "--status", "former"], "status"),
    (["members", "--country", "XX"], "country"),
    (["deadlines", "--due-before", "soon"], "due_before"),
    (["applications", "--status", "lost"], "status"),
    (["projections", "rebuild", "nonsense"], "name"),
])
def test_bad_query_options_are_invalid_input_naming_the_option(
    database_url: str, args: list[str], field: str
) -> None:
    result = _gnlc(database_url, *args)
    assert result.exit_code == 2
    assert json.loads(result.stderr)["error"]["field"] == field


def test_a_query_writes_no_event(
    registry: Registry, settings: Settings, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    submission = registry.submit_application(CITY, application_form())
    registry.endorse(COMMISSION, submission.application_id)
    before = registry.count_events()
    build_read_side(settings, registry).rows("applications", reader=AUDITOR)
    assert registry.count_events() == before
