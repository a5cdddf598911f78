"""`gnlc import history`: the network's records since 2015 come in under the rules of their time.

Every test writes its CSV itself and runs the command line in-process against SQLite and
PostgreSQL; "today" is fixed with `--now` (the recorded time stays the real clock).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pycountry
import pytest
from typer.testing import CliRunner

from domain.countries import UN_NAMES, country_code
from domain.errors import InvalidInput
from domain.forms import parse
from domain.history import HistoryRow
from infrastructure.bootstrap import build_registry
from infrastructure.cli import app
from infrastructure.settings import Settings
from tests.conftest import AUDITOR

BERLIN = ZoneInfo("Europe/Berlin")
NOW = "2026-11-26T10:00:00+01:00"  # "today" is 2026-11-26 in Berlin
COLUMNS = ("city", "country", "year_joined", "admitted_on", "left_on", "left_reason",
           "source_url")
SOURCE = "https://www.uil.unesco.org/en/learning-cities/members"

# The history file of these tests: line numbers are those of the file (the header is line 1).
HISTORY: list[tuple[str, ...]] = [
    # line 2-6: the Republic of Korea had more than three cities in 2016, before any quota
    ("Suwon", "Republic of Korea", "2016", "", "", "", SOURCE),
    ("Gunpo", "KR", "2016"),
    ("Namyangju", "KOR", "2016"),
    ("Osan", "Korea, Republic of", "2016"),
    ("Siheung", "  republic of  KOREA ", "2016"),
    # line 7: "Korea" alone names no country: refused, never guessed
    ("Gyeongsan", "Korea", "2016"),
    # line 8-9: left for not reporting, then admitted again (already ended: nothing to end)
    ("Cork", "Ireland", "2015", "", "2020-06-30", "not_reporting"),
    ("Cork", "IE", "2022", "2022-09-05"),
    # line 10: left before it was admitted
    ("Limerick", "Ireland", "2016", "2016-05-01", "2016-04-01"),
    # line 11-12: Muharraq, a member from 2019 and again from 2024 (the first lapses)
    ("Muharraq", "Bahrain", "2019"),
    ("Muharraq", "BHR", "2024", "2024-09-10"),
    # line 13-16: four Chinese cities in the 2019 intake: the last one exceeds the quota
    ("Wuhan", "China", "2019"),
    ("Chengdu", "CN", "2019"),
    ("Hangzhou", "CHN", "2019"),
    ("Shanghai", "People's Republic of China", "2019"),
    # line 17-21: 2018: four German cities before 2018-10-01 come in; one from that day on not,
    # although it is the first row of them in the file (rows are imported oldest first)
    ("Mannheim", "Germany", "2018", "2018-10-01"),
    ("Bremen", "DE", "2018", "2018-03-15"),
    ("Munich", "DEU", "2018", "2018-05-02"),
    ("Cologne", "Germany", "2018", "2018-07-01"),
    ("Leipzig", "germany", "2018", "2018-09-30"),
    # line 22-27: countries as UN and UNESCO documents write them
    ("Shiraz", "Iran (Islamic Republic of)", "2020"),
    ("Hanoi", "Viet Nam", "2020"),
    ("Bristol", "United Kingdom of Great Britain and Northern Ireland", "2020"),
    ("Abidjan", "Côte d'Ivoire", "2020"),
    ("Eindhoven", "Netherlands (Kingdom of the)", "2020"),
    ("Izmir", "Türkiye", "2020"),
    # line 28-31: the future is refused; today is not the future
    ("Hamburg", "DE", "2026"),
    ("Bonn", "DE", "2026", "2026-11-26"),
    ("Berlin", "DE", "2026", "2026-11-27"),
    ("Dublin", "IE", "2025", "2025-01-10", "2026-12-01", "withdrawn_by_city"),
]
IMPORTED = 23
REFUSED_LINES = {7: "Gyeongsan", 10: "Limerick", 16: "Shanghai", 17: "Mannheim", 28: "Hamburg",
                 30: "Berlin", 31: "Dublin"}


def write_csv(path: Path, rows: Iterable[tuple[str, ...]],
              columns: tuple[str, ...] = COLUMNS) -> str:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([*row, *[""] * (len(columns) - len(row))])
    return str(path)


class Gnlc:
    """`gnlc` run in-process against one database, as from a shell, with `--now` fixed."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.runner = CliRunner()

    def __call__(self, *args: str, as_json: bool = True) -> Any:
        options = ["--database-url", self.database_url, "--actor", "uil-archivist", "--now", NOW]
        return self.runner.invoke(app, [*options, *args, *(["--json"] if as_json else [])])

    def ok(self, *args: str) -> Any:
        result = self(*args)
        assert result.exit_code == 0, result.stderr or result.output
        return json.loads(result.stdout)

    def csv(self, rows: Iterable[tuple[str, ...]], name: str = "history.csv",
            columns: tuple[str, ...] = COLUMNS) -> str:
        return write_csv(self.tmp_path / name, rows, columns)

    def import_history(self, path: str) -> dict[str, Any]:
        summary: dict[str, Any] = self.ok("import", "history", path)
        return summary

    def members(self, *options: str) -> dict[str, dict[str, Any]]:
        """The members listed, by "name (country)", with the columns these tests look at."""
        rows = self.ok("members", "--status", "all", *options)
        keys = ("status", "admitted_on", "intake_year", "periods", "ended_on")
        return {f"{r['name']} ({r['country']})": {k: r[k] for k in keys} for r in rows}

    def quotas(self, *options: str) -> dict[tuple[str, int], tuple[int | None, int, int | None]]:
        """(country, year) -> (limit, admitted, remaining)."""
        return {(r["country"], r["year"]): (r["limit"], r["admitted"], r["remaining"])
                for r in self.ok("quotas", *options)}

    def registry(self) -> Any:
        return build_registry(Settings(database_url=self.database_url))

    def log(self) -> list[Any]:
        registry = self.registry()
        try:
            return list(registry.read_log(AUDITOR))
        finally:
            registry.close()


@pytest.fixture
def gnlc(database_url: str, tmp_path: Path) -> Gnlc:
    return Gnlc(database_url, tmp_path)


@pytest.fixture
def imported(gnlc: Gnlc) -> dict[str, Any]:
    """The history file imported once; the summary it gave."""
    return gnlc.import_history(gnlc.csv(HISTORY))


def _noon(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time(12), BERLIN)


# --- the summary ---------------------------------------------------------------------------------

def test_the_summary_counts_the_imported_rows_and_lists_the_refused_ones_by_line(
    imported: dict[str, Any]
) -> None:
    assert (imported["imported"], imported["skipped"]) == (IMPORTED, 0)
    assert {r["line"]: r["city"] for r in imported["refused"]} == REFUSED_LINES
    assert [r["line"] for r in imported["refused"]] == sorted(REFUSED_LINES)
    assert all(set(r) == {"line", "city", "country", "reason"} for r in imported["refused"])
    # the country as the file wrote it, so that the operator can find the row
    assert {r["line"]: r["country"] for r in imported["refused"]}[7] == "Korea"


def test_a_country_name_that_names_no_country_alone_is_refused_with_its_line(
    imported: dict[str, Any]
) -> None:
    korea = next(r for r in imported["refused"] if r["line"] == 7)
    assert "unknown country 'Korea'" in korea["reason"]


def test_a_row_that_leaves_before_it_was_admitted_is_refused_with_its_line(
    imported: dict[str, Any]
) -> None:
    limerick = next(r for r in imported["refused"] if r["line"] == 10)
    assert "left_on must not be before the admission" in limerick["reason"]


def test_rows_over_the_quota_from_2018_10_01_on_are_refused_as_quota_exhausted(
    imported: dict[str, Any]
) -> None:
    reasons = {r["line"]: r["reason"] for r in imported["refused"]}
    assert reasons[16].startswith("quota_exhausted: ")
    assert "CN has used 3 of 3 places of intake year 2019" in reasons[16]
    # four German admissions before the regulations count against the fifth, made under them
    assert reasons[17].startswith("quota_exhausted: ")
    assert "DE has used 4 of 3 places of intake year 2018" in reasons[17]


def test_rows_dated_after_today_are_refused_but_a_row_dated_today_comes_in(
    gnlc: Gnlc, imported: dict[str, Any]
) -> None:
    reasons = {r["line"]: r["reason"] for r in imported["refused"]}
    for line in (28, 30, 31):  # 31 December of this year; tomorrow; leaving next week
        assert "dated after today (2026-11-26)" in reasons[line]
    assert gnlc.members()["Bonn (DE)"] == {"status": "active", "admitted_on": "2026-11-26",
                                           "intake_year": 2026, "periods": 1, "ended_on": None}
    assert not {"Hamburg (DE)", "Berlin (DE)", "Dublin (IE)"} & set(gnlc.members())


def test_without_json_the_import_shows_a_progress_bar_and_a_summary(gnlc: Gnlc) -> None:
    result = gnlc("import", "history", gnlc.csv(HISTORY[:3]), as_json=False)
    assert result.exit_code == 0, result.output
    assert "importing history.csv" in result.stderr and "100%" in result.stderr
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["imported", "3"], ["skipped", "0"], ["refused", "[]"]]


# --- the events ----------------------------------------------------------------------------------

def test_imported_events_have_source_import_the_historical_date_and_a_recorded_time_of_now(
    gnlc: Gnlc
) -> None:
    before = datetime.now(UTC)
    summary = gnlc.import_history(gnlc.csv(HISTORY))
    after = datetime.now(UTC)
    assert summary["imported"] == IMPORTED
    log = gnlc.log()
    events = [r.event for r in log]
    assert {e.source for e in events} == {"import"}
    assert {e.clock_overridden for e in events} == {True}
    assert {e.actor["name"] for e in events} == {"uil-archivist"}
    assert {e.actor["role"] for e in events} == {"secretariat"}
    assert len({e.correlation_id for e in events}) == 1  # one import run
    assert all(before <= e.timestamp <= after for e in events)  # the real clock, not --now
    admissions = {(e.city, e.country, e.intake_year): e for e in events
                  if type(e).__qualname__ == "CityApplication.Imported"}
    assert len(admissions) == IMPORTED
    suwon = admissions[("Suwon", "KR", 2016)]
    assert suwon.effective_at == _noon("2016-12-31")
    assert (suwon.admitted_on, suwon.limit, suwon.regulation_version) == (
        date(2016, 12, 31), None, "pre-2018")
    assert suwon.source_url == SOURCE
    hangzhou = admissions[("Hangzhou", "CN", 2019)]
    assert hangzhou.effective_at == _noon("2019-12-31")
    assert (hangzhou.used_before, hangzhou.limit, hangzhou.regulation_version) == (2, 3, "2018")
    leipzig = admissions[("Leipzig", "DE", 2018)]
    assert leipzig.effective_at == _noon("2018-09-30")
    assert (leipzig.used_before, leipzig.limit, leipzig.regulation_version) == (3, None,
                                                                               "pre-2018")
    ended = {(e.originator_id, e.ended_on): e for e in events
             if type(e).__qualname__ == "City.MembershipEnded"}
    cork_left = next(e for (_, day), e in ended.items() if day == date(2020, 6, 30))
    assert (cork_left.reason, cork_left.note, cork_left.effective_at) == (
        "not_reporting", None, _noon("2020-06-30"))


def test_a_readmitted_city_ends_its_earlier_membership_the_day_before_as_lapsed(
    gnlc: Gnlc, imported: dict[str, Any]
) -> None:
    city_id = gnlc.ok("city-id", "BH", "Muharraq")["city_id"]
    history = gnlc.ok("history", city_id)
    assert [h["type"] for h in history if h["type"].startswith("City.")] == [
        "City.Registered", "City.MembershipStarted", "City.MembershipEnded",
        "City.MembershipStarted"]
    assert [h["type"] for h in history].count("CityApplication.Imported") == 2
    ended = next(h for h in history if h["type"] == "City.MembershipEnded")
    assert ended["data"]["reason"] == "other"
    assert ended["data"]["note"] == "lapsed, imported"
    assert ended["data"]["ended_on"] == "2024-09-09"
    assert datetime.fromisoformat(ended["effective_at"]) == _noon("2024-09-09")
    city = gnlc.ok("show", "city", city_id)
    assert [(m["period"], m["admitted_on"], m["ended_on"], m["intake_year"])
            for m in city["memberships"]] == [(1, "2019-12-31", "2024-09-09", 2019),
                                              (2, "2024-09-10", None, 2024)]
    assert city["status"] == "active"


def test_a_city_readmitted_after_it_left_keeps_the_end_it_had(
    gnlc: Gnlc, imported: dict[str, Any]
) -> None:
    cork = gnlc.ok("show", "city", gnlc.ok("city-id", "IE", "Cork")["city_id"])
    assert [(m["admitted_on"], m["ended_on"], m["end_reason"]) for m in cork["memberships"]] == [
        ("2015-12-31", "2020-06-30", "not_reporting"), ("2022-09-05", None, None)]
    ends = [h for h in gnlc.ok("history", cork["city_id"]) if h["type"] == "City.MembershipEnded"]
    assert [h["data"]["note"] for h in ends] == [None]


def test_a_readmission_while_an_earlier_membership_had_not_yet_ended_is_refused(
    gnlc: Gnlc
) -> None:
    summary = gnlc.import_history(gnlc.csv([
        ("Cork", "IE", "2015", "", "2020-06-30", "not_reporting"),
        ("Cork", "IE", "2019"),  # 2019-12-31: Cork was still a member until mid-2020
        ("Espoo", "FI", "2016", "2016-05-01", "2016-08-31"),
        ("Espoo", "FI", "2016", "2016-08-31"),  # back on the day it left
        ("Espoo", "FI", "2019", "2019-05-01"),  # back after it left: readmitted
    ]))
    assert (summary["imported"], [r["line"] for r in summary["refused"]]) == (3, [3, 5])
    assert all(r["reason"].startswith("invalid_transition: ") for r in summary["refused"])
    assert gnlc.members("--as-of", "2020-01-01")["Cork (IE)"] == {
        "status": "active", "admitted_on": "2015-12-31", "intake_year": 2015, "periods": 1,
        "ended_on": None}
    assert gnlc.members()["Espoo (FI)"]["periods"] == 2


# --- a second import -----------------------------------------------------------------------------

def test_importing_the_same_file_again_changes_nothing(
    gnlc: Gnlc, imported: dict[str, Any]
) -> None:
    log = gnlc.log()
    members, quotas = gnlc.members(), gnlc.quotas()
    again = gnlc.import_history(gnlc.csv(HISTORY))
    assert (again["imported"], again["skipped"]) == (0, IMPORTED)
    assert again["refused"] == imported["refused"]
    after = gnlc.log()
    assert (len(after), after[-1].position) == (len(log), log[-1].position)
    assert (gnlc.members(), gnlc.quotas()) == (members, quotas)


def test_a_later_file_with_one_more_row_imports_only_that_row(
    gnlc: Gnlc, imported: dict[str, Any]
) -> None:
    summary = gnlc.import_history(gnlc.csv([*HISTORY, ("Kaunas", "Lithuania", "2025")],
                                           name="more.csv"))
    assert (summary["imported"], summary["skipped"]) == (1, IMPORTED)
    assert gnlc.members()["Kaunas (LT)"]["admitted_on"] == "2025-12-31"


# --- the projections and the queries for past dates ----------------------------------------------

KOREA_2016 = {f"{name} (KR)" for name in ("Suwon", "Gunpo", "Namyangju", "Osan", "Siheung")}
UN_STYLE = {"Shiraz (IR)", "Hanoi (VN)", "Bristol (GB)", "Abidjan (CI)", "Eindhoven (NL)",
            "Izmir (TR)"}


def test_as_of_the_day_before_an_admission_the_city_is_not_yet_a_member(
    gnlc: Gnlc, imported: dict[str, Any]
) -> None:
    assert set(gnlc.members("--as-of", "2016-12-30")) == {"Cork (IE)"}
    on_the_day = gnlc.members("--as-of", "2016-12-31")
    assert set(on_the_day) == {"Cork (IE)"} | KOREA_2016
    assert on_the_day["Suwon (KR)"] == {"status": "active", "admitted_on": "2016-12-31",
                                        "intake_year": 2016, "periods": 1, "ended_on": None}


def test_as_of_mid_2020_the_members_are_those_admitted_and_not_yet_left(
    gnlc: Gnlc, imported: dict[str, Any]
) -> None:
    members = gnlc.members("--as-of", "2020-06-30")
    assert set(members) == (
        {"Cork (IE)", "Muharraq (BH)", "Wuhan (CN)", "Chengdu (CN)", "Hangzhou (CN)",
         "Bremen (DE)", "Munich (DE)", "Cologne (DE)", "Leipzig (DE)"} | KOREA_2016)
    assert members["Cork (IE)"] == {"status": "ended", "admitted_on": "2015-12-31",
                                    "intake_year": 2015, "periods": 1, "ended_on": "2020-06-30"}
    assert gnlc.members("--as-of", "2020-06-29")["Cork (IE)"]["status"] == "active"
    assert members["Leipzig (DE)"]["admitted_on"] == "2018-09-30"
    active = gnlc.ok("members", "--as-of", "2020-06-30")  # the default: active members only
    assert {f"{r['name']} ({r['country']})" for r in active} == set(members) - {"Cork (IE)"}


def test_as_of_the_day_before_a_readmission_the_earlier_membership_has_ended(
    gnlc: Gnlc, imported: dict[str, Any]
) -> None:
    assert gnlc.members("--as-of", "2024-09-08")["Muharraq (BH)"] == {
        "status": "active", "admitted_on": "2019-12-31", "intake_year": 2019, "periods": 1,
        "ended_on": None}
    assert gnlc.members("--as-of", "2024-09-09")["Muharraq (BH)"] == {
        "status": "ended", "admitted_on": "2019-12-31", "intake_year": 2019, "periods": 1,
        "ended_on": "2024-09-09"}
    assert gnlc.members("--as-of", "2024-09-10")["Muharraq (BH)"] == {
        "status": "active", "admitted_on": "2024-09-10", "intake_year": 2024, "periods": 2,
        "ended_on": None}


def test_quotas_as_of_past_dates_count_the_imported_admissions_of_each_intake_year(
    gnlc: Gnlc, imported: dict[str, Any]
) -> None:
    assert gnlc.quotas("--as-of", "2016-12-31") == {
        ("IE", 2015): (None, 1, None), ("KR", 2016): (None, 5, None)}
    assert gnlc.quotas("--as-of", "2018-09-29")[("DE", 2018)] == (3, 3, 0)
    # the limit shown is the one in force on the last day of the intake year
    assert gnlc.quotas("--as-of", "2018-09-30")[("DE", 2018)] == (3, 4, -1)
    assert gnlc.quotas("--as-of", "2019-12-31") == {
        ("IE", 2015): (None, 1, None), ("KR", 2016): (None, 5, None),
        ("DE", 2018): (3, 4, -1), ("BH", 2019): (3, 1, 2), ("CN", 2019): (3, 3, 0)}
    assert ("BH", 2024) not in gnlc.quotas("--as-of", "2024-09-09")
    assert gnlc.quotas("--as-of", "2024-09-10")[("BH", 2024)] == (3, 1, 2)


def test_the_projections_without_as_of_give_the_network_of_today(
    gnlc: Gnlc, imported: dict[str, Any]
) -> None:
    members = gnlc.members()
    assert set(members) == (
        {"Cork (IE)", "Muharraq (BH)", "Wuhan (CN)", "Chengdu (CN)", "Hangzhou (CN)",
         "Bremen (DE)", "Munich (DE)", "Cologne (DE)", "Leipzig (DE)", "Bonn (DE)"}
        | KOREA_2016 | UN_STYLE)
    assert {name for name, m in members.items() if m["status"] == "ended"} == set()
    assert members["Cork (IE)"] == {"status": "active", "admitted_on": "2022-09-05",
                                    "intake_year": 2022, "periods": 2, "ended_on": None}
    assert members["Muharraq (BH)"]["periods"] == 2
    assert gnlc.quotas() == {
        ("IE", 2015): (None, 1, None), ("KR", 2016): (None, 5, None),
        ("DE", 2018): (3, 4, -1), ("BH", 2019): (3, 1, 2), ("CN", 2019): (3, 3, 0),
        **{(code, 2020): (3, 1, 2) for code in ("IR", "VN", "GB", "CI", "NL", "TR")},
        ("IE", 2022): (3, 1, 2), ("BH", 2024): (3, 1, 2), ("DE", 2026): (3, 1, 2)}
    applications = gnlc.ok("applications", "--json")
    assert len(applications) == IMPORTED
    assert {a["status"] for a in applications} == {"admitted"}
    # the replay up to today and the stored projections agree
    assert gnlc.members("--as-of", "2026-11-26") == members
    assert gnlc.quotas("--as-of", "2026-11-26") == gnlc.quotas()


def test_known_at_a_moment_before_the_import_the_registry_knew_of_no_member(
    gnlc: Gnlc
) -> None:
    before = datetime.now(UTC).isoformat()
    gnlc.import_history(gnlc.csv(HISTORY))
    assert gnlc.members("--known-at", before) == {}
    assert set(gnlc.members("--known-at", datetime.now(UTC).isoformat())) == set(
        gnlc.members())


# --- files that are refused as a whole -----------------------------------------------------------

@pytest.mark.parametrize(("columns", "message"), [
    ((*COLUMNS, "mayor"), "unknown column 'mayor'"),
    (("city", "country", "year_joined", "year"), "unknown column 'year'"),
    (("city", "country", "admitted_on"), "lacks the column 'year_joined'"),
    (("city", "year_joined"), "lacks the column 'country'"),
    (("City", "Country", "Year_joined"), "lacks the column 'city'"),
])
def test_a_file_with_an_unknown_or_missing_column_is_refused_whole_and_writes_nothing(
    gnlc: Gnlc, imported: dict[str, Any], columns: tuple[str, ...], message: str
) -> None:
    before = gnlc.log()
    path = gnlc.csv([("Kaunas", "LT", "2025", "", "")], name="bad.csv", columns=columns)
    result = gnlc("import", "history", path)
    assert result.exit_code == 2, result.output
    error = json.loads(result.stderr)["error"]
    assert (error["code"], error["field"]) == ("invalid_input", "file")
    assert message in error["message"]
    after = gnlc.log()
    assert (len(after), after[-1].position) == (len(before), before[-1].position)


def test_a_missing_file_is_invalid_input(gnlc: Gnlc) -> None:
    result = gnlc("import", "history", str(gnlc.tmp_path / "nowhere.csv"))
    assert result.exit_code == 2
    assert json.loads(result.stderr)["error"]["field"] == "file"


def test_only_the_required_columns_are_enough(gnlc: Gnlc) -> None:
    path = gnlc.csv([("2025", "Kaunas", "Lithuania")], columns=("year_joined", "city", "country"))
    assert gnlc.import_history(path) == {"imported": 1, "skipped": 0, "refused": []}
    assert gnlc.members()["Kaunas (LT)"]["admitted_on"] == "2025-12-31"


# --- countries as the UN writes them (no database) -----------------------------------------------

def test_every_un_member_and_observer_state_name_maps_to_its_code() -> None:
    assert len(UN_NAMES) == 195 and len(set(UN_NAMES.values())) == 195
    for name, code in UN_NAMES.items():
        assert pycountry.countries.get(alpha_2=code) is not None, code
        assert country_code(name) == code, name
        assert country_code(name.upper()) == code, name
        assert country_code(f"  {name} ") == code, name


def test_every_un_name_is_accepted_in_a_history_row() -> None:
    for name, code in UN_NAMES.items():
        row = parse(HistoryRow, {"city": "Capital", "country": name, "year_joined": 2016})
        assert row.country == code, name


def test_the_two_koreas_are_told_apart_and_korea_alone_is_refused() -> None:
    assert country_code("Republic of Korea") == "KR"
    assert country_code("Democratic People's Republic of Korea") == "KP"
    assert country_code("Democratic People\u2019s Republic of Korea") == "KP"
    for near_miss in ("Korea", "korea", "Corea", "Congo, Republic", "Macedonia"):
        with pytest.raises(InvalidInput):
            country_code(near_miss)


def test_a_history_row_defaults_to_31_december_of_its_year_joined() -> None:
    row = parse(HistoryRow, {"city": "Suwon", "country": "KR", "year_joined": "2016"})
    assert (row.admitted, row.left_on, row.end_reason) == (date(2016, 12, 31), None, "other")
    dated = parse(HistoryRow, {"city": "Suwon", "country": "KR", "year_joined": "2016",
                               "admitted_on": "2016-08-01"})
    assert dated.admitted == date(2016, 8, 1)
    with pytest.raises(InvalidInput):
        parse(HistoryRow, {"city": "Suwon", "country": "KR", "year_joined": "2016",
                           "left_reason": "other"})
