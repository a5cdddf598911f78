"""Personal data (the mayor's and contact person's names, e-mails and phones) in the event feed.

Without the personal_data scope, whatever the role, the values never appear: not in `GET /events`,
not in the SSE stream; on NATS never at all. The raw bytes are searched for the known values.
"""

from __future__ import annotations

import asyncio
import json
import threading
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from domain.access import PERSONAL_DATA
from domain.acts import Role
from domain.cities import city_id
from infrastructure.bootstrap import build_registry, build_relay
from infrastructure.feed.nats_relay import POSITION_HEADER, NatsTarget
from infrastructure.settings import Settings
from tests.conftest import CITY, COMMISSION, SECRETARIAT, SettableClock, application_form
from tests.live_server import LiveServer
from tests.test_event_stream import SseParser
from tests.test_feed import feed_positions, read_feed

TIMEOUT = 60.0

MAYORS = {"Hamburg": "Zebulon Quillfeather", "Lyon": "Ottoline Vasquez-Brandt"}
CONTACTS = {
    "Hamburg": ("Xanthippe Okonkwo", "xanthippe.private@quillmail.example", "+49 40 5550 1234"),
    "Lyon": ("Marguerite Delacroix-Oyelaran", "m.delacroix@oyelaran.example", "+33 4 7210 9988"),
}
PERSONAL = [*MAYORS.values(), *(value for contact in CONTACTS.values() for value in contact)]
# Not personal: what must stay visible around the masked fields.
PUBLIC = ["Head of Learning", "City Hall", "First Mayor"]
ROLES = (Role.SUBSCRIBER, Role.AUDITOR, Role.SECRETARIAT)


def private_form(city: str, country: str) -> dict[str, Any]:
    form = application_form(city, country)
    name, email, phone = CONTACTS[city]
    form["mayor"] = {**form["mayor"], "full_name": MAYORS[city]}
    form["contact"] = {**form["contact"], "full_name": name, "email": email, "phone": phone}
    return form


@pytest.fixture
def applicants(api: LiveServer, clock: SettableClock) -> dict[str, Any]:
    """Hamburg applies over HTTP (a city token), Lyon through the use case; both are admitted."""
    registry = api.registry
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    with api.client(api.token("city-hamburg", Role.CITY, city=city_id("DE", "Hamburg"))) as city:
        response = city.post("/applications", json=private_form("Hamburg", "DE"))
        assert response.status_code == 201, response.text
        hamburg = uuid.UUID(response.json()["application_id"])
    lyon = registry.submit_application(CITY, private_form("Lyon", "FR")).application_id
    for application_id in (hamburg, lyon):
        registry.endorse(COMMISSION, application_id)
        registry.admit(SECRETARIAT, application_id)
    return {"Hamburg": hamburg, "Lyon": lyon}


def raw_feed(client: httpx.Client, limit: int, **params: Any) -> str:
    """The raw text of every page, from 0 to the first empty page."""
    texts, after = [], 0
    while True:
        response = client.get("/events", params={"after": after, "limit": limit, **params})
        assert response.status_code == 200, response.text
        texts.append(response.text)
        body = response.json()
        if not body["events"]:
            return "".join(texts)
        after = body["next_after"]


def raw_stream(client: httpx.Client, last_position: int) -> str:
    """The raw bytes of the stream from position 0 until the event at `last_position`."""
    raw, parser = b"", SseParser()
    with client.stream("GET", "/events/stream", params={"after": 0}) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            raw += chunk
            if any(m.id == str(last_position) for m in parser.feed(chunk)):
                return raw.decode("utf-8")
    pytest.fail("the stream ended early")


def submitted_forms(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"]["form"] for e in events if e["type"] == "application.submitted"]


def assert_masked(form: dict[str, Any]) -> None:
    assert form["mayor"]["full_name"] is None
    assert {k: form["contact"][k] for k in ("full_name", "email", "phone")} == {
        "full_name": None, "email": None, "phone": None}
    assert form["contact"]["official_title"] == "Head of Learning"
    assert form["mayor"]["official_title"] == "First Mayor"


def leaked(text: str) -> list[str]:
    return [value for value in PERSONAL if value in text]


# --- HTTP ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_without_the_personal_data_scope_no_personal_value_appears_in_the_feed_or_the_stream(
    api: LiveServer, applicants: dict[str, Any], role: Role
) -> None:
    last = feed_positions(api.registry)[-1]
    with api.client(api.token(f"plain-{role}", role)) as client:
        for limit, params in ((1, {}), (1000, {}), (10, {"types": "application.submitted"}),
                              (10, {"country": "FR"}),
                              (5, {"city": str(city_id("DE", "Hamburg"))})):
            text = raw_feed(client, limit, **params)
            assert leaked(text) == [], (role, params)
            assert all(value in text for value in PUBLIC), (role, params)
        forms = submitted_forms(read_feed(client))
        assert len(forms) == 2
        for form in forms:
            assert_masked(form)

        text = raw_stream(client, last)
        assert leaked(text) == [], role
        assert text.count("event: application.submitted") == 2


@pytest.mark.parametrize("role", ROLES)
def test_with_the_personal_data_scope_the_feed_and_the_stream_carry_the_personal_values(
    api: LiveServer, applicants: dict[str, Any], role: Role
) -> None:
    last = feed_positions(api.registry)[-1]
    token = api.token(f"personal-{role}", role, scopes=frozenset({PERSONAL_DATA}))
    with api.client(token) as client:
        text = raw_feed(client, 3)
        assert [v for v in PERSONAL if v not in text] == [], role
        forms = {f["city"]: f for f in submitted_forms(read_feed(client))}
        assert forms["Hamburg"]["mayor"]["full_name"] == MAYORS["Hamburg"]
        assert (forms["Lyon"]["contact"]["full_name"], forms["Lyon"]["contact"]["email"],
                forms["Lyon"]["contact"]["phone"]) == CONTACTS["Lyon"]
        text = raw_stream(client, last)
        assert [v for v in PERSONAL if v not in text] == [], role


def test_a_token_without_the_scope_reading_after_one_with_it_still_gets_masked_values(
    api: LiveServer, applicants: dict[str, Any]
) -> None:
    """The feed caches what it decodes: the unmasked form must not leak into a later reader."""
    with api.client(api.token("with", Role.AUDITOR, scopes=frozenset({PERSONAL_DATA}))) as c:
        assert MAYORS["Lyon"] in raw_feed(c, 1000)
    with api.client(api.token("without", Role.AUDITOR)) as client:
        assert leaked(raw_feed(client, 1000)) == []
    with api.client(api.token("with-again", Role.SUBSCRIBER,
                              scopes=frozenset({PERSONAL_DATA}))) as c:
        assert MAYORS["Lyon"] in raw_feed(c, 1000)


# --- NATS ----------------------------------------------------------------------------------------


@contextmanager
def running_relay(settings: Settings, target: NatsTarget) -> Iterator[None]:
    """The relay in a thread with its own event loop, stopped through its asyncio.Event."""
    registry = build_registry(settings)
    relay = build_relay(settings, registry, target)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    errors: list[str] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(relay.run(stop))
        except BaseException:
            errors.append(traceback.format_exc())

    thread = threading.Thread(target=run, name="nats-relay", daemon=True)
    thread.start()
    try:
        yield
    finally:
        if loop.is_running():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=TIMEOUT)
        if not thread.is_alive():
            loop.close()
        registry.close()
    assert not thread.is_alive(), "the relay did not stop"
    assert errors == [], errors[0] if errors else ""


async def published(target: NatsTarget, count: int) -> list[Any]:
    """The first `count` messages of the relay's stream, waiting for them; then the stream goes."""
    connection = await nats.connect(target.url)
    js = connection.jetstream()
    try:
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:  # the relay creates its stream when it starts: poll until it exists
            try:
                await js.stream_info(target.stream)
                break
            except NotFoundError:
                assert asyncio.get_running_loop().time() < deadline, "no stream"
                await asyncio.sleep(0.02)
        subscription = await js.pull_subscribe(f"{target.prefix}.>", durable="masking-check",
                                               stream=target.stream)
        messages: list[Any] = []
        while len(messages) < count and asyncio.get_running_loop().time() < deadline:
            try:
                messages.extend(await subscription.fetch(count - len(messages), timeout=5))
            except TimeoutError:
                continue
        for message in messages:
            await message.ack()
        return messages
    finally:
        with suppress(NotFoundError):
            await js.delete_stream(target.stream)
        await connection.close()


def test_events_published_on_nats_never_carry_personal_values(
    api: LiveServer, applicants: dict[str, Any], settings: Settings, nats_url: str
) -> None:
    unique = uuid.uuid4().hex[:10]
    target = NatsTarget(url=nats_url, stream=f"GNLC_MASKING_{unique}",
                        prefix=f"gnlc-masking.{unique}")
    with api.client(api.token("reader", Role.SUBSCRIBER)) as client:
        expected = read_feed(client)
    with running_relay(settings, target):
        messages = asyncio.run(published(target, len(expected)))

    assert [int(m.headers[POSITION_HEADER]) for m in messages] == [
        e["position"] for e in expected]
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [e["id"] for e in expected]
    assert [m.subject for m in messages] == [f"{target.prefix}.{e['type']}" for e in expected]
    for message in messages:
        assert leaked(message.data.decode("utf-8")) == [], message.subject
    payloads = [json.loads(m.data) for m in messages]
    assert payloads == expected  # the same masked events a subscriber reads over HTTP
    forms = submitted_forms(payloads)
    assert len(forms) == 2
    for form in forms:
        assert_masked(form)
