"""The command line contract: JSON outputs, exit codes, and bad input that changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from typer.testing import CliRunner

from infrastructure.bootstrap import build_registry
from infrastructure.cli import app
from infrastructure.settings import Settings
from tests.conftest import application_form, progress_report

IN_WINDOW = "2019-03-15T12:00:00+01:00"


class Gnlc:
    """Runs `gnlc` in-process against one database, as a user would from a shell."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.runner = CliRunner()

    def __call__(self, *args: str, now: str | None = IN_WINDOW) -> Any:
        options = ["--database-url", self.database_url, "--actor", "tester"]
        if now:
            options += ["--now", now]
        return self.runner.invoke(app, [*options, *args, "--json"])

    def ok(self, *args: str, now: str | None = IN_WINDOW) -> Any:
        result = self(*args, now=now)
        assert result.exit_code == 0, result.stderr or result.output
        return json.loads(result.stdout)

    def file(self, content: Any, name: str = "input.json") -> str:
        path = self.tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)

    def event_count(self) -> int:
        registry = build_registry(Settings(database_url=self.database_url))
        try:
            return registry.count_events()
        finally:
            registry.close()


@pytest.fixture
def gnlc(database_url: str, tmp_path: Path) -> Gnlc:
    gnlc = Gnlc(database_url, tmp_path)
    gnlc.ok("intake", "open", "2019", now="2019-01-10T10:00:00+01:00")
    return gnlc


def _error(result: Any) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(result.stderr)["error"]
    return error


def test_a_whole_intake_runs_from_the_command_line(gnlc: Gnlc) -> None:
    ids = [gnlc.ok("apply", gnlc.file(application_form(name), f"{name}.json"))
           for name in ("Hamburg", "Bremen", "Munich", "Cologne")]
    for submission in ids:
        assert gnlc.ok("endorse", submission["application_id"]) == {
            "application_id": submission["application_id"], "status": "endorsed"}
    admitted = [gnlc.ok("admit", s["application_id"], "--jury", "recommended") for s in ids[:3]]
    assert admitted[-1]["quota"] == {"country": "DE", "year": 2019, "used": 3, "limit": 3}
    assert admitted[0]["status"] == "admitted"
    refused = gnlc("admit", ids[3]["application_id"])
    assert (refused.exit_code, _error(refused)["code"]) == (3, "quota_exhausted")
    assert gnlc.ok("retract", ids[0]["application_id"], "--reason", "corrigendum")["status"] == (
        "retracted")
    assert gnlc.ok("admit", ids[3]["application_id"])["quota"]["used"] == 3
    report = gnlc.ok("report", ids[1]["city_id"], gnlc.file(progress_report()),
                     now="2021-04-01T10:00:00+02:00")
    assert report == {"city_id": ids[1]["city_id"], "cycle": 1, "due": "2021-03-15",
                      "late": True}
    ended = gnlc.ok("end-membership", ids[2]["city_id"], "--reason", "withdrawn_by_city")
    assert ended == {"city_id": ids[2]["city_id"], "status": "ended"}
    city = gnlc.ok("show", "city", ids[1]["city_id"])
    assert (city["status"], city["memberships"][0]["reports"][0]["cycle"]) == ("active", 1)
    history = gnlc.ok("history", ids[0]["city_id"])
    assert [h["type"] for h in history][-2:] == [
        "CityApplication.AdmissionRetracted", "City.MembershipRetracted"]
    assert history[0]["actor"] == {"name": "tester", "role": "city"}
    assert set(history[0]) >= {"type", "recorded_at", "effective_at", "actor", "data"}


def test_the_city_id_is_the_same_whatever_case_accents_and_spacing(gnlc: Gnlc) -> None:
    one = gnlc.ok("city-id", "MA", "Chefchaouen")
    assert gnlc.ok("city-id", "ma", "  CHEFCHAOUÈN ") == one
    assert gnlc.ok("apply", gnlc.file(application_form("chefchaouen", "MA")))["city_id"] == (
        one["city_id"])


def test_intake_commands_answer_with_the_window(gnlc: Gnlc) -> None:
    assert gnlc.ok("intake", "extend", "2019", "--closes", "2019-06-30", "--reason", "COVID-19"
                   ) == {"year": 2019, "opens": "2019-03-01", "closes": "2019-06-30"}
    result = gnlc("intake", "open", "2019")
    assert (result.exit_code, _error(result)["code"]) == (3, "invalid_transition")
    result = gnlc("intake", "extend", "2030", "--closes", "2030-06-30", "--reason", "x")
    assert (result.exit_code, _error(result)["code"]) == (4, "not_found")


def _words(n: int) -> str:
    return " ".join(["learning"] * n)


BAD_APPLICATIONS: dict[str, tuple[Any, str]] = {
    "malformed JSON": ('{"city": "Hamburg",', "file"),
    "unknown field": (application_form(mayor_shoe_size=43), "mayor_shoe_size"),
    "unknown nested field": (application_form(
        contact={"full_name": "A", "email": "a@example.org", "fax": "1"}), "contact.fax"),
    "missing field": ({k: v for k, v in application_form().items() if k != "motivation"},
                      "motivation"),
    "missing contact email": (application_form(contact={"full_name": "A"}), "contact.email"),
    "201 words": (application_form(implementation=_words(201)), "implementation"),
    "bad country code": (application_form(country="XX"), "country"),
    "bad date": (application_form(signed_on="2019-02-30"), "signed_on"),
    "pledge not given": (application_form(pledge=False), "pledge"),
    "bad e-mail": (application_form(contact={"full_name": "A", "email": "nope"}),
                   "contact.email"),
    "bad language": (application_form(language="de"), "language"),
}


@pytest.mark.parametrize("case", BAD_APPLICATIONS)
def test_a_bad_application_file_is_invalid_input_naming_the_field_and_stores_nothing(
    gnlc: Gnlc, case: str
) -> None:
    content, field = BAD_APPLICATIONS[case]
    before = gnlc.event_count()
    result = gnlc("apply", gnlc.file(content))
    assert result.exit_code == 2
    assert _error(result)["code"] == "invalid_input"
    assert _error(result)["field"] == field
    assert gnlc.event_count() == before


def test_exactly_200_words_are_accepted(gnlc: Gnlc) -> None:
    assert gnlc.ok("apply", gnlc.file(application_form(motivation=_words(200))))


@pytest.mark.parametrize(("args", "code", "exit_code"), [
    (["admit", "not-a-uuid"], "invalid_input", 2),
    (["admit", str(uuid4())], "not_found", 4),
    (["endorse", str(uuid4())], "not_found", 4),
    (["report", str(uuid4()), "{report}"], "not_found", 4),
    (["report", "123", "{report}"], "invalid_input", 2),
    (["show", "city", str(uuid4())], "not_found", 4),
    (["end-membership", str(uuid4()), "--reason", "other"], "not_found", 4),
    (["intake", "open", "2020", "--opens", "2020-13-01"], "invalid_input", 2),
    (["city-id", "XX", "Hamburg"], "invalid_input", 2),
])
def test_bad_ids_and_dates_get_their_documented_exit_code_and_store_nothing(
    gnlc: Gnlc, args: list[str], code: str, exit_code: int
) -> None:
    args = [gnlc.file(progress_report()) if a == "{report}" else a for a in args]
    before = gnlc.event_count()
    result = gnlc(*args)
    assert (result.exit_code, _error(result)["code"]) == (exit_code, code)
    assert gnlc.event_count() == before


def test_a_bad_progress_report_is_invalid_input_and_stores_nothing(gnlc: Gnlc) -> None:
    submission = gnlc.ok("apply", gnlc.file(application_form()))
    gnlc.ok("endorse", submission["application_id"])
    gnlc.ok("admit", submission["application_id"])
    before = gnlc.event_count()
    for content, field in [
        ({"covering_from": "2019-01-01", "covering_to": "2020-01-01"}, "summary"),
        (progress_report(statistics={"learners": "many"}), "statistics.learners"),
        (progress_report(links=["not a url"]), "links.0"),
        ("[1, 2", "file"),
    ]:
        result = gnlc("report", submission["city_id"], gnlc.file(content))
        assert (result.exit_code, _error(result)["field"]) == (2, field)
    assert gnlc.event_count() == before


def test_a_timestamp_without_an_offset_is_invalid_input(gnlc: Gnlc) -> None:
    result = gnlc("intake", "open", "2020", now="2020-01-10T10:00:00")
    assert (result.exit_code, _error(result)["field"]) == (2, "--now")


def test_an_unknown_end_of_membership_reason_is_invalid_input(gnlc: Gnlc) -> None:
    submission = gnlc.ok("apply", gnlc.file(application_form()))
    gnlc.ok("endorse", submission["application_id"])
    gnlc.ok("admit", submission["application_id"])
    before = gnlc.event_count()
    result = gnlc("end-membership", submission["city_id"], "--reason", "bored")
    assert (result.exit_code, _error(result)["field"]) == (2, "reason")
    assert gnlc.event_count() == before


def test_db_init_creates_the_store_once(database_url: str, tmp_path: Path) -> None:
    gnlc = Gnlc(database_url, tmp_path)
    assert gnlc.ok("db", "init")["created"] is True
    assert gnlc.ok("db", "init")["created"] is False


def test_the_role_recorded_follows_the_command(gnlc: Gnlc) -> None:
    submission = gnlc.ok("apply", gnlc.file(application_form()))
    gnlc.ok("endorse", submission["application_id"])
    gnlc.ok("admit", submission["application_id"])
    roles = {h["type"]: h["actor"]["role"] for h in gnlc.ok("history", submission["city_id"])}
    assert roles == {
        "City.Registered": "city", "City.ApplicationLodged": "city",
        "CityApplication.Submitted": "city", "CityApplication.Endorsed": "national_commission",
        "CityApplication.Admitted": "secretariat", "City.MembershipStarted": "secretariat",
    }
    assert {h["clock_overridden"] for h in gnlc.ok("history", submission["city_id"])} == {True}
