"""The HTTP API against its own OpenAPI document: schemathesis fuzzes every operation.

Served over a real socket (SQLite and PostgreSQL), with a secretariat token and the rate limit
off. Every response must pass every schemathesis check: no 5xx, status code, media type, headers
and body as documented in /openapi.json, schema-invalid input refused, schema-valid input
accepted (or refused by a business rule), authentication enforced. Generation is derandomized
with a fixed seed, so a CI failure reproduces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.config import HealthCheck, PositiveDataAcceptanceConfig, SchemathesisConfig
from schemathesis.specs.openapi.schemas import OpenApiSchema

from domain.acts import Role
from infrastructure.settings import Settings
from tests.conftest import (
    SECRETARIAT,
    SettableClock,
    admitted_city,
    application_form,
    endorsed_application,
    progress_report,
)
from tests.live_server import LiveServer, live_server

SEED = 20190315
MAX_EXAMPLES = 20  # per operation in the fuzzing phase; the examples and coverage phases add more
REQUEST_TIMEOUT_SECONDS = 30


@dataclass
class Served:
    server: LiveServer
    token: str
    city_id: UUID  # an admitted city's


@pytest.fixture
def served(database_url: str, clock: SettableClock) -> Iterator[Served]:
    """The API with some state, so the queries answer with rows whose shape is checked too."""
    with live_server(Settings(database_url=database_url, rate_limit=0), clock) as server:
        server.registry.open_intake(SECRETARIAT, 2019)
        hamburg = admitted_city(server.registry, "Hamburg")
        endorsed_application(server.registry, "Lyon", "FR")
        yield Served(server, server.token("schemathesis", Role.SECRETARIAT), hamburg.city_id)


class Bearer(requests.auth.AuthBase):
    """The token as explicit auth: schemathesis then also checks requests without it fail."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


@pytest.fixture
def api_schema(served: Served) -> OpenApiSchema:
    """The live server's own /openapi.json, loaded with the run's settings."""
    url = served.server.url
    config = SchemathesisConfig(seed=SEED, suppress_health_check=[HealthCheck.all])
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    schema.config.update(base_url=url, request_timeout=REQUEST_TIMEOUT_SECONDS)
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True,
                                    database="none")
    schema.auth.set_from_requests(Bearer(served.token))
    # Schema-valid input may still break a rule JSON Schema cannot state (an intake opening
    # outside its year, a report period in reverse, an essay over 200 words): 422 is the
    # documented answer to that, beside the statuses schemathesis expects by default.
    acceptance = schema.config.checks.positive_data_acceptance
    schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
        expected_statuses=[*acceptance.expected_statuses, "422"])
    return schema


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's `from_fixture` reads `node._nodeid`, which pytest 9.2 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


# The live stream never ends (heartbeats keep it open): it has tests of its own.
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/events/stream")


@schema.parametrize()
def test_every_response_conforms_to_the_openapi_document(case: Case) -> None:
    case.call_and_validate()


# --- what the fuzzer found, pinned: each a 4xx problem naming the field, never a 5xx ----------

NUL = "\u0000"
FORM = application_form("Bremen")


def _form(**changes: Any) -> str:
    return json.dumps({**FORM, **changes})


def _figure(value: str) -> str:
    """A form whose population figure is `value`, as raw JSON (NaN and 1e400 are not JSON)."""
    return _form(profile={"population": {"value": 0, "year": 2018}}).replace(
        '"value": 0', f'"value": {value}')


EDGE_CASES: list[tuple[str, str, str | bytes | None, dict[str, str], int, str | None]] = [
    # method, path ({city} is an admitted city), raw body, headers, status, field
    ("POST", "/applications", _form(city=f"Bre{NUL}men"), {}, 422, "city"),
    ("POST", "/applications", _form(mayor={"full_name": f"Ada{NUL}"}), {}, 422,
     "mayor.full_name"),
    ("POST", "/applications",
     _form(contact={**FORM["contact"], "postal_address": "1 Square\x07"}), {}, 422,
     "contact.postal_address"),
    ("POST", "/applications", _figure("NaN"), {}, 422, "profile.population.value"),
    ("POST", "/applications", _figure("Infinity"), {}, 422, "profile.population.value"),
    ("POST", "/applications", _figure("1e400"), {}, 422, "profile.population.value"),
    ("POST", "/applications", _form(signed_on=0), {}, 422, "signed_on"),
    ("POST", "/cities/{city}/reports", json.dumps(progress_report(summary=f"a{NUL}b")), {}, 422,
     "summary"),
    ("POST", "/cities/{city}/reports",
     json.dumps(progress_report(statistics={"learners": float("inf")})), {}, 422,
     "statistics.learners"),
    ("POST", "/cities/{city}/reports", json.dumps(progress_report(statistics={NUL: 1})), {},
     422, f"statistics.{NUL}.[key]"),
    ("POST", "/cities/{city}/reports", json.dumps(progress_report(covering_from=0)), {}, 422,
     "covering_from"),
    ("POST", "/cities/{city}/membership-end", json.dumps({"reason": "other", "note": NUL}), {},
     422, "note"),
    ("POST", "/intakes", '{"year": 1' + "0" * 40 + "}", {}, 422, "year"),
    ("POST", "/intakes", json.dumps({"year": 2030, "opens": 0}), {}, 422, "opens"),
    ("POST", "/intakes/1" + "0" * 40 + "/extensions",
     json.dumps({"closes": "2019-05-01", "reason": "late"}), {}, 422, "year"),
    ("POST", "/intakes", json.dumps({"year": 2030}), {"Idempotency-Key": ""}, 422,
     "Idempotency-Key"),
    ("POST", "/intakes", json.dumps({"year": 2030}), {"Idempotency-Key": "k" * 256}, 422,
     "Idempotency-Key"),
    ("POST", "/intakes", b'{"year": "\xff"}', {}, 400, None),
    ("POST", "/applications/not-a-uuid/endorsement", "{}", {}, 422, "application_id"),
    ("GET", "/cities/123", None, {}, 422, "city_id"),
    ("GET", "/deadlines?today=9999-12-31", None, {}, 422, "today"),
    ("GET", "/deadlines?due_before=0", None, {}, 422, "due_before"),
    ("GET", "/members?today=0", None, {}, 422, "today"),
    ("GET", "/members?as_of=1", None, {}, 422, "as_of"),
    ("GET", "/quotas?known_at=0.5", None, {}, 422, "known_at"),
    ("GET", "/members?min_position=1" + "0" * 40, None, {}, 422, "min_position"),
]


def test_edge_cases_are_refused_with_a_problem_naming_the_field(served: Served) -> None:
    with served.server.client(served.token) as client:
        for method, path, body, headers, status, field in EDGE_CASES:
            response = client.request(
                method, path.format(city=served.city_id), content=body,
                headers={"Content-Type": "application/json", **headers})
            problem = response.json()
            assert (response.status_code, problem.get("field")) == (status, field), \
                (method, path, problem)
            assert response.headers["content-type"] == "application/problem+json"


def test_method_not_allowed_lists_every_method_of_the_path(served: Served) -> None:
    with served.server.client(served.token) as client:
        response = client.request("OPTIONS", "/applications")
    assert response.status_code == 405
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["allow"].split(",")}
