"""Idempotency keys (SQLite and PostgreSQL): a first request is never taken over while it runs,
however long it takes (a retry waits for it, then answers with its outcome); and every command
whose response was lost after its commit answers a retry from the events committed with its key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from domain.cities import city_id
from domain.errors import Conflict
from infrastructure.bootstrap import build_idempotency_keys, build_registry
from infrastructure.eventstore.command_keys import PendingKey, pending_key
from infrastructure.http import idempotency
from infrastructure.http.idempotency import Outcome, Recorded, StillRunning
from infrastructure.settings import Settings
from tests.conftest import SECRETARIAT, SettableClock, application_form, progress_report
from tests.http_support import Network, network, ok
from tests.live_server import LiveServer

HAMBURG = city_id("DE", "Hamburg")


def _never(_: Recorded) -> Outcome:
    raise AssertionError("nothing was committed with the key")


def test_a_retry_while_the_first_request_still_runs_never_runs_the_command_again(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    build_registry(settings).close()
    keys = build_idempotency_keys(settings)
    runs: list[str] = []
    started, finish = threading.Event(), threading.Event()

    def slow() -> Outcome:
        runs.append("first")
        started.set()
        assert finish.wait(60)  # still running while the retries come
        return 201, {"done": 1}

    def again() -> Outcome:
        runs.append("again")
        return 201, {"done": 2}

    def keep(*_: Any) -> bool:
        return True

    monkeypatch.setattr(idempotency, "WAIT_FOR_FIRST_SECONDS", 0.2)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(keys.once, "staff", "k", "print", slow, keep, _never)
            assert started.wait(60)
            for _ in range(3):
                with pytest.raises(StillRunning):
                    keys.once("staff", "k", "print", again, keep, _never)
            finish.set()
            assert first.result(timeout=60) == (201, {"done": 1})
        assert keys.once("staff", "k", "print", again, keep, _never) == (201, {"done": 1})
        assert runs == ["first"]
    finally:
        finish.set()
        keys.engine.dispose()


# --- every command rebuilds its response from the events committed with its key --------------

@pytest.fixture
def net(api: LiveServer) -> Iterator[Network]:
    yield from network(api)


class Retries:
    """Sends a keyed command, forgets its stored response as a crash right after the commit
    would, and retries: the rebuilt answer must be the first one, and nothing is written."""

    def __init__(self, settings: Settings, api: LiveServer) -> None:
        self.keys = build_idempotency_keys(settings)
        self.api = api
        self.number = 0

    def post(self, client: httpx.Client, path: str, body: dict[str, Any],
             status: int = 200) -> dict[str, Any]:
        self.number += 1
        key = {"Idempotency-Key": f"command-{self.number}"}
        first = client.post(path, json=body, headers=key)
        assert first.status_code == status, first.text
        written = self.api.registry.count_events()
        t = self.keys.table
        with self.keys.engine.begin() as connection:
            forgotten = connection.execute(update(t).where(t.c.idem_key == key["Idempotency-Key"])
                                           .values(status=None, body=None))
        assert forgotten.rowcount == 1  # the key was recorded with the events
        again = client.post(path, json=body, headers=key)
        assert (again.status_code, again.json()) == (status, first.json()), path
        assert self.api.registry.count_events() == written
        answer: dict[str, Any] = first.json()
        return answer


def test_every_command_answers_a_retry_from_its_committed_events_when_its_response_was_lost(
        net: Network, settings: Settings, api: LiveServer, clock: SettableClock) -> None:
    retries = Retries(settings, api)
    try:
        staff = net.staff
        retries.post(staff, "/intakes", {"year": 2019}, 201)
        retries.post(staff, "/intakes/2019/extensions",
                     {"closes": "2019-05-31", "reason": "more time"})

        def submitted(name: str) -> str:
            answer = retries.post(net.city(name), "/applications", application_form(name), 201)
            return str(answer["application_id"])

        def endorsed(name: str) -> str:
            application_id = submitted(name)
            retries.post(net.commission("DE"), f"/applications/{application_id}/endorsement", {})
            return application_id

        hamburg = endorsed("Hamburg")
        retries.post(staff, f"/applications/{hamburg}/admission", {"jury": "recommended"})
        retries.post(net.commission("DE"), f"/applications/{submitted('Bremen')}/declination",
                     {"reason": "incomplete"})
        retries.post(net.city("Kiel"), f"/applications/{submitted('Kiel')}/withdrawal",
                     {"reason": "not this year"})
        retries.post(staff, f"/applications/{endorsed('Essen')}/rejection",
                     {"reason": "jury", "jury": "not_recommended"})
        bonn = endorsed("Bonn")
        ok(staff.post(f"/applications/{bonn}/admission", json={}))
        retries.post(staff, f"/applications/{bonn}/retraction", {"reason": "corrigendum"})
        clock.set("2021-03-20 10:00")
        report = retries.post(net.city("Hamburg"), f"/cities/{HAMBURG}/reports",
                              progress_report(), 201)
        assert (report["cycle"], report["due"], report["late"]) == (1, "2021-03-15", True)
        retries.post(staff, f"/cities/{HAMBURG}/membership-end",
                     {"reason": "withdrawn_by_city", "note": "by letter"})
    finally:
        retries.keys.engine.dispose()


def test_only_one_transaction_can_ever_commit_events_under_one_key(settings: Settings) -> None:
    """The last guard, should a key's lock ever be lost while its request runs: the key's row is
    inserted with the events, and its primary key refuses a second one."""
    registry = build_registry(settings)
    keys = build_idempotency_keys(settings)
    token = pending_key.set(PendingKey("staff", "one-key", "print"))
    try:
        registry.open_intake(SECRETARIAT, 2019)
        written = registry.count_events()
        with pytest.raises(Conflict):
            registry.open_intake(SECRETARIAT, 2020)
        assert registry.count_events() == written
    finally:
        pending_key.reset(token)
        keys.engine.dispose()
        registry.close()
