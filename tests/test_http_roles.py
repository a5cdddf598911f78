"""Who may do what over HTTP: every role against every endpoint, then across countries and cities.

An allowed action succeeds; a forbidden one is 403 (401 without a valid token) and writes
nothing: the log keeps its length and the read models stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

import httpx
import pytest

from application.registry import Registry
from domain.access import token_id, token_text
from domain.acts import Role
from domain.cities import city_id
from domain.errors import NotFound
from infrastructure.readmodels.tables import ReadModelStore
from infrastructure.settings import Settings
from tests.conftest import (
    CITY,
    COMMISSION,
    SECRETARIAT,
    admitted_city,
    application_form,
    endorsed_application,
    progress_report,
)
from tests.http_support import ok, read_models, refused, settled
from tests.live_server import OPERATOR, LiveServer

HAMBURG = city_id("DE", "Hamburg")
PAST = "2019-03-15"


@pytest.fixture
def store(settings: Settings) -> Iterator[ReadModelStore]:
    store = read_models(settings)
    yield store
    store.engine.dispose()


# --- the world every role acts in ------------------------------------------------------------

@dataclass
class World:
    """The registry before each case: a target for each action, Hamburg's state made to fit."""

    registry: Registry
    ids: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, registry: Registry) -> World:
        world = cls(registry)
        registry.open_intake(SECRETARIAT, 2019)
        ids = world.ids
        ids["bremen"] = registry.submit_application(
            CITY, application_form("Bremen")).application_id
        ids["koeln"] = registry.submit_application(
            CITY, application_form("Köln")).application_id
        ids["muenchen"] = endorsed_application(registry, "München").application_id
        ids["dresden"] = endorsed_application(registry, "Dresden").application_id
        ids["lyon"] = admitted_city(registry, "Lyon", "FR").application_id
        ids["marseille"] = admitted_city(registry, "Marseille", "FR").city_id
        ids["hamburg"] = HAMBURG
        ids["now"] = datetime.now(UTC).isoformat()
        return world

    def hamburg_applying(self) -> None:
        """Hamburg has an open application (unless a case before already lodged one)."""
        if self.open_application() is None:
            self.registry.submit_application(CITY, application_form("Hamburg"))

    def open_application(self) -> UUID | None:
        try:
            return self.registry.city(SECRETARIAT, HAMBURG).open_application_id
        except NotFound:
            return None  # Hamburg has never applied

    def hamburg_member(self) -> None:
        """Hamburg is a member, admitted on its open application."""
        self.hamburg_applying()
        application_id = self.open_application()
        assert application_id is not None
        if self.registry.application(SECRETARIAT, application_id).status == "submitted":
            self.registry.endorse(COMMISSION, application_id)
        self.registry.admit(SECRETARIAT, application_id)
        self.ids["hamburg_application"] = application_id


def _hamburg_exists(world: World) -> None:
    world.hamburg_applying()


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    allowed: frozenset[Role]
    body: Callable[[World], Any] | None = None
    prepare: Callable[[World], None] | None = None
    status: int = 200

    @property
    def writes(self) -> bool:
        return self.method == "POST"


EVERYONE = frozenset({Role.SECRETARIAT, Role.NATIONAL_COMMISSION, Role.CITY, Role.AUDITOR})
PAST_READERS = frozenset({Role.SECRETARIAT, Role.AUDITOR})
STAFF = frozenset({Role.SECRETARIAT})
COMMISSION_AND_STAFF = frozenset({Role.SECRETARIAT, Role.NATIONAL_COMMISSION})
CITY_AND_STAFF = frozenset({Role.SECRETARIAT, Role.CITY})

# In order: each case finds the world as the cases before it left it.
CASES = [
    Case("open an intake", "POST", "/intakes", STAFF, lambda w: {"year": 2020}, status=201),
    Case("extend an intake", "POST", "/intakes/2019/extensions", STAFF,
         lambda w: {"closes": "2019-05-31", "reason": "late jury"}),
    Case("submit Hamburg's application", "POST", "/applications", CITY_AND_STAFF,
         lambda w: application_form("Hamburg"), status=201),
    Case("endorse Bremen", "POST", "/applications/{bremen}/endorsement", COMMISSION_AND_STAFF,
         lambda w: {}),
    Case("decline Köln", "POST", "/applications/{koeln}/declination", COMMISSION_AND_STAFF,
         lambda w: {"reason": "incomplete"}),
    Case("withdraw Hamburg's application", "POST", "/applications/{hamburg_open}/withdrawal",
         CITY_AND_STAFF, lambda w: {"reason": "next year"}, prepare=_hamburg_exists),
    Case("admit München", "POST", "/applications/{muenchen}/admission", STAFF,
         lambda w: {"jury": "recommended"}),
    Case("reject Dresden", "POST", "/applications/{dresden}/rejection", STAFF,
         lambda w: {"reason": "jury", "jury": "not_recommended"}),
    Case("retract Lyon", "POST", "/applications/{lyon}/retraction", STAFF,
         lambda w: {"reason": "corrigendum"}),
    Case("report for Hamburg", "POST", "/cities/{hamburg}/reports", CITY_AND_STAFF,
         lambda w: progress_report(), prepare=World.hamburg_member, status=201),
    Case("end Marseille's membership", "POST", "/cities/{marseille}/membership-end", STAFF,
         lambda w: {"reason": "other"}),
    Case("list members", "GET", "/members", EVERYONE),
    Case("list quotas", "GET", "/quotas", EVERYONE),
    Case("list deadlines", "GET", "/deadlines?today=2021-04-01", EVERYONE),
    Case("list applications", "GET", "/applications", EVERYONE),
    Case("read Hamburg's application", "GET", "/applications/{hamburg_application}", EVERYONE),
    Case("read Hamburg", "GET", "/cities/{hamburg}", EVERYONE),
    Case("read Hamburg's history", "GET", "/cities/{hamburg}/history", EVERYONE),
    Case("list members as of a past day", "GET", f"/members?as_of={PAST}", PAST_READERS),
    Case("list quotas as of a past day", "GET", f"/quotas?as_of={PAST}", PAST_READERS),
    Case("list members as known at a past moment", "GET", "/members?known_at={now}",
         PAST_READERS),
    Case("list quotas as known at a past moment", "GET", "/quotas?known_at={now}",
         PAST_READERS),
]


def _path(case: Case, world: World) -> str:
    ids = {**world.ids, "now": quote(world.ids["now"]),
           "hamburg_open": world.open_application()}
    return case.path.format(**ids)


# --- every role against every endpoint -------------------------------------------------------

@dataclass(frozen=True)
class Holder:
    """Who sends the requests: a role with its scope, or someone without a valid token."""

    name: str
    role: Role | None
    country: str | None = None
    city: UUID | None = None

    def token(self, api: LiveServer) -> str | None:
        if self.role is not None:
            token = api.token(self.name, self.role, self.country, self.city)
            if self.name == "revoked":
                api.registry.revoke_token(OPERATOR, self.name, "left the team")
            return token
        if self.name == "forged":
            api.token("forged", Role.SECRETARIAT)  # a real token, but a guessed secret
            return token_text(token_id("forged"), "guessed-secret")
        return {"anonymous": None, "garbage": "not-a-gnlc-token"}[self.name]


HOLDERS = [
    Holder("secretariat", Role.SECRETARIAT),
    Holder("commission-de", Role.NATIONAL_COMMISSION, country="DE"),
    Holder("city-hamburg", Role.CITY, city=HAMBURG),
    Holder("auditor", Role.AUDITOR),
    Holder("subscriber", Role.SUBSCRIBER),
    Holder("revoked", Role.SECRETARIAT),
    Holder("anonymous", None),
    Holder("garbage", None),
    Holder("forged", None),
]


@pytest.mark.parametrize("holder", HOLDERS, ids=[h.name for h in HOLDERS])
def test_each_role_may_do_exactly_what_its_permissions_and_scope_allow(
        api: LiveServer, store: ReadModelStore, holder: Holder) -> None:
    world = World.build(api.registry)
    token = holder.token(api)
    authenticated = holder.role is not None and holder.name != "revoked"
    outcomes: dict[str, int] = {}
    with api.client(token) as client:
        for case in CASES:
            if case.prepare is not None:
                case.prepare(world)
            before = settled(store, api)
            count = api.registry.count_events()
            body = case.body(world) if case.body else None
            response = client.request(case.method, _path(case, world), json=body)
            outcomes[case.name] = response.status_code
            if authenticated and holder.role in case.allowed:
                assert response.status_code == case.status, (case.name, response.text)
                if case.writes:
                    assert api.registry.count_events() > count, case.name
                continue
            if authenticated:
                refused(response, 403, "forbidden")
            else:
                refused(response, 401, "unauthenticated")
            assert api.registry.count_events() == count, case.name
            assert settled(store, api) == before, case.name
    expected = {c.name: (c.status if authenticated and holder.role in c.allowed
                         else 403 if authenticated else 401) for c in CASES}
    assert outcomes == expected


# --- across countries and cities -------------------------------------------------------------

def _refused_without_writing(api: LiveServer, store: ReadModelStore,
                             request: Callable[[], httpx.Response]) -> None:
    before = settled(store, api)
    count = api.registry.count_events()
    refused(request(), 403, "forbidden")
    assert api.registry.count_events() == count
    assert settled(store, api) == before


def test_a_commission_acts_and_reads_only_for_its_own_country(
        api: LiveServer, store: ReadModelStore) -> None:
    registry = api.registry
    registry.open_intake(SECRETARIAT, 2019)
    admitted_city(registry, "Hamburg")
    bremen = registry.submit_application(CITY, application_form("Bremen")).application_id
    lyon = admitted_city(registry, "Lyon", "FR")
    nantes = registry.submit_application(CITY, application_form("Nantes", "FR")).application_id
    with api.client(api.token("commission-de", Role.NATIONAL_COMMISSION, "DE")) as de:
        for request in (
            lambda: de.post(f"/applications/{nantes}/endorsement", json={}),
            lambda: de.post(f"/applications/{nantes}/declination", json={"reason": "no"}),
            lambda: de.get("/quotas", params={"country": "FR"}),
            lambda: de.get("/members", params={"country": "FR"}),
            lambda: de.get("/deadlines", params={"country": "FR"}),
            lambda: de.get("/applications", params={"country": "FR"}),
            lambda: de.get(f"/applications/{nantes}"),
            lambda: de.get(f"/cities/{lyon.city_id}"),
            lambda: de.get(f"/cities/{lyon.city_id}/history"),
        ):
            _refused_without_writing(api, store, request)
        head = {"min_position": settled(store, api)["head"]}
        assert {m["country"] for m in ok(de.get("/members", params=head))["items"]} == {"DE"}
        assert [m["name"] for m in ok(de.get("/members", params=head))["items"]] == ["Hamburg"]
        assert [q["country"] for q in ok(de.get("/quotas", params=head))["items"]] == ["DE"]
        assert {a["city"] for a in ok(de.get("/applications", params=head))["items"]} == {
            "Hamburg", "Bremen"}
        assert {d["name"] for d in ok(de.get("/deadlines", params=head))["items"]} == {"Hamburg"}
        own = ok(de.get("/members", params={**head, "country": "DE"}))["items"]
        assert own[0]["name"] == "Hamburg"
        endorsed = ok(de.post(f"/applications/{bremen}/endorsement", json={}))
        assert endorsed["status"] == "endorsed"


def test_a_city_acts_and_reads_only_for_itself(
        api: LiveServer, store: ReadModelStore) -> None:
    registry = api.registry
    registry.open_intake(SECRETARIAT, 2019)
    admitted_city(registry, "Hamburg")
    bremen = admitted_city(registry, "Bremen")
    koeln = registry.submit_application(CITY, application_form("Köln")).application_id
    with api.client(api.token("city-hamburg", Role.CITY, city=HAMBURG)) as hamburg:
        for request in (
            lambda: hamburg.post("/applications", json=application_form("Dortmund")),
            lambda: hamburg.post("/applications", json=application_form("Lyon", "FR")),
            lambda: hamburg.post(f"/applications/{koeln}/withdrawal", json={"reason": "r"}),
            lambda: hamburg.post(f"/cities/{bremen.city_id}/reports", json=progress_report()),
            lambda: hamburg.get(f"/cities/{bremen.city_id}"),
            lambda: hamburg.get(f"/cities/{bremen.city_id}/history"),
            lambda: hamburg.get(f"/applications/{koeln}"),
            lambda: hamburg.get(f"/applications/{bremen.application_id}"),
        ):
            _refused_without_writing(api, store, request)
        head = {"min_position": settled(store, api)["head"]}
        assert [m["name"] for m in ok(hamburg.get("/members", params=head))["items"]] == ["Hamburg"]
        assert [a["city"] for a in ok(hamburg.get("/applications", params=head))["items"]] == [
            "Hamburg"]
        assert {d["name"] for d in ok(hamburg.get("/deadlines", params=head))["items"]} == {
            "Hamburg"}
        assert ok(hamburg.get(f"/cities/{HAMBURG}"))["name"] == "Hamburg"
        assert ok(hamburg.get(f"/cities/{HAMBURG}/history"))
        report = ok(hamburg.post(f"/cities/{HAMBURG}/reports", json=progress_report()), 201)
        assert report["cycle"] == 1


@pytest.mark.parametrize("role", [Role.NATIONAL_COMMISSION, Role.CITY])
@pytest.mark.parametrize("past", [{"as_of": PAST}, {"known_at": "2019-03-15T12:00:00+01:00"}],
                         ids=["as_of", "known_at"])
@pytest.mark.parametrize("path", ["/members", "/quotas"])
def test_only_the_secretariat_and_auditors_read_the_past(
        api: LiveServer, role: Role, past: dict[str, str], path: str) -> None:
    scope: dict[str, Any] = ({"country": "DE"} if role is Role.NATIONAL_COMMISSION
                             else {"city": HAMBURG})
    with api.client(api.token(f"reader-{uuid4().hex[:8]}", role, **scope)) as reader:
        refused(reader.get(path, params=past), 403, "forbidden")
        ok(reader.get(path))
    for allowed in (Role.SECRETARIAT, Role.AUDITOR):
        with api.client(api.token(f"reader-{allowed}", allowed)) as reader:
            assert ok(reader.get(path, params=past))["items"] == []
