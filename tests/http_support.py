"""Helpers for tests over real HTTP: problems, actors with tokens, a settled read side."""

from __future__ import annotations

import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from uuid import UUID

import httpx

from domain.acts import Role
from domain.cities import city_id
from infrastructure.bootstrap import build_read_models
from infrastructure.readmodels.tables import ReadModelStore
from infrastructure.settings import Settings
from tests.conftest import application_form
from tests.live_server import LiveServer

PROBLEM = "application/problem+json"
SETTLE_TIMEOUT_SECONDS = 30.0


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a successful response with this status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.json()


def refused(response: httpx.Response, status: int, code: str,
            field: str | None = None) -> dict[str, Any]:
    """The problem document of a refusal: RFC 9457, its `type` ending with the CLI error code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    problem: dict[str, Any] = response.json()
    assert problem["type"].endswith(f"/{code}"), problem
    assert problem["status"] == status
    assert problem["code"] == code
    if field is not None:
        assert problem["field"] == field, problem
    return problem


class Network:
    """The actors of a test, each with a token and an HTTP client to the live server."""

    def __init__(self, api: LiveServer) -> None:
        self.api = api
        self._clients = ExitStack()
        self._tokens: dict[str, str] = {}
        self.staff = self.client("uil-coordination", Role.SECRETARIAT)

    def client(self, name: str, role: Role, country: str | None = None,
               city: UUID | None = None) -> httpx.Client:
        if name not in self._tokens:
            self._tokens[name] = self.api.token(name, role, country, city)
        return self._clients.enter_context(self.api.client(self._tokens[name]))

    def commission(self, country: str) -> httpx.Client:
        return self.client(f"commission-{country.lower()}", Role.NATIONAL_COMMISSION, country)

    def city(self, name: str, country: str = "DE") -> httpx.Client:
        ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        return self.client(f"city-{country.lower()}-{ascii_name.lower()}", Role.CITY,
                           city=city_id(country, name))

    def close(self) -> None:
        self._clients.close()

    # --- the steps of an application, over HTTP -----------------------------------------------

    def open_intake(self, year: int = 2019, **window: str) -> dict[str, Any]:
        return ok(self.staff.post("/intakes", json={"year": year, **window}), 201)

    def submit(self, name: str, country: str = "DE") -> dict[str, Any]:
        return ok(self.city(name, country).post(
            "/applications", json=application_form(name, country)), 201)

    def endorse(self, name: str, country: str = "DE") -> dict[str, Any]:
        """Submit and endorse; the endorsement's answer (its `position` for read-your-writes),
        with the submission's `city_id`."""
        submitted = self.submit(name, country)
        endorsed = ok(self.commission(country).post(
            f"/applications/{submitted['application_id']}/endorsement", json={}))
        return {**submitted, **endorsed}

    def admit(self, name: str, country: str = "DE") -> dict[str, Any]:
        endorsed = self.endorse(name, country)
        return ok(self.staff.post(f"/applications/{endorsed['application_id']}/admission",
                                  json={"jury": "recommended"}))


def network(api: LiveServer) -> Iterator[Network]:
    actors = Network(api)
    try:
        yield actors
    finally:
        actors.close()


def read_models(settings: Settings) -> ReadModelStore:
    """The read-model tables the server's projections write, opened beside the server."""
    return build_read_models(settings)


def settled(store: ReadModelStore, api: LiveServer) -> dict[str, Any]:
    """Every read-model table once the projections have caught up with the whole log."""
    head = api.registry.recorder.max_notification_id() or 0
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    pause = threading.Event()
    while not all(position >= head for position, _ in store.positions().values()):
        assert time.monotonic() < deadline, f"the projections did not reach {head}"
        pause.wait(0.02)  # waiting on a condition (the stored positions), with a timeout
    tables = ("members", "deadlines", "quotas", "applications")
    return {"head": head, **{table: store.rows(table) for table in tables}}
