"""The staff console in a real Chromium (Debian's package, driven by Playwright): the intake walked
as each role would, on SQLite and PostgreSQL, with every page checked by axe-core and shot at
1280x800, and no request to any host but the server."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from domain.access import PERSONAL_DATA
from domain.acts import Actor, Role
from domain.cities import city_id
from infrastructure.settings import Settings
from tests.conftest import SettableClock, application_form
from tests.live_server import LiveServer, live_server

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parent.parent
AXE = Path(__file__).parent / "assets" / "axe.min.js"
ARTEFACTS = Path(os.environ.get("GNLC_TEST_ARTEFACTS", ROOT / "var" / "test-artefacts"))
DOCS = ROOT / "docs" / "console"
WAIT_MS = 15_000
OPERATOR = Actor("test-operator", Role.SECRETARIAT)


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and later tests that call asyncio.run() (the NATS relay, the head watcher)
# would fail after this module.
@pytest.fixture(scope="module")
def chromium(request: pytest.FixtureRequest) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if request.config.getoption("--require-chromium"):
            pytest.fail(f"chromium is required but missing at {CHROMIUM} "
                        "(apt-get install chromium)")
        pytest.skip(f"no chromium at {CHROMIUM}")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@dataclass
class Console:
    """Browser sessions against one server, recording every request and every page's check."""

    server: LiveServer
    browser: Any
    shots: Path
    backend: str
    requests: list[str] = field(default_factory=list)
    accessibility: dict[str, dict[str, int]] = field(default_factory=dict)
    contexts: list[Any] = field(default_factory=list)

    def sign_in(self, token: str, language: str = "en-GB",
                before: Callable[[Any], None] | None = None) -> Any:
        # bypass_csp: axe is injected as a script; the console's own CSP allows only 'self'.
        context = self.browser.new_context(viewport={"width": 1280, "height": 800},
                                           locale=language, bypass_csp=True)
        context.on("request", lambda r: self.requests.append(r.url))
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(self.server.url + "/")
        expect(page.get_by_label("Access token").or_(page.get_by_label("Jeton d'accès"))
               ).to_be_visible()
        if before is not None:
            before(page)
        page.locator("#token").fill(token)
        page.locator("form[action='/console/sign-in'] button").click()
        expect(page).to_have_url(self.server.url + "/console/members")
        return page

    def check(self, page: Any, name: str) -> None:
        """axe-core on the page as shown (no serious or critical violation), and a screenshot."""
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("""async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}));
        }""")
        counts: dict[str, int] = {}
        for violation in result:
            counts[violation["impact"] or "none"] = counts.get(violation["impact"] or "none", 0) + 1
        self.accessibility[name] = counts
        serious = [v for v in result if v["impact"] in ("serious", "critical")]
        assert not serious, f"{name}: {serious}"
        self.shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(self.shots / f"{name}.png"))


@pytest.fixture
def console(settings: Settings, clock: SettableClock, chromium: Any, database_url: str
            ) -> Iterator[Console]:
    backend = "postgres" if database_url.startswith("postgresql") else "sqlite"
    with live_server(settings, clock) as server:
        shots = ARTEFACTS / "console" / backend
        c = Console(server, chromium, shots, backend)
        try:
            yield c
        finally:
            for context in c.contexts:
                context.close()
        foreign = [u for u in c.requests if not u.startswith(server.url + "/")]
        assert c.requests and not foreign, foreign
        # axe's findings per page (impact: number of rules violated), kept across the tests.
        report = shots / "accessibility.json"
        found = json.loads(report.read_text()) if report.exists() else {}
        report.write_text(json.dumps({**found, **c.accessibility}, indent=2, sort_keys=True))
        # docs/console/ keeps the README's screenshots; refreshed on request, not on every run.
        if backend == "sqlite" and os.environ.get("GNLC_CONSOLE_DOCS_SCREENSHOTS"):
            DOCS.mkdir(parents=True, exist_ok=True)
            for shot in shots.glob("*.png"):
                shutil.copy(shot, DOCS / shot.name)


def submit_as_city(server: LiveServer, name: str, country: str = "DE") -> Any:
    actor = Actor(f"city-{name.lower()}", Role.CITY, city_id=city_id(country, name))
    return server.registry.submit_application(actor, application_form(name, country))


def test_the_intake_walked_as_each_role(console: Console, clock: SettableClock) -> None:
    server = console.server
    city_token = server.token("hamburg", Role.CITY, city=city_id("DE", "Hamburg"))
    commission_token = server.token("unesco-de", Role.NATIONAL_COMMISSION, country="DE")
    secretariat_token = server.token("uil", Role.SECRETARIAT, scopes=frozenset({PERSONAL_DATA}))
    auditor_token = server.token("auditor", Role.AUDITOR)
    url = server.url

    # The secretariat opens the intake of 2019 (the regulations' window: 1 March to 30 April).
    clock.set("2019-03-15 10:00")
    secretariat = console.sign_in(secretariat_token, before=lambda page: console.check(
        page, "sign-in"))
    console.check(secretariat, "members-empty")
    secretariat.get_by_role("link", name="Intakes").click()
    secretariat.get_by_label("Year", exact=True).fill("2019")
    secretariat.get_by_role("button", name="Open the intake").click()
    expect(secretariat.get_by_role("status")).to_contain_text("intake is open")
    expect(secretariat.locator("table")).to_contain_text("2019")
    console.check(secretariat, "intakes")

    # Hamburg applies, in the form of the console.
    city = console.sign_in(city_token)
    city.get_by_role("link", name="Applications").click()
    city.get_by_role("link", name="New application").click()
    console.check(city, "apply")
    city.get_by_label("City", exact=True).fill("Hamburg")
    city.get_by_label("Country (ISO code, two letters)").fill("DE")
    city.locator("#mayor-name").fill("Ada Mayor")
    city.locator("#contact-name").fill("Grace Contact")
    city.get_by_label("E-mail").fill("learning@example.org")
    city.get_by_label("Motivation (at most 200 words)").fill("Lifelong learning for all.")
    city.get_by_label("Implementation plan (at most 200 words)").fill("Festivals.")
    city.get_by_label("We pledge", exact=False).check()
    city.get_by_role("button", name="Submit the application").click()
    expect(city.locator(".status")).to_have_text("submitted")
    hamburg_page = city.url.split("?")[0]

    # Its National Commission endorses it.
    commission = console.sign_in(commission_token)
    commission.goto(hamburg_page)
    expect(commission.get_by_text("(masked)").first).to_be_visible()  # no personal_data scope
    console.check(commission, "application-commission")
    commission.get_by_role("button", name="Endorse").click()
    expect(commission.locator(".status")).to_have_text("endorsed")

    # Three more cities of Germany apply and are endorsed (through the use cases).
    others = {name: submit_as_city(server, name) for name in ("Munich", "Leipzig", "Dresden")}
    endorser = server.registry.authenticate(commission_token)
    for submission in others.values():
        server.registry.endorse(endorser, submission.application_id)

    # The secretariat admits three; the quota is shown before confirming; the fourth is refused.
    clock.set("2019-03-20 10:00")
    secretariat.goto(url + "/console/applications?year=2019")
    console.check(secretariat, "applications")
    admitted = [hamburg_page.rsplit("/", 1)[-1], *(str(others[n].application_id)
                                                    for n in ("Munich", "Leipzig"))]
    for number, application_id in enumerate(admitted):
        secretariat.goto(f"{url}/console/applications/{application_id}/admit")
        expect(secretariat.locator(".quota-line")).to_contain_text(f"Used: {number}")
        if number == 0:
            console.check(secretariat, "admit-confirm")
        secretariat.get_by_role("button", name="Confirm the admission").click()
        expect(secretariat.locator(".status")).to_have_text("admitted")
    console.check(secretariat, "application-secretariat")
    dresden = others["Dresden"].application_id
    secretariat.goto(f"{url}/console/applications/{dresden}/admit")
    expect(secretariat.locator(".quota-line")).to_contain_text("Left: 0")
    secretariat.get_by_role("button", name="Confirm the admission").click()
    expect(secretariat.get_by_role("alert")).to_contain_text("used 3 of 3 places")
    expect(secretariat.get_by_role("alert")).to_have_attribute("data-code", "quota_exhausted")
    expect(secretariat.locator(".status")).to_have_text("endorsed")  # nothing changed
    console.check(secretariat, "admit-refused")

    # The quota page, open in another tab, shows the place a retraction frees, without reload.
    quotas = secretariat.context.new_page()
    quotas.goto(url + "/console/quotas?year=2019")
    row = quotas.locator("tr[data-country='DE']")
    expect(row.locator(".used")).to_have_text("3")
    expect(row).to_have_class("at-limit")
    console.check(quotas, "quotas")
    quotas.evaluate("window.__notReloaded = true")
    secretariat.goto(f"{url}/console/applications/{others['Leipzig'].application_id}")
    secretariat.locator("#reason-retract").fill("corrigendum")
    secretariat.locator("form[action$='/retract'] button").click()
    expect(secretariat.locator(".status")).to_have_text("retracted")
    expect(row.locator(".used")).to_have_text("2")
    expect(row.locator(".left")).to_have_text("1")
    assert quotas.evaluate("window.__notReloaded") is True

    # Hamburg submits a progress report.
    clock.set("2019-04-02 10:00")
    city.goto(f"{url}/console/cities/{city_id('DE', 'Hamburg')}")
    city.get_by_label("Covering from").fill("2019-03-20")
    city.get_by_label("Covering to").fill("2019-04-01")
    city.get_by_label("Summary").fill("We opened ten community learning centres.")
    city.get_by_role("button", name="Submit the report").click()
    expect(city.get_by_role("status")).to_contain_text("report is submitted")
    expect(city.locator("table").nth(1)).to_contain_text("submitted")
    console.check(city, "city-by-city")

    # An auditor opens Hamburg's timeline as it stood before its admission.
    auditor = console.sign_in(auditor_token)
    auditor.goto(f"{url}/console/cities/{city_id('DE', 'Hamburg')}")
    expect(auditor.locator(".timeline")).to_contain_text("Admitted")
    auditor.get_by_label("As of").fill("2019-03-16")
    auditor.get_by_role("button", name="Show the city as it stood then").click()
    expect(auditor.locator(".status").first).not_to_have_text("active")
    expect(auditor.locator(".timeline")).to_contain_text("Endorsed")
    expect(auditor.locator(".timeline")).not_to_contain_text("Admitted")
    expect(auditor.locator("table").nth(1)).to_contain_text("No report cycle")
    console.check(auditor, "city-as-of")
    auditor.get_by_role("link", name="Audit").click()
    auditor.get_by_role("button", name="Verify the chain").click()
    expect(auditor.locator(".verdict")).to_contain_text("verifies")
    console.check(auditor, "audit")
    with auditor.expect_download() as download:
        auditor.get_by_role("link", name="Download a verifiable export").click()
    assert download.value.suggested_filename == "gnlc-audit-export.jsonl"

    for name, path in (("members", "/console/members"),
                       ("deadlines", "/console/deadlines?view=all")):
        secretariat.goto(url + path)
        console.check(secretariat, name)
    expect(secretariat.locator("table")).to_contain_text("Hamburg")
    with secretariat.expect_download() as download:
        secretariat.get_by_role("link", name="Download CSV").click()
    assert "Hamburg" in Path(download.value.path()).read_text()


def test_a_commission_neither_sees_nor_acts_on_another_countrys_applications(
        console: Console) -> None:
    server = console.server
    server.registry.open_intake(OPERATOR, 2019)
    hamburg = submit_as_city(server, "Hamburg")
    french = console.sign_in(server.token("unesco-fr", Role.NATIONAL_COMMISSION, country="FR"))
    french.goto(console.server.url + "/console/applications?year=2019")
    expect(french.locator(".pipeline")).not_to_contain_text("Hamburg")
    response = french.goto(f"{server.url}/console/applications/{hamburg.application_id}")
    assert response is not None and response.status == 403
    expect(french.get_by_role("alert")).to_contain_text("FR")
    console.check(french, "refused-other-country")
    # Nor can it post the endorsement by hand (with its own session's CSRF token).
    csrf = french.evaluate("document.querySelector('input[name=csrf]').value")
    answer = french.request.post(
        f"{server.url}/console/applications/{hamburg.application_id}/endorse",
        form={"csrf": csrf})
    assert answer.status == 403
    assert server.registry.application(OPERATOR, hamburg.application_id).status == "submitted"


def test_a_revoked_tokens_session_ends_on_its_next_request(console: Console) -> None:
    server = console.server
    page = console.sign_in(server.token("unesco-de", Role.NATIONAL_COMMISSION, country="DE"))
    server.registry.revoke_token(OPERATOR, "unesco-de", "left the commission")
    page.get_by_role("link", name="Quotas").click()
    expect(page).to_have_url(server.url + "/?expired=1")
    expect(page.get_by_role("status")).to_contain_text("session has ended")
    page.goto(server.url + "/console/members")
    expect(page).to_have_url(server.url + "/?expired=1")
    console.check(page, "signed-out")


def test_a_form_posted_without_the_sessions_csrf_token_changes_nothing(console: Console) -> None:
    server = console.server
    page = console.sign_in(server.token("uil", Role.SECRETARIAT))
    answer = page.request.post(server.url + "/console/intakes", form={"year": "2019"})
    assert answer.status == 403
    assert server.registry.intakes(OPERATOR) == []


def test_the_console_speaks_french_to_a_french_browser_and_switches_language(
        console: Console) -> None:
    server = console.server
    page = console.sign_in(server.token("uil", Role.SECRETARIAT), language="fr-FR")
    expect(page.locator("h1")).to_have_text("Membres")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    console.check(page, "members-fr")
    page.get_by_role("link", name="English").click()
    expect(page.locator("h1")).to_have_text("Members")
    page.get_by_role("link", name="Français").click()
    expect(page.locator("h1")).to_have_text("Membres")
    # Dates and country names in French, too.
    server.registry.open_intake(OPERATOR, 2019)
    submit_as_city(server, "Hamburg")
    page.get_by_role("link", name="Quotas").click()
    expect(page.locator(".window")).to_contain_text("1 mars 2019")
    expect(page.locator("tr[data-country='DE']")).to_contain_text("Allemagne")
    console.check(page, "quotas-fr")


def test_signing_in_and_moving_around_needs_only_the_keyboard(console: Console) -> None:
    server = console.server
    token = server.token("uil", Role.SECRETARIAT)
    context = console.browser.new_context(viewport={"width": 1280, "height": 800})
    console.contexts.append(context)
    context.on("request", lambda r: console.requests.append(r.url))
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(server.url + "/")
    for _ in range(3):  # the skip link, the language switch, the token field
        page.keyboard.press("Tab")
    expect(page.locator("#token")).to_be_focused()
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page).to_have_url(server.url + "/console/members")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # the first focusable element of the content: a country
    focused = page.evaluate("document.activeElement.closest('main') !== null")
    assert focused


def test_a_commission_declines_with_its_reason_and_a_refused_withdrawal_changes_nothing(
        console: Console) -> None:
    server = console.server
    server.registry.open_intake(OPERATOR, 2019)
    hamburg = submit_as_city(server, "Hamburg")
    page_url = f"{server.url}/console/applications/{hamburg.application_id}"
    commission = console.sign_in(server.token("unesco-de", Role.NATIONAL_COMMISSION,
                                              country="DE"))
    commission.goto(page_url)
    commission.get_by_label("Reason").fill("not a learning city yet")
    commission.get_by_role("button", name="Decline").click()
    expect(commission.locator(".status")).to_have_text("declined")
    expect(commission.locator(".steps")).to_contain_text("not a learning city yet")
    city = console.sign_in(server.token("hamburg", Role.CITY, city=city_id("DE", "Hamburg")))
    city.goto(page_url)
    city.get_by_label("Reason").fill("changed our mind")
    city.get_by_role("button", name="Withdraw").click()
    expect(city.get_by_role("alert")).to_have_attribute("data-code", "invalid_transition")
    expect(city.locator(".status")).to_have_text("declined")
    console.check(city, "withdrawal-refused")
    assert server.registry.application(OPERATOR, hamburg.application_id).status == "declined"


def test_an_auditor_verifies_the_audit_chain_and_sees_checked_of_total_then_the_verdict(
        console: Console) -> None:
    server = console.server
    server.registry.open_intake(OPERATOR, 2019)
    page = console.sign_in(server.token("auditor", Role.AUDITOR))
    head = server.registry.recorder.max_notification_id()
    page.get_by_role("link", name="Audit").click()
    page.get_by_role("button", name="Verify the chain").click()
    expect(page.locator(".verdict")).to_contain_text("verifies")
    expect(page.locator("#verification .progress")).to_have_text(
        f"Checked {head} of {head} positions.")
    expect(page.locator("#verification code.head")).to_contain_text(f"@{head}")
    console.check(page, "audit-verified")
