"""Personal data over HTTP and on the command line: contact updates, erasure, their refusals,
and every surface after an erasure (feed, stream, NATS, history, members as of a past day,
audit state and export). SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from typer.testing import CliRunner

from domain.access import PERSONAL_DATA
from domain.acts import Role
from domain.cities import city_id
from infrastructure.cli import app
from infrastructure.feed.nats_relay import NatsTarget
from infrastructure.settings import Settings
from tests.conftest import COMMISSION, SECRETARIAT, SettableClock, application_form
from tests.live_server import GNLC, LiveServer
from tests.test_console_pages import signed_in
from tests.test_masking import published, raw_feed, raw_stream, running_relay
from tests.test_personal_data import (
    CONTACT,
    MAYOR,
    NEW_CONTACT,
    PERSONAL,
    database_bytes,
    new_contact,
)

HAMBURG = city_id("DE", "Hamburg")
EVERYONE = frozenset({PERSONAL_DATA})


def private_form() -> dict[str, Any]:
    return application_form(
        "Hamburg", mayor={"title": "Dr", "full_name": MAYOR, "official_title": "First Mayor"},
        contact={**CONTACT, "official_title": "Head of Learning", "organisation": "City Hall"})


@pytest.fixture
def member(api: LiveServer, clock: SettableClock) -> UUID:
    """Hamburg applied over HTTP in 2019 and was admitted; its contact changed in 2020."""
    registry = api.registry
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    with api.client(api.token("city-hamburg", Role.CITY, city=HAMBURG)) as city:
        response = city.post("/applications", json=private_form())
        assert response.status_code == 201, response.text
        application_id = UUID(response.json()["application_id"])
    registry.endorse(COMMISSION, application_id)
    registry.admit(SECRETARIAT, application_id)
    clock.set("2020-06-01 09:00")
    with api.client(api.token("hamburg-office", Role.CITY, city=HAMBURG)) as city:
        response = city.post(f"/cities/{HAMBURG}/contacts", json=new_contact())
    assert response.status_code == 200, response.text
    assert response.json()["updated"] == ["contact"]
    assert leaked(response.text) == []  # the answer (kept for retries) names no one
    return HAMBURG


def leaked(text: str) -> list[str]:
    return [value for value in PERSONAL if value in text]


def members(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/members", params={"min_position": 0, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_the_members_view_shows_the_current_contact_to_those_who_may_read_it(
    api: LiveServer, member: UUID
) -> None:
    head = api.registry.recorder.max_notification_id()
    with api.client(api.token("staff", Role.SECRETARIAT, scopes=EVERYONE)) as staff:
        found = members(staff, min_position=head)
        assert found[0]["contacts"]["contact"]["email"] == NEW_CONTACT["email"]
        assert found[0]["contacts"]["mayor"]["full_name"] == MAYOR
        before = members(staff, as_of="2019-12-31")
        assert before[0]["contacts"]["contact"]["email"] == CONTACT["email"]
    with api.client(api.token("commission", Role.NATIONAL_COMMISSION, country="DE")) as nc:
        masked = members(nc, min_position=head)[0]["contacts"]
        assert (masked["contact"]["email"], masked["contact"]["organisation"]) == (
            None, "Learning Office")


@pytest.mark.parametrize(("role", "city", "body", "status", "field"), [
    (Role.NATIONAL_COMMISSION, None, new_contact(), 403, None),
    (Role.CITY, "other", new_contact(), 403, None),
    (Role.SECRETARIAT, "unknown", new_contact(), 404, None),
    (Role.SECRETARIAT, None, {}, 422, None),
    (Role.SECRETARIAT, None, {"contact": {**NEW_CONTACT, "email": "nowhere"}}, 422,
     "contact.email"),
])
def test_a_contact_update_over_http_is_refused_clearly_and_changes_nothing(
    api: LiveServer, member: UUID, role: Role, city: str | None, body: Any, status: int,
    field: str | None
) -> None:
    target = uuid.uuid4() if city == "unknown" else member
    acting_for = uuid.uuid4() if city == "other" else None
    version = api.registry.city(SECRETARIAT, member).version
    token = api.token(f"t-{uuid.uuid4().hex[:8]}", role,
                      country="DE" if role is Role.NATIONAL_COMMISSION else None,
                      city=acting_for if role is Role.CITY else None)
    with api.client(token) as client:
        response = client.post(f"/cities/{target}/contacts", json=body)
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["detail"]
    if field is not None:
        assert field in json.dumps(problem)
    assert api.registry.city(SECRETARIAT, member).version == version


@pytest.mark.parametrize(("role", "city", "body", "status"), [
    (Role.CITY, None, {"reason": "left office"}, 403),
    (Role.AUDITOR, None, {"reason": "left office"}, 403),
    (Role.SECRETARIAT, "unknown", {"reason": "left office"}, 404),
    (Role.SECRETARIAT, None, {"reason": ""}, 422),
    (Role.SECRETARIAT, None, {"reason": "left office", "persons": ["deputy"]}, 422),
])
def test_an_erasure_over_http_is_refused_clearly_and_changes_nothing(
    api: LiveServer, member: UUID, role: Role, city: str | None, body: Any, status: int
) -> None:
    target = uuid.uuid4() if city == "unknown" else member
    version = api.registry.city(SECRETARIAT, member).version
    token = api.token(f"t-{uuid.uuid4().hex[:8]}", role,
                      city=member if role is Role.CITY else None)
    with api.client(token) as client:
        response = client.post(f"/cities/{target}/personal-data/erasure", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert api.registry.city(SECRETARIAT, member).version == version


def test_after_an_erasure_no_surface_shows_the_persons_data_and_the_chain_still_verifies(
    api: LiveServer, member: UUID, clock: SettableClock, settings: Settings, nats_url: str,
    tmp_path: Path
) -> None:
    url = settings.database_url
    staff_token = api.token("staff", Role.SECRETARIAT, scopes=EVERYONE)
    reader_token = api.token("reader", Role.SUBSCRIBER)
    console = signed_in(api, Role.SECRETARIAT, scopes=EVERYONE)
    application = api.registry.city(SECRETARIAT, member).memberships[0].application_id
    pages = (f"/console/cities/{member}", f"/console/applications/{application}")
    assert all(MAYOR in console.get(page).text for page in pages)
    head_before = cli(url, "audit", "verify")["head"]
    with api.client(staff_token) as staff:
        assert MAYOR in raw_feed(staff, 100)  # readable before
        clock.set("2021-01-10 10:00")
        response = staff.post(f"/cities/{member}/personal-data/erasure",
                              json={"reason": "the mayor left office; the contact asked"})
        assert response.status_code == 200, response.text
        done = response.json()
        assert (done["recorded"], len(done["erased_key_ids"]), done["plaintext_events"]) == (
            True, 3, 0)
        again = staff.post(f"/cities/{member}/personal-data/erasure",
                           json={"reason": "again", "persons": ["mayor"]})
        assert again.status_code == 200, again.text
        assert (again.json()["recorded"], again.json()["erased_key_ids"]) == (False, [])
        assert "nothing to erase" in again.json()["message"]

        head = api.registry.recorder.max_notification_id()
        texts = {
            "/events": raw_feed(staff, 100),
            "/events/stream": raw_stream(staff, head),
            "history": staff.get(f"/cities/{member}/history").text,
            "members as of 2019": json.dumps(members(staff, as_of="2019-12-31")),
            "members": json.dumps(members(staff, min_position=head)),
            "audit state as of 2019": staff.get(f"/audit/cities/{member}",
                                                params={"as_of": "2019-12-31"}).text,
            **{page: console.get(page).text for page in pages},
        }
    assert {name: leaked(text) for name, text in texts.items()} == {
        name: [] for name in texts}
    assert '"erased":true' in texts["/events"].replace(" ", "")
    contacts = json.loads(texts["members"])[0]["contacts"]
    assert contacts["contact"]["erased"] and contacts["mayor"]["erased"]
    assert all("(erased)" in texts[page] for page in pages)

    # NATS: every event, after the erasure.
    unique = uuid.uuid4().hex[:10]
    target = NatsTarget(url=nats_url, stream=f"GNLC_ERASED_{unique}",
                        prefix=f"gnlc-erased.{unique}")
    with running_relay(settings, target):
        messages = asyncio.run(published(target, count_feed_events(api, reader_token)))
    assert [leaked(m.data.decode("utf-8")) for m in messages if leaked(
        m.data.decode("utf-8"))] == []

    # The audit chain: the head before the erasure, then the erasure's event.
    after = cli(url, "audit", "verify", "--expect",
                f"{head_before['hash']}@{head_before['position']}")
    assert after["ok"] and after["checked"] == verified_count(head_before, url) + 1
    # The database: every file of the SQLite store (events, read models, keys), or a pg_dump.
    assert leaked(database_bytes(settings, tmp_path).decode("latin-1")) == []
    for scope in ((), ("--scope", PERSONAL_DATA)):
        path = tmp_path / f"export{len(scope)}.jsonl"
        export(url, path, *scope)
        assert leaked(path.read_text(encoding="utf-8")) == []
        verdict = cli(None, "audit", "verify-export", str(path))
        assert (verdict["ok"], verdict["head"]) == (True, after["head"])


def count_feed_events(api: LiveServer, token: str) -> int:
    with api.client(token) as client:
        body = client.get("/events", params={"limit": 1000}).json()
    return len(body["events"])


def verified_count(head: dict[str, Any], url: str) -> int:
    """How many events the log held at `head` (one chain row per event)."""
    export_lines = subprocess.run(
        [GNLC, "--database-url", url, "audit", "export", "--until", str(head["position"])],
        capture_output=True, text=True, check=True, timeout=120).stdout.splitlines()
    return len(export_lines)


def cli(url: str | None, *args: str) -> dict[str, Any]:
    options = ["--database-url", url] if url else []
    result = CliRunner().invoke(app, [*options, *args, "--json"])
    assert result.stdout, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def export(url: str, path: Path, *options: str) -> None:
    with path.open("w", encoding="utf-8") as out:
        done = subprocess.run([GNLC, "--database-url", url, "audit", "export", *options],
                              stdout=out, stderr=subprocess.PIPE, text=True, check=False,
                              timeout=300)
    assert done.returncode == 0, done.stderr


def test_an_export_with_the_personal_data_scope_says_so_and_keeps_the_values_it_was_made_with(
    api: LiveServer, member: UUID, settings: Settings, tmp_path: Path
) -> None:
    url = settings.database_url
    plain, scoped = tmp_path / "plain.jsonl", tmp_path / "scoped.jsonl"
    export(url, plain)
    export(url, scoped, "--scope", PERSONAL_DATA)
    assert leaked(plain.read_text(encoding="utf-8")) == []
    lines = [json.loads(line) for line in scoped.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["gnlc_export"]["personal_data_in_clear"] is True
    opened = [p for line in lines[1:] for p in line.get("personal", [])]
    assert {p["full_name"] for p in opened} == {MAYOR, CONTACT["full_name"],
                                                NEW_CONTACT["full_name"]}
    assert cli(None, "audit", "verify-export", str(scoped))["ok"]
    # The export made before the erasure keeps what it holds; the store does not.
    cli(url, "privacy", "erase", str(member), "--reason", "left office")
    assert MAYOR in scoped.read_text(encoding="utf-8")
    after = tmp_path / "after.jsonl"
    export(url, after, "--scope", PERSONAL_DATA)
    assert leaked(after.read_text(encoding="utf-8")) == []
    assert cli(None, "audit", "verify-export", str(scoped))["ok"]


def test_contact_update_and_erasure_on_the_command_line(
    api: LiveServer, member: UUID, settings: Settings, tmp_path: Path
) -> None:
    url = settings.database_url
    update = tmp_path / "mayor.json"
    update.write_text(json.dumps({"mayor": {"full_name": "Ottoline Vasquez-Brandt"}}))
    assert cli(url, "contact", "update", str(member), str(update))["updated"] == ["mayor"]

    refusals = {
        "unknown city": (["contact", "update", str(uuid.uuid4()), str(update)], "not_found"),
        "bad input": (["contact", "update", str(member), str(write(tmp_path, {}))],
                      "invalid_input"),
        "bad e-mail": (["contact", "update", str(member), str(write(
            tmp_path, {"contact": {"full_name": "X", "email": "nowhere"}}))], "invalid_input"),
        "no reason": (["privacy", "erase", str(member), "--reason", " "], "invalid_input"),
        "unknown person": (["privacy", "erase", str(member), "--reason", "r", "--person",
                            "deputy"], "invalid_input"),
        "unknown city erased": (["privacy", "erase", str(uuid.uuid4()), "--reason", "r"],
                                "not_found"),
    }
    version = api.registry.city(SECRETARIAT, member).version
    for name, (args, code) in refusals.items():
        result = CliRunner().invoke(app, ["--database-url", url, *args, "--json"])
        assert result.exit_code != 0, name
        assert json.loads(result.stderr)["error"]["code"] == code, (name, result.stderr)
    assert api.registry.city(SECRETARIAT, member).version == version

    erased = cli(url, "privacy", "erase", str(member), "--person", "mayor", "--reason", "left")
    assert (erased["recorded"], erased["persons"], len(erased["erased_key_ids"])) == (
        True, ["mayor"], 2)
    again = cli(url, "privacy", "erase", str(member), "--person", "mayor", "--reason", "left")
    assert (again["recorded"], again["erased_before"]) == (False, erased["erased_key_ids"])
    assert cli(url, "privacy", "legacy") == {"plaintext_events": 0, "cities": []}
    shown = subprocess.run([GNLC, "--database-url", url, "members", "--json"],
                           capture_output=True, text=True, check=True, timeout=120).stdout
    contacts = json.loads(shown)[0]["contacts"]
    assert contacts["mayor"]["erased"] and contacts["contact"]["email"] == NEW_CONTACT["email"]
    past = subprocess.run([GNLC, "--database-url", url, "members", "--as-of", "2019-12-31",
                           "--json"], capture_output=True, text=True, check=True,
                          timeout=120).stdout
    contacts = json.loads(past)[0]["contacts"]
    assert (contacts["mayor"]["erased"], contacts["contact"]["email"]) == (True, CONTACT["email"])
    assert MAYOR not in past


def write(folder: Path, data: Any) -> Path:
    path = folder / f"{uuid.uuid4().hex}.json"
    path.write_text(json.dumps(data))
    return path
