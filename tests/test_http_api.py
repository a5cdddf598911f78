"""The HTTP API over a real socket (SQLite and PostgreSQL): every endpoint, its refusals as
RFC 9457 problems, the request limits, the actors it records, and idempotency keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest

from domain.access import AccessToken
from domain.acts import Role
from domain.cities import city_id
from infrastructure.http.limits import MAX_BODY_BYTES
from infrastructure.settings import Settings
from tests.conftest import AUDITOR, SettableClock, application_form, progress_report
from tests.http_support import Network, network, ok, refused
from tests.live_server import OPERATOR, LiveServer, live_server

HAMBURG = city_id("DE", "Hamburg")


@pytest.fixture
def net(api: LiveServer) -> Iterator[Network]:
    yield from network(api)


@pytest.fixture
def opened(net: Network) -> Network:
    """The 2019 intake is open (1 March to 30 April); the business clock is 15 March 2019."""
    net.open_intake(2019)
    return net


def test_the_probes_answer_without_a_token(api: LiveServer) -> None:
    with api.client() as anonymous:
        assert ok(anonymous.get("/health")) == {"status": "ok"}
        ready = ok(anonymous.get("/ready"))
    assert ready["ready"] is True
    assert set(ready["projections"]) >= {"members", "quotas", "applications"}
    for state in ready["projections"].values():
        assert state["lag_seconds"] >= 0


# --- intakes ---------------------------------------------------------------------------------

def test_the_secretariat_opens_an_intake_with_the_default_window(net: Network) -> None:
    written = net.open_intake(2019)
    assert {k: written[k] for k in ("year", "opens", "closes")} == {
        "year": 2019, "opens": "2019-03-01", "closes": "2019-04-30"}
    assert isinstance(written["position"], int)


def test_the_secretariat_extends_an_open_intake_with_a_reason(opened: Network) -> None:
    extended = ok(opened.staff.post("/intakes/2019/extensions",
                                    json={"closes": "2019-06-30", "reason": "COVID-19"}))
    assert extended["closes"] == "2019-06-30"
    assert extended["opens"] == "2019-03-01"


def test_opening_an_intake_twice_is_an_invalid_transition(opened: Network) -> None:
    refused(opened.staff.post("/intakes", json={"year": 2019}), 409, "invalid_transition")


def test_extending_an_intake_that_was_never_opened_is_not_found(opened: Network) -> None:
    refused(opened.staff.post("/intakes/2020/extensions",
                              json={"closes": "2020-06-30", "reason": "late"}), 404, "not_found")


# --- applications ----------------------------------------------------------------------------

def test_a_city_submits_its_application_and_reads_it_back(opened: Network,
                                                          api: LiveServer) -> None:
    submitted = opened.submit("Hamburg")
    assert submitted["city_id"] == str(HAMBURG)
    application = ok(opened.staff.get(f"/applications/{submitted['application_id']}"))
    assert application["status"] == "submitted"
    assert application["city"] == "Hamburg"
    assert application["intake_year"] == 2019
    assert application["form"]["motivation"] == "Lifelong learning for all."


def test_an_application_is_endorsed_admitted_and_makes_the_city_a_member(
        opened: Network) -> None:
    submitted = opened.submit("Hamburg")
    application_id = submitted["application_id"]
    endorsed = ok(opened.commission("DE").post(f"/applications/{application_id}/endorsement",
                                               json={}))
    assert endorsed["status"] == "endorsed"
    admitted = ok(opened.staff.post(f"/applications/{application_id}/admission",
                                    json={"reason": "jury", "jury": "recommended"}))
    assert admitted["status"] == "admitted"
    assert admitted["city_id"] == str(HAMBURG)
    assert admitted["quota"] == {"country": "DE", "year": 2019, "used": 1, "limit": 3}
    city = ok(opened.staff.get(f"/cities/{HAMBURG}"))
    assert city["status"] == "active"
    assert city["memberships"][0]["application_id"] == application_id
    assert ok(opened.staff.get(f"/applications/{application_id}"))["jury"] == "recommended"


def test_the_commission_declines_an_application_with_a_reason(opened: Network) -> None:
    application_id = opened.submit("Hamburg")["application_id"]
    declined = ok(opened.commission("DE").post(f"/applications/{application_id}/declination",
                                               json={"reason": "incomplete"}))
    assert declined == {**declined, "application_id": application_id, "status": "declined"}
    assert ok(opened.staff.get(f"/cities/{HAMBURG}"))["open_application_id"] is None


def test_a_city_withdraws_its_own_application(opened: Network) -> None:
    application_id = opened.submit("Hamburg")["application_id"]
    withdrawn = ok(opened.city("Hamburg").post(f"/applications/{application_id}/withdrawal",
                                               json={"reason": "not this year"}))
    assert withdrawn["status"] == "withdrawn"
    assert ok(opened.staff.get(f"/applications/{application_id}"))["status"] == "withdrawn"


def test_the_secretariat_rejects_an_endorsed_application(opened: Network) -> None:
    application_id = opened.endorse("Hamburg")["application_id"]
    rejected = ok(opened.staff.post(f"/applications/{application_id}/rejection",
                                    json={"reason": "jury", "jury": "not_recommended"}))
    assert rejected["status"] == "rejected"
    assert ok(opened.staff.get(f"/cities/{HAMBURG}"))["status"] == "applicant"


def test_the_secretariat_retracts_an_admission_and_frees_the_place(opened: Network) -> None:
    application_id = opened.admit("Hamburg")["application_id"]
    retracted = ok(opened.staff.post(f"/applications/{application_id}/retraction",
                                     json={"reason": "corrigendum"}))
    assert retracted["status"] == "retracted"
    quota = ok(opened.staff.get("/quotas", params={
        "country": "DE", "year": 2019, "min_position": retracted["position"]}))["items"]
    assert quota == [{"country": "DE", "year": 2019, "limit": 3, "admitted": 0,
                      "retracted": 1, "remaining": 3, "pending": 0}]


def test_a_member_reports_and_the_secretariat_ends_its_membership(
        opened: Network, clock: SettableClock) -> None:
    opened.admit("Hamburg")
    clock.set("2021-03-20 10:00")
    report = ok(opened.city("Hamburg").post(f"/cities/{HAMBURG}/reports",
                                            json=progress_report()), 201)
    assert report == {**report, "city_id": str(HAMBURG), "cycle": 1, "due": "2021-03-15",
                      "late": True}
    ended = ok(opened.staff.post(f"/cities/{HAMBURG}/membership-end",
                                 json={"reason": "withdrawn_by_city", "note": "by letter"}))
    assert ended == {**ended, "city_id": str(HAMBURG), "status": "ended"}
    city = ok(opened.staff.get(f"/cities/{HAMBURG}"))
    assert city["status"] == "ended"
    assert city["memberships"][0]["end_reason"] == "withdrawn_by_city"
    assert len(city["memberships"][0]["reports"]) == 1


def test_a_citys_history_lists_its_events_and_those_of_its_applications_in_log_order(
        opened: Network) -> None:
    opened.admit("Hamburg")
    history = ok(opened.staff.get(f"/cities/{HAMBURG}/history"))
    positions = [e["position"] for e in history]
    assert positions == sorted(positions)
    types = [e["type"] for e in history]
    assert "CityApplication.Submitted" in types
    assert "CityApplication.Endorsed" in types
    assert "CityApplication.Admitted" in types
    assert all(e["effective_at"] and e["recorded_at"] for e in history)


# --- queries ---------------------------------------------------------------------------------

def test_a_write_is_visible_to_a_query_given_its_position_as_min_position(
        opened: Network) -> None:
    submitted = opened.submit("Hamburg")
    rows = ok(opened.staff.get("/applications",
                               params={"min_position": submitted["position"]}))["items"]
    assert [r["application_id"] for r in rows] == [submitted["application_id"]]
    admitted = opened.admit("Lyon", "FR")
    members = ok(opened.staff.get("/members",
                                  params={"min_position": admitted["position"]}))["items"]
    assert [m["name"] for m in members] == ["Lyon"]


def test_a_min_position_beyond_the_head_of_the_log_is_invalid_input(opened: Network) -> None:
    refused(opened.staff.get("/members", params={"min_position": 10**9}), 422, "invalid_input",
            "min_position")


def test_the_application_list_filters_by_year_status_and_country(opened: Network) -> None:
    hamburg = opened.admit("Hamburg")
    opened.submit("Bremen")
    lyon = opened.endorse("Lyon", "FR")
    head = {"min_position": lyon["position"]}

    def listed(**filters: Any) -> list[str]:
        rows = ok(opened.staff.get("/applications", params={**head, **filters}))["items"]
        return sorted(r["city"] for r in rows)

    assert listed() == ["Bremen", "Hamburg", "Lyon"]
    assert listed(country="DE") == ["Bremen", "Hamburg"]
    assert listed(status="admitted") == ["Hamburg"]
    assert listed(status="endorsed", country="FR") == ["Lyon"]
    assert listed(year=2019, status="submitted") == ["Bremen"]
    assert listed(year=2020) == []
    row = ok(opened.staff.get("/applications", params={**head, "status": "admitted"}))["items"][0]
    assert row["application_id"] == hamburg["application_id"]
    assert row["admitted_on"] == "2019-03-15"


def test_members_are_listed_by_country_status_and_the_day_asked_about(
        opened: Network, clock: SettableClock) -> None:
    opened.admit("Hamburg")
    opened.admit("Lyon", "FR")
    clock.set("2019-04-02 09:00")
    ended = ok(opened.staff.post(f"/cities/{city_id('FR', 'Lyon')}/membership-end",
                                 json={"reason": "other"}))
    head = {"min_position": ended["position"]}
    active = ok(opened.staff.get("/members", params=head))["items"]
    assert [m["name"] for m in active] == ["Hamburg"]
    assert active[0] == {**active[0], "country": "DE", "admitted_on": "2019-03-15",
                         "intake_year": 2019, "next_report_due": "2021-03-15",
                         "reports_submitted": 0, "flagged_for_review": False}
    assert [m["name"] for m in ok(opened.staff.get(
        "/members", params={**head, "status": "ended"}))["items"]] == ["Lyon"]
    assert [m["name"] for m in ok(opened.staff.get(
        "/members", params={**head, "status": "all", "country": "FR"}))["items"]] == ["Lyon"]
    overdue = ok(opened.staff.get("/members", params={**head, "today": "2021-10-01"}))["items"]
    assert overdue[0]["days_overdue"] == 200
    assert overdue[0]["flagged_for_review"] is True


def test_members_as_of_a_past_day_show_the_network_as_it_stood_then(
        opened: Network, clock: SettableClock) -> None:
    opened.admit("Hamburg")
    clock.set("2019-04-02 09:00")
    opened.admit("Lyon", "FR")

    def as_of(day: str) -> list[str]:
        return [m["name"] for m in ok(opened.staff.get("/members", params={"as_of": day}))["items"]]

    assert as_of("2019-03-14") == []
    assert as_of("2019-03-15") == ["Hamburg"]
    assert as_of("2019-04-02") == ["Hamburg", "Lyon"]
    quotas = ok(opened.staff.get("/quotas", params={"as_of": "2019-03-31"}))["items"]
    assert [(q["country"], q["admitted"]) for q in quotas] == [("DE", 1)]


def test_members_known_at_a_past_moment_show_what_the_registry_had_recorded(
        opened: Network, api: LiveServer) -> None:
    endorsed = opened.endorse("Hamburg")
    before = datetime.now(UTC)
    ok(opened.staff.post(f"/applications/{endorsed['application_id']}/admission", json={}))
    after = datetime.now(UTC)

    def members(moment: datetime) -> list[str]:
        rows = ok(opened.staff.get("/members", params={"known_at": moment.isoformat()}))["items"]
        return [m["name"] for m in rows]

    assert members(before) == []
    assert members(after) == ["Hamburg"]


def test_known_at_never_shows_half_of_a_transaction(opened: Network, api: LiveServer) -> None:
    opened.admit("Hamburg")
    # The events of one save carry slightly different timestamps; a moment between them is
    # before the transaction was recorded, so none of it is known yet.
    admitted_at = next(r.event.timestamp for r in api.registry.read_log(AUDITOR)
                       if type(r.event).__qualname__ == "CityApplication.Admitted")
    moment = {"known_at": admitted_at.isoformat()}
    assert ok(opened.staff.get("/members", params=moment))["items"] == []
    quotas = ok(opened.staff.get("/quotas", params=moment))["items"]
    assert all(row["admitted"] == 0 for row in quotas)


def test_known_at_without_a_utc_offset_is_invalid_input(opened: Network) -> None:
    refused(opened.staff.get("/members", params={"known_at": "2019-03-15T12:00:00"}), 422,
            "invalid_input", "known_at")


def test_quotas_count_the_admissions_of_a_country_and_year(opened: Network) -> None:
    opened.admit("Hamburg")
    opened.admit("Bremen")
    pending = opened.endorse("Köln")
    rows = ok(opened.staff.get("/quotas", params={
        "country": "DE", "year": 2019, "min_position": pending["position"]}))["items"]
    assert rows == [{"country": "DE", "year": 2019, "limit": 3, "admitted": 2, "retracted": 0,
                     "remaining": 1, "pending": 1}]
    assert ok(opened.staff.get("/quotas", params={
        "year": 2020, "min_position": pending["position"]}))["items"] == []


def test_deadlines_are_listed_against_the_day_asked_about(
        opened: Network, clock: SettableClock) -> None:
    opened.admit("Hamburg")
    opened.admit("Lyon", "FR")
    clock.set("2021-03-01 10:00")
    reported = ok(opened.city("Lyon", "FR").post(f"/cities/{city_id('FR', 'Lyon')}/reports",
                                                 json=progress_report()), 201)
    head = {"min_position": reported["position"]}
    rows = ok(opened.staff.get("/deadlines", params={**head, "today": "2021-04-01"}))["items"]
    by_city = {(r["name"], r["cycle"]): r for r in rows}
    assert by_city[("Hamburg", 1)]["due"] == "2021-03-15"
    assert by_city[("Hamburg", 1)]["status"] == "overdue"
    assert by_city[("Hamburg", 1)]["days_overdue"] == 17
    assert by_city[("Lyon", 1)]["submitted_on"] == "2021-03-01"
    overdue = ok(opened.staff.get("/deadlines", params={
        **head, "today": "2021-04-01", "overdue": "true"}))["items"]
    assert [(r["name"], r["cycle"]) for r in overdue] == [("Hamburg", 1)]
    assert ok(opened.staff.get("/deadlines", params={
        **head, "today": "2021-04-01", "country": "FR", "due_before": "2021-03-15"}))["items"] == []


# --- refusals as problems --------------------------------------------------------------------

def test_a_fourth_admission_of_one_country_in_2019_is_quota_exhausted(
        opened: Network, api: LiveServer) -> None:
    for name in ("Hamburg", "Bremen", "Köln"):
        opened.admit(name)
    fourth = opened.endorse("München")
    before = api.registry.count_events()
    problem = refused(opened.staff.post(f"/applications/{fourth['application_id']}/admission",
                                        json={}), 409, "quota_exhausted")
    assert problem["title"] and problem["detail"]
    assert api.registry.count_events() == before


def test_a_submission_after_the_window_closed_is_window_closed(
        opened: Network, clock: SettableClock, api: LiveServer) -> None:
    clock.set("2019-05-02 10:00")
    city = opened.city("Hamburg")
    before = api.registry.count_events()
    refused(city.post("/applications", json=application_form()), 409, "window_closed")
    assert api.registry.count_events() == before


def test_admitting_an_application_that_was_not_endorsed_is_refused(opened: Network) -> None:
    application_id = opened.submit("Hamburg")["application_id"]
    refused(opened.staff.post(f"/applications/{application_id}/admission", json={}), 409,
            "not_endorsed")


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/applications", application_form(city=""), "city"),
    ("/applications", application_form(country="XX"), "country"),
    ("/applications", {k: v for k, v in application_form().items() if k != "mayor"}, "mayor"),
    ("/applications", application_form(contact={"full_name": "G", "email": "no"}),
     "contact.email"),
    ("/applications", application_form(motivation="word " * 201), "motivation"),
    ("/intakes", {"year": "next"}, "year"),
    ("/intakes", {"year": 2020, "colour": "blue"}, "colour"),
    ("/intakes/2019/extensions", {"closes": "2019-06-30"}, "reason"),
    (f"/cities/{HAMBURG}/membership-end", {"reason": "bored"}, "reason"),
])
def test_a_bad_body_is_422_naming_the_offending_field(
        opened: Network, api: LiveServer, path: str, body: Any, field: str) -> None:
    client = opened.city("Hamburg") if path == "/applications" else opened.staff
    before = api.registry.count_events()
    refused(client.post(path, json=body), 422, "invalid_input", field)
    assert api.registry.count_events() == before


def test_an_id_that_is_not_a_uuid_is_422_naming_the_path_parameter(opened: Network) -> None:
    refused(opened.staff.get("/applications/not-a-uuid"), 422, "invalid_input",
            "application_id")
    refused(opened.staff.get("/cities/42/history"), 422, "invalid_input", "city_id")


def test_a_body_that_is_not_json_is_400(opened: Network, api: LiveServer) -> None:
    before = api.registry.count_events()
    response = opened.staff.post("/intakes", content=b'{"year": 2020,',
                                 headers={"Content-Type": "application/json"})
    refused(response, 400, "malformed_request")
    assert api.registry.count_events() == before


@pytest.mark.parametrize("path", [
    "/applications/{id}", "/cities/{id}", "/cities/{id}/history",
])
def test_reading_an_unknown_id_is_404(opened: Network, path: str) -> None:
    refused(opened.staff.get(path.format(id=uuid4())), 404, "not_found")


@pytest.mark.parametrize(("path", "body"), [
    ("/applications/{id}/endorsement", {}),
    ("/applications/{id}/admission", {}),
    ("/applications/{id}/retraction", {"reason": "r"}),
    ("/cities/{id}/reports", progress_report()),
    ("/cities/{id}/membership-end", {"reason": "other"}),
])
def test_acting_on_an_unknown_id_is_404_and_writes_nothing(
        opened: Network, api: LiveServer, path: str, body: Any) -> None:
    before = api.registry.count_events()
    refused(opened.staff.post(path.format(id=uuid4()), json=body), 404, "not_found")
    assert api.registry.count_events() == before


def test_a_body_over_256_kib_is_413_and_writes_nothing(opened: Network, api: LiveServer) -> None:
    city = opened.city("Hamburg")
    before = api.registry.count_events()
    huge = application_form(implementation="x" * (MAX_BODY_BYTES + 1))
    refused(city.post("/applications", json=huge), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"year": 2020, "padding": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b"x" * 1024
        yield b'"}'

    refused(opened.staff.post("/intakes", content=chunks(),
                              headers={"Content-Type": "application/json"}),
            413, "payload_too_large")
    assert api.registry.count_events() == before


def test_a_token_over_its_rate_gets_429_with_retry_after(
        database_url: str, clock: SettableClock) -> None:
    settings = Settings(database_url=database_url, rate_limit=1, rate_burst=2)
    with live_server(settings, clock) as server:
        eager = server.client(server.token("eager", Role.AUDITOR))
        calm = server.client(server.token("calm", Role.AUDITOR))
        with eager, calm:
            unknown = f"/cities/{uuid4()}"
            assert eager.get(unknown).status_code == 404  # the burst of two is allowed
            assert eager.get(unknown).status_code == 404
            # One request a second on average: a quick series soon runs over it.
            statuses = []
            for _ in range(20):
                response = eager.get(unknown)
                statuses.append(response.status_code)
                if response.status_code == 429:
                    break
            problem = refused(response, 429, "rate_limited")
            assert problem["detail"]
            assert int(response.headers["Retry-After"]) >= 1
            assert calm.get(unknown).status_code == 404  # the limit is per token


# --- authentication and actors ---------------------------------------------------------------

def test_every_event_written_over_http_records_the_tokens_name_role_and_source(
        opened: Network, api: LiveServer, clock: SettableClock) -> None:
    application_id = opened.admit("Hamburg")["application_id"]
    clock.set("2019-04-10 10:00")
    opened.staff.post("/intakes/2019/extensions", json={"closes": "2019-05-31", "reason": "r"})
    ok(opened.city("Hamburg").post(f"/cities/{HAMBURG}/reports", json=progress_report()), 201)
    expected = {
        "IntakeCalendar": ("uil-coordination", "secretariat"),
        "QuotaLedger": ("uil-coordination", "secretariat"),
        "CityApplication.Submitted": ("city-de-hamburg", "city"),
        "City.Registered": ("city-de-hamburg", "city"),
        "City.ApplicationLodged": ("city-de-hamburg", "city"),
        "CityApplication.Endorsed": ("commission-de", "national_commission"),
        "CityApplication.Admitted": ("uil-coordination", "secretariat"),
        "City.MembershipStarted": ("uil-coordination", "secretariat"),
        "City.ReportSubmitted": ("city-de-hamburg", "city"),
    }
    written = [r.event for r in api.registry.read_log(AUDITOR)
               if not isinstance(r.event, AccessToken.Event)]
    seen = set()
    for event in written:
        name = type(event).__qualname__
        key = name if name in expected else name.split(".")[0]
        assert key in expected, f"an event the test did not expect: {name}"
        seen.add(key)
        assert (event.actor["name"], event.actor["role"]) == expected[key], name
        assert event.source == "http", name
    assert seen == set(expected)
    history = ok(opened.staff.get(f"/cities/{HAMBURG}/history"))
    actors = {e["type"]: e["actor"] for e in history}
    assert actors["CityApplication.Endorsed"] == {"name": "commission-de",
                                                  "role": "national_commission"}
    assert actors["CityApplication.Submitted"] == {"name": "city-de-hamburg", "role": "city"}
    assert application_id in {e["data"].get("application_id") for e in history}


def test_requests_without_a_valid_token_are_401_with_a_bearer_challenge(api: LiveServer) -> None:
    for headers in ({}, {"Authorization": "Bearer nonsense"},
                    {"Authorization": f"Bearer gnlc_{uuid4().hex}_guessed"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = httpx.get(f"{api.url}/members", headers=headers)
        refused(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_revoked_token_is_refused_from_the_next_request(opened: Network,
                                                          api: LiveServer) -> None:
    auditor = opened.client("auditor", Role.AUDITOR)
    assert ok(auditor.get("/quotas"))["items"] == []
    api.registry.revoke_token(OPERATOR, "auditor", "left the team")
    refused(auditor.get("/quotas"), 401, "unauthenticated")
    commission = opened.commission("DE")
    application_id = opened.submit("Hamburg")["application_id"]
    api.registry.revoke_token(OPERATOR, "commission-de", "replaced")
    before = api.registry.count_events()
    refused(commission.post(f"/applications/{application_id}/endorsement", json={}), 401,
            "unauthenticated")
    assert api.registry.count_events() == before


# --- idempotency -----------------------------------------------------------------------------

def test_a_retry_with_the_same_key_and_body_returns_the_first_response_and_writes_nothing(
        opened: Network, api: LiveServer) -> None:
    key = {"Idempotency-Key": "submit-hamburg-1"}
    city = opened.city("Hamburg")
    first = city.post("/applications", json=application_form(), headers=key)
    assert first.status_code == 201
    after_first = api.registry.count_events()
    again = city.post("/applications", json=application_form(), headers=key)
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert api.registry.count_events() == after_first
    # Without the key, the same request is a new one (and here a duplicate application).
    refused(city.post("/applications", json=application_form()), 409, "duplicate_application")


def test_a_refusal_is_remembered_under_its_key_too(opened: Network, api: LiveServer) -> None:
    application_id = opened.submit("Hamburg")["application_id"]
    key = {"Idempotency-Key": "admit-hamburg"}
    path = f"/applications/{application_id}/admission"
    first = opened.staff.post(path, json={}, headers=key)
    refused(first, 409, "not_endorsed")
    ok(opened.commission("DE").post(f"/applications/{application_id}/endorsement", json={}))
    before = api.registry.count_events()
    again = opened.staff.post(path, json={}, headers=key)
    assert (again.status_code, again.json()) == (409, first.json())
    assert api.registry.count_events() == before


def test_the_same_key_with_a_different_body_is_422_and_writes_nothing(
        opened: Network, api: LiveServer) -> None:
    key = {"Idempotency-Key": "intake"}
    ok(opened.staff.post("/intakes", json={"year": 2020}, headers=key), 201)
    before = api.registry.count_events()
    refused(opened.staff.post("/intakes", json={"year": 2021}, headers=key), 422,
            "idempotency_key_reused", "Idempotency-Key")
    refused(opened.staff.post("/intakes/2020/extensions",
                              json={"closes": "2020-06-30", "reason": "r"}, headers=key),
            422, "idempotency_key_reused", "Idempotency-Key")
    assert api.registry.count_events() == before


def test_keys_belong_to_their_token(opened: Network, api: LiveServer) -> None:
    key = {"Idempotency-Key": "shared-key"}
    ok(opened.staff.post("/intakes", json={"year": 2020}, headers=key), 201)
    other = opened.client("uil-deputy", Role.SECRETARIAT)
    refused(other.post("/intakes", json={"year": 2020}, headers=key), 409,
            "invalid_transition")


def test_idempotency_keys_survive_a_restart_of_the_server(
        settings: Settings, clock: SettableClock) -> None:
    key = {"Idempotency-Key": "before-restart"}
    with live_server(settings, clock) as first:
        token = first.token("uil", Role.SECRETARIAT)
        with first.client(token) as staff:
            opened = ok(staff.post("/intakes", json={"year": 2019}, headers=key), 201)
        written = first.registry.count_events()
    with live_server(settings, clock) as second, second.client(token) as staff:
        again = staff.post("/intakes", json={"year": 2019}, headers=key)
        assert (again.status_code, again.json()) == (201, opened)
        assert second.registry.count_events() == written
        refused(staff.post("/intakes", json={"year": 2019}), 409, "invalid_transition")
