"""Business time never runs backwards within an aggregate; the history import may record a city's
past before its later acts only where the as-of folds can represent it, and never overlapping an
application (one open application per city, whatever the order of import and live acts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from application.registry import Registry
from domain.acts import Actor, Role
from domain.errors import DuplicateApplication, InvalidTransition
from domain.forms import parse
from domain.history import HistoryRow
from infrastructure.cli import app
from tests.conftest import (
    CITY,
    COMMISSION,
    SECRETARIAT,
    SettableClock,
    application_form,
    endorsed_application,
    progress_report,
)
from tests.test_history_import import write_csv

IMPORTER = Actor("uil-archivist", Role.SECRETARIAT, source="import")


# --- the injected clock set before the last act --------------------------------------------------

def _endorse(registry: Registry, application_id: Any) -> None:
    registry.endorse(COMMISSION, application_id)


def _admit(registry: Registry, application_id: Any) -> None:
    registry.admit(SECRETARIAT, application_id)


def _retract(registry: Registry, application_id: Any) -> None:
    registry.retract(SECRETARIAT, application_id, "corrigendum")


# What is done at 2019-03-20 12:00, then the act tried at 2019-03-18 12:00 (Berlin).
BACKWARDS: dict[str, tuple[tuple[Callable[[Registry, Any], None], ...],
                           Callable[[Registry, Any], None]]] = {
    "an endorsement before the submission": ((), _endorse),
    "an admission before the submission": ((_endorse,), _admit),
    "a retraction before the admission": ((_endorse, _admit), _retract),
}


@pytest.mark.parametrize("case", BACKWARDS)
def test_an_act_dated_before_the_last_act_of_its_application_is_refused_naming_both_times(
    registry: Registry, clock: SettableClock, case: str
) -> None:
    done, tried = BACKWARDS[case]
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-20 12:00")
    submission = registry.submit_application(CITY, application_form("Hamburg"))
    for step in done:
        step(registry, submission.application_id)
    before = registry.count_events()
    clock.set("2019-03-18 12:00")
    with pytest.raises(InvalidTransition) as refused:
        tried(registry, submission.application_id)
    assert refused.value.code == "invalid_transition"
    assert "2019-03-18T11:00+00:00" in refused.value.message
    assert "2019-03-20T11:00+00:00" in refused.value.message
    assert registry.count_events() == before


def test_an_act_at_the_same_time_as_the_last_act_is_accepted(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    submission = endorsed_application(registry, "Hamburg")  # all at the clock's 2019-03-15 12:00
    registry.admit(SECRETARIAT, submission.application_id)
    assert registry.application(SECRETARIAT, submission.application_id).status == "admitted"


def test_a_quota_decision_dated_before_the_ledgers_last_act_is_refused(
    registry: Registry, clock: SettableClock
) -> None:
    """Two applications of one country and intake: the quota counts admissions in business time,
    so the second may not be admitted at a time before the first admission."""
    registry.open_intake(SECRETARIAT, 2019)
    first = endorsed_application(registry, "Hamburg")
    second = endorsed_application(registry, "Bremen")
    clock.set("2019-04-10 12:00")
    registry.admit(SECRETARIAT, first.application_id)
    clock.set("2019-04-01 12:00")
    with pytest.raises(InvalidTransition, match="on this quota ledger at 2019-04-10T10:00"):
        registry.admit(SECRETARIAT, second.application_id)


# --- the history import before, after and around live acts ---------------------------------------

def _row(**values: Any) -> HistoryRow:
    return parse(HistoryRow, {"city": "Hamburg", "country": "DE", **values})


def test_an_import_is_refused_while_it_would_overlap_an_open_application(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2024, None, None)
    clock.set("2024-03-05 10:00")
    submission = registry.submit_application(CITY, application_form("Hamburg"))
    clock.set("2026-11-26 10:00")
    before = registry.count_events()
    for row in (_row(year_joined=2016, admitted_on="2016-06-01"),  # still a member today
                _row(year_joined=2016, admitted_on="2016-06-01", left_on="2024-03-05"),
                _row(year_joined=2024, admitted_on="2024-03-06")):
        with pytest.raises(InvalidTransition, match=(
                r"Hamburg \(DE\) has an application submitted on 2024-03-05 \(still open\): an "
                r"imported membership may not overlap it")):
            registry.import_membership(IMPORTER, row)
    assert registry.count_events() == before
    city = registry.city(SECRETARIAT, submission.city_id)
    assert (city.open_application_id, city.memberships) == (submission.application_id, [])


def test_a_membership_imported_wholly_before_an_open_application_leaves_it_the_only_open_one(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2024)
    clock.set("2024-03-05 10:00")
    submission = registry.submit_application(CITY, application_form("Hamburg"))
    clock.set("2026-11-26 10:00")
    assert registry.import_membership(IMPORTER, _row(
        year_joined=2016, admitted_on="2016-06-01", left_on="2019-05-01"))
    city = registry.city(SECRETARIAT, submission.city_id)
    assert city.open_application_id == submission.application_id
    assert [(m.admitted_on.isoformat(), m.status) for m in city.memberships] == [
        ("2016-06-01", "ended")]
    clock.set("2024-03-06 10:00")
    with pytest.raises(DuplicateApplication):
        registry.submit_application(CITY, application_form("Hamburg"))


def test_an_import_that_would_end_a_membership_before_its_report_is_refused(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    hamburg = endorsed_application(registry, "Hamburg")
    registry.admit(SECRETARIAT, hamburg.application_id)  # 2019-03-15
    clock.set("2021-03-01 12:00")
    registry.submit_report(CITY, hamburg.city_id, progress_report())
    clock.set("2026-11-26 10:00")
    with pytest.raises(InvalidTransition, match=(
            r"has an act on a membership on 2021-03-01, not before 2020-05-31: history is "
            r"imported oldest first")):
        registry.import_membership(IMPORTER, _row(year_joined=2020, admitted_on="2020-06-01"))


def test_an_import_overlapping_a_closed_application_is_refused_one_before_it_comes_in(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2024)
    clock.set("2024-03-05 10:00")
    submission = registry.submit_application(CITY, application_form("Hamburg"))
    clock.set("2024-03-20 10:00")
    registry.withdraw(CITY, submission.application_id, "next year")
    clock.set("2026-11-26 10:00")
    with pytest.raises(InvalidTransition, match=r"\(closed on 2024-03-20\)"):
        registry.import_membership(IMPORTER, _row(
            year_joined=2024, admitted_on="2024-03-10", left_on="2024-09-01"))
    assert registry.import_membership(IMPORTER, _row(year_joined=2024, admitted_on="2024-09-01"))
    assert registry.city(SECRETARIAT, submission.city_id).active_membership is not None


# --- the as-of answers on such logs, from the command line ----------------------------------------

class Gnlc:
    """`gnlc` in-process against one database, each command at the `--now` it is given."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.database_url, self.tmp_path, self.runner = database_url, tmp_path, CliRunner()

    def __call__(self, now: str, *args: str) -> Any:
        return self.runner.invoke(app, ["--database-url", self.database_url, "--actor", "tester",
                                        "--now", now, *args, "--json"])

    def ok(self, now: str, *args: str) -> Any:
        result = self(now, *args)
        assert result.exit_code == 0, result.stderr or result.output
        return json.loads(result.stdout)

    def file(self, name: str, content: Any) -> str:
        path = self.tmp_path / name
        path.write_text(json.dumps(content))
        return str(path)


TODAY = "2026-11-26T10:00:00+01:00"


@pytest.fixture
def live_then_imported(database_url: str, tmp_path: Path) -> tuple[Gnlc, dict[str, Any]]:
    """Hamburg applies in 2024 (still open); then its membership of 2016 to 2019 is imported."""
    gnlc = Gnlc(database_url, tmp_path)
    gnlc.ok("2024-01-10T10:00:00+01:00", "intake", "open", "2024")
    submission = gnlc.ok("2024-03-05T10:00:00+01:00", "apply",
                         gnlc.file("hamburg.json", application_form("Hamburg")))
    history = write_csv(tmp_path / "history.csv", [
        ("Hamburg", "DE", "2016", "2016-06-01", "2019-05-01", "withdrawn_by_city")])
    summary = gnlc.ok(TODAY, "import", "history", history)
    assert (summary["imported"], summary["refused"]) == (1, [])
    return gnlc, submission


def test_members_as_of_a_day_inside_an_imported_membership_before_the_live_application(
    live_then_imported: tuple[Gnlc, dict[str, Any]]
) -> None:
    gnlc, _ = live_then_imported

    def member(day: str) -> list[tuple[str, str, str | None]]:
        return [(r["name"], r["status"], r["ended_on"])
                for r in gnlc.ok(TODAY, "members", "--status", "all", "--as-of", day)]

    assert member("2016-05-31") == []
    assert member("2017-01-01") == [("Hamburg", "active", None)]
    assert member("2020-01-01") == [("Hamburg", "ended", "2019-05-01")]
    assert member("2025-01-01") == [("Hamburg", "ended", "2019-05-01")]

    def quotas(day: str) -> list[tuple[str, int, int, int]]:
        return [(r["country"], r["year"], r["admitted"], r["pending"])
                for r in gnlc.ok(TODAY, "quotas", "--as-of", day)]

    assert quotas("2017-01-01") == [("DE", 2016, 1, 0)]
    assert quotas("2024-03-05") == [("DE", 2016, 1, 0), ("DE", 2024, 0, 1)]


def test_the_audit_state_as_of_a_day_inside_the_imported_membership_shows_it(
    live_then_imported: tuple[Gnlc, dict[str, Any]]
) -> None:
    gnlc, submission = live_then_imported
    city_id = submission["city_id"]

    def state(day: str) -> Any:
        return gnlc.ok(TODAY, "audit", "state", city_id, "--as-of", day)

    assert state("2015-01-01") == {"city": None, "applications": []}
    in_2017 = state("2017-01-01")
    assert [(m["admitted_on"], m["status"]) for m in in_2017["city"]["memberships"]] == [
        ("2016-06-01", "active")]
    assert in_2017["city"]["open_application_id"] is None
    assert [a["status"] for a in in_2017["applications"]] == ["admitted"]  # the imported one
    today = state("2026-11-26")
    assert today["city"]["open_application_id"] == submission["application_id"]
    assert sorted(a["status"] for a in today["applications"]) == ["admitted", "submitted"]


def test_a_second_application_after_the_import_is_refused_while_the_first_is_open(
    live_then_imported: tuple[Gnlc, dict[str, Any]]
) -> None:
    gnlc, _ = live_then_imported
    refused = gnlc("2024-03-06T10:00:00+01:00", "apply",
                   gnlc.file("again.json", application_form("Hamburg")))
    assert refused.exit_code == 3
    assert json.loads(refused.stderr)["error"]["code"] == "duplicate_application"


def test_the_import_summary_lists_a_row_that_would_overlap_an_open_application(
    database_url: str, tmp_path: Path
) -> None:
    gnlc = Gnlc(database_url, tmp_path)
    gnlc.ok("2024-01-10T10:00:00+01:00", "intake", "open", "2024")
    gnlc.ok("2024-03-05T10:00:00+01:00", "apply",
            gnlc.file("hamburg.json", application_form("Hamburg")))
    history = write_csv(tmp_path / "history.csv", [("Hamburg", "DE", "2016", "2016-06-01")])
    summary = gnlc.ok(TODAY, "import", "history", history)
    assert summary["imported"] == 0
    (refused,) = summary["refused"]
    assert (refused["line"], refused["city"]) == (2, "Hamburg")
    assert refused["reason"] == (
        "invalid_transition: Hamburg (DE) has an application submitted on 2024-03-05 (still "
        "open): an imported membership may not overlap it (a member does not apply, and a city "
        "has one open application at a time); this one runs from 2016-06-01 with no end")


def test_now_set_before_the_submission_gives_invalid_transition_on_the_command_line(
    database_url: str, tmp_path: Path
) -> None:
    gnlc = Gnlc(database_url, tmp_path)
    gnlc.ok("2019-01-10T10:00:00+01:00", "intake", "open", "2019")
    submission = gnlc.ok("2019-03-20T10:00:00+01:00", "apply",
                         gnlc.file("hamburg.json", application_form("Hamburg")))
    refused = gnlc("2019-03-18T10:00:00+01:00", "endorse", submission["application_id"])
    assert refused.exit_code == 3
    error = json.loads(refused.stderr)["error"]
    assert error["code"] == "invalid_transition"
    assert "2019-03-18T09:00+00:00" in error["message"]
    assert "2019-03-20T09:00+00:00" in error["message"]
