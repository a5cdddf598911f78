"""The console over plain HTTP (no browser): sessions, CSRF, the catalogue, the schema."""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx

from domain.acts import Role
from infrastructure.console.catalogue import message_ids
from infrastructure.console.i18n import negotiate, translations
from infrastructure.console.worldmap import shapes

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def signed_in(api: Any, role: Role = Role.SECRETARIAT, **scope: Any) -> httpx.Client:
    token = api.token(f"console-{role}", role, **scope)
    client = api.client()
    page = client.get("/")
    answer = client.post("/console/sign-in",
                         data={"csrf": CSRF.search(page.text).group(1), "token": token})
    assert answer.status_code == 303, answer.text
    return client


def test_the_sign_in_page_is_the_root_and_needs_no_token(api: Any) -> None:
    page = api.client().get("/")
    assert page.status_code == 200
    assert 'name="token"' in page.text and page.headers["content-type"].startswith("text/html")


def test_sign_in_gives_an_httponly_samesite_strict_session_cookie_not_the_token(api: Any
                                                                               ) -> None:
    token = api.token("uil", Role.SECRETARIAT)
    client = api.client()
    page = client.get("/")
    answer = client.post("/console/sign-in",
                         data={"csrf": CSRF.search(page.text).group(1), "token": token})
    cookie = next(h for h in answer.headers.get_list("set-cookie")
                  if h.startswith("gnlc_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    secret = token.split("_", 2)[2]  # gnlc_<hex id>_<secret>; the secret may contain "_"
    assert secret not in cookie
    assert client.get("/console/members").status_code == 200


def test_a_wrong_token_is_refused_in_the_page_and_starts_no_session(api: Any) -> None:
    client = api.client()
    page = client.get("/")
    answer = client.post("/console/sign-in", data={
        "csrf": CSRF.search(page.text).group(1), "token": "gnlc_0000_nope"})
    assert answer.status_code == 401
    assert "unknown or revoked" in answer.text
    assert client.get("/console/members").status_code == 303


def test_sign_in_without_its_csrf_cookie_is_refused(api: Any) -> None:
    token = api.token("uil", Role.SECRETARIAT)
    answer = api.client().post("/console/sign-in", data={"csrf": "forged", "token": token})
    assert answer.status_code == 403


def test_signing_out_ends_the_session_on_the_server(api: Any) -> None:
    client = signed_in(api)
    session = client.cookies["gnlc_session"]
    page = client.get("/console/members")
    client.post("/console/sign-out", data={"csrf": CSRF.search(page.text).group(1)})
    replayed = api.client()
    replayed.cookies.set("gnlc_session", session)
    assert replayed.get("/console/members").status_code == 303


def test_a_page_without_a_session_sends_the_browser_to_sign_in(api: Any) -> None:
    answer = api.client().get("/console/quotas")
    assert answer.status_code == 303 and answer.headers["location"] == "/?expired=1"


def test_console_routes_are_not_in_the_api_schema(api: Any) -> None:
    paths = api.client().get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/console")]


def test_the_deadlines_csv_is_what_the_page_shows(api: Any) -> None:
    client = signed_in(api)
    answer = client.get("/console/deadlines?view=all&format=csv")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.text.splitlines()[0].startswith("city_id,name,country,period,cycle,due")


def test_the_language_is_the_switchs_else_the_browsers_first_known_one() -> None:
    assert negotiate(None, "de-DE,fr;q=0.8,en;q=0.5") == "fr"
    assert negotiate(None, "es") == "en"
    assert negotiate("en", "fr-FR") == "en"
    assert negotiate(None, None) == "en"


def test_every_message_of_the_console_has_its_french_translation() -> None:
    french = translations("fr")
    untranslated = [m for m in message_ids() if french.gettext(m) == m and m not in (
        "Console", "Quota", "Jury", "Audit", "Actions", "Motivation", "Cycle", "Organisation",
        "Quotas", "active", "Pages")]
    assert untranslated == []


def test_the_map_draws_the_countries_of_natural_earth_with_their_iso_codes() -> None:
    codes = {shape.code for shape in shapes()}
    assert {"DE", "FR", "MA", "KR", "BR", "RU", "US", "FJ"} <= codes
    assert len(codes) > 160


def test_the_language_switch_sets_its_cookie_and_returns_only_to_a_page_of_this_server(
        api: Any) -> None:
    client = api.client()
    answer = client.get("/console/language", params={"to": "fr", "next": "/console/quotas"})
    assert answer.headers["location"] == "/console/quotas"
    assert "gnlc_lang=fr" in answer.headers["set-cookie"]
    assert "Jeton d'accès" in client.get("/").text
    for elsewhere in ("//evil.example", "/\\evil.example", "https://evil.example"):
        answer = client.get("/console/language", params={"to": "en", "next": elsewhere})
        assert answer.headers["location"] == "/"


def test_the_quotas_page_shows_the_years_window_and_its_extensions(api: Any) -> None:
    from datetime import date

    from domain.acts import Actor

    operator = Actor("operator", Role.SECRETARIAT)
    api.registry.open_intake(operator, 2019)
    api.registry.extend_intake(operator, 2019, date(2019, 6, 30), "COVID-19")
    client = signed_in(api)
    page = client.get("/console/quotas?year=2019").text
    assert "Intake window: Mar 1, 2019 to Jun 30, 2019" in page
    assert "Extended to Jun 30, 2019: COVID-19" in page


VERIFY_TIMEOUT = 60.0
PROGRESS = re.compile(r'class="progress">Checked (\d+) of (\d+) positions')


def verification_once_done(client: httpx.Client) -> str:
    """The verification fragment, polled as the page does until it shows a verdict."""
    waited, pause = 0.0, 0.05
    while waited < VERIFY_TIMEOUT:
        fragment = client.get("/console/audit/verification")
        assert fragment.status_code == 200, fragment.text
        if 'class="ok verdict"' in fragment.text or 'class="error verdict"' in fragment.text:
            return fragment.text
        threading.Event().wait(pause)  # waiting on a condition (the verdict), with a timeout
        waited += pause
    raise AssertionError(f"no verdict within {VERIFY_TIMEOUT} s: {fragment.text}")


def test_the_audit_page_verifies_in_the_background_and_polls_checked_of_total_to_a_verdict(
        api: Any) -> None:
    from tests.conftest import SECRETARIAT, admitted_city

    api.registry.open_intake(SECRETARIAT, 2019)
    for city in ("Hamburg", "Bremen"):
        admitted_city(api.registry, city)
    client = signed_in(api, Role.AUDITOR)  # issuing its token is an event too
    head = api.registry.recorder.max_notification_id()
    page = client.get("/console/audit")

    started = client.post("/console/audit/verify", data={"csrf": CSRF.search(page.text).group(1)})

    assert started.status_code == 200
    assert 'hx-get="/console/audit/verification"' in started.text or "verdict" in started.text
    done = verification_once_done(client)
    assert PROGRESS.search(done).groups() == (str(head), str(head))
    assert 'class="ok verdict"' in done and f"@{head}</code>" in done
    assert "hx-trigger" not in done  # the page stops polling once the verdict is in


def test_a_role_without_audit_rights_can_neither_start_nor_follow_a_verification(
        api: Any) -> None:
    client = signed_in(api, Role.NATIONAL_COMMISSION, country="DE")
    page = client.get("/console/members")

    started = client.post("/console/audit/verify", data={"csrf": CSRF.search(page.text).group(1)})

    assert started.status_code == 403
    assert client.get("/console/audit/verification").status_code == 403


def test_a_second_click_while_a_verification_runs_shows_the_running_one() -> None:
    from infrastructure.audit.log import Head, StoredLog, Verdict
    from infrastructure.console.verification import Verifications

    reported, release, calls = threading.Event(), threading.Event(), []

    def held(log: StoredLog, progress: Any) -> Verdict:
        calls.append(log)
        progress(3, 10)
        reported.set()
        assert release.wait(VERIFY_TIMEOUT)
        progress(10, 10)
        return Verdict(True, 10, Head(10, "0" * 64), None)

    verifications = Verifications(None, held)  # type: ignore[arg-type]
    verifications.start()
    assert reported.wait(VERIFY_TIMEOUT)

    second = verifications.start()

    assert (second.checked, second.total, second.running) == (3, 10, True)
    release.set()
    for _ in range(int(VERIFY_TIMEOUT / 0.01)):  # waiting on the verdict, with a timeout
        latest = verifications.latest()
        if latest is not None and not latest.running:
            break
        threading.Event().wait(0.01)
    assert len(calls) == 1 and latest is not None and latest.verdict is not None
    assert (latest.checked, latest.total) == (10, 10)
