"""One Idempotency-Key sent by two clients at once (SQLite and PostgreSQL): the admission happens
once, and both clients get the same response."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from domain.acts import Role
from domain.applications import CityApplication
from tests.conftest import AUDITOR, SECRETARIAT, endorsed_application
from tests.live_server import LiveServer

ROUNDS = 8
# One city per round, in countries of their own so that the quota never refuses one.
CITIES = [("Hamburg", "DE"), ("Lyon", "FR"), ("Turin", "IT"), ("Porto", "PT"),
          ("Cork", "IE"), ("Gent", "BE"), ("Graz", "AT"), ("Malmö", "SE")]


def _admissions(api: LiveServer, application_id: Any) -> int:
    return sum(1 for r in api.registry.read_log(AUDITOR)
               if isinstance(r.event, CityApplication.Admitted)
               and r.event.originator_id == application_id)


def _send_together(start: threading.Barrier, client: httpx.Client, path: str,
                   body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    start.wait()  # both threads leave the barrier together
    return client.post(path, json=body, headers=headers)


def test_the_same_admission_sent_twice_at_once_with_one_key_is_admitted_once(
        api: LiveServer) -> None:
    api.registry.open_intake(SECRETARIAT, 2019)
    token = api.token("uil-coordination", Role.SECRETARIAT)
    assert len(CITIES) >= ROUNDS
    with api.client(token) as first, api.client(token) as second, \
            ThreadPoolExecutor(max_workers=2) as pool:
        for round_, (name, country) in enumerate(CITIES[:ROUNDS]):
            application_id = endorsed_application(api.registry, name, country).application_id
            start = threading.Barrier(2, timeout=30)
            request = (f"/applications/{application_id}/admission",
                       {"reason": "jury", "jury": "recommended"},
                       {"Idempotency-Key": f"admit-{round_}"})
            responses = [f.result(timeout=120) for f in [
                pool.submit(_send_together, start, first, *request),
                pool.submit(_send_together, start, second, *request)]]
            (a, b) = responses
            assert a.status_code == 200, a.text
            assert (b.status_code, b.json()) == (a.status_code, a.json()), name
            assert a.json()["quota"] == {"country": country, "year": 2019, "used": 1,
                                         "limit": 3}
            assert _admissions(api, application_id) == 1, name
