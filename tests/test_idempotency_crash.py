"""An Idempotency-Key survives the death of the server between the commit of a command's events
and its response (SQLite and PostgreSQL): the retry, on a restarted server, answers from what
was committed with the key, and the command's events are stored once.

The server dies through a fault point of our own (`GNLC_TEST_EXIT_AFTER_COMMIT`): the process
exits right after the events commit, before the response is stored or sent."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from application.registry import Registry
from domain.acts import Role
from domain.applications import CityApplication
from domain.cities import City
from infrastructure.bootstrap import build_registry
from infrastructure.http.idempotency import EXIT_AFTER_COMMIT
from infrastructure.settings import Settings
from tests.conftest import (
    AUDITOR,
    CITY,
    COMMISSION,
    SECRETARIAT,
    application_form,
    progress_report,
)
from tests.live_server import GNLC, OPERATOR, ROOT, _wait_until_listening, free_port

CITY_TOKEN_NAME = "hamburg-office"


@contextmanager
def gnlc_serve(database_url: str, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    server = subprocess.Popen(
        [GNLC, "serve", "--port", str(port), "--no-projections"], cwd=ROOT,
        env={**os.environ, "GNLC_DATABASE_URL": database_url, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_listening(port)
        yield server, f"http://127.0.0.1:{port}"
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def prepared(database_url: str) -> Iterator[tuple[Registry, dict[str, Any]]]:
    """An endorsed application and an admitted city in this year's intake, and a token."""
    registry = build_registry(Settings(database_url=database_url))
    year = datetime.now(UTC).year
    registry.open_intake(SECRETARIAT, year, date(year, 1, 1), date(year, 12, 31))
    ids: dict[str, Any] = {}
    for name in ("Hamburg", "Bremen"):
        submitted = registry.submit_application(
            CITY, application_form(name, "DE", signed_on=f"{year}-01-02"))
        registry.endorse(COMMISSION, submitted.application_id)
        ids[name] = submitted
    registry.admit(SECRETARIAT, ids["Bremen"].application_id)
    ids["token"] = registry.issue_token(OPERATOR, "secretariat", Role.SECRETARIAT).token
    try:
        yield registry, ids
    finally:
        registry.close()


def _count(registry: Registry, kind: type, originator_id: Any) -> int:
    return sum(1 for r in registry.read_log(AUDITOR)
               if isinstance(r.event, kind) and r.event.originator_id == originator_id)


def _dies_after_the_commit(database_url: str, token: str, path: str, body: dict[str, Any],
                           key: str) -> None:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    with gnlc_serve(database_url, **{EXIT_AFTER_COMMIT: "1"}) as (server, url):
        with pytest.raises(httpx.TransportError):  # no response: the process is gone
            httpx.post(url + path, json=body, headers=headers, timeout=60)
        assert server.wait(timeout=30) == 75


def _retried_twice(database_url: str, token: str, path: str, body: dict[str, Any],
                   key: str) -> tuple[httpx.Response, httpx.Response]:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    with gnlc_serve(database_url) as (_, url):
        first = httpx.post(url + path, json=body, headers=headers, timeout=60)
        second = httpx.post(url + path, json=body, headers=headers, timeout=60)
    return first, second


def test_an_admission_retried_after_the_server_died_past_its_commit_is_admitted_once(
        prepared: tuple[Registry, dict[str, Any]], database_url: str) -> None:
    registry, ids = prepared
    application_id = ids["Hamburg"].application_id
    path, body = f"/applications/{application_id}/admission", {"reason": "jury"}
    _dies_after_the_commit(database_url, ids["token"], path, body, "admit-hamburg")
    assert _count(registry, CityApplication.Admitted, application_id) == 1  # it was committed

    first, second = _retried_twice(database_url, ids["token"], path, body, "admit-hamburg")
    assert first.status_code == 200, first.text
    year = datetime.now(UTC).year
    assert first.json() == {
        "application_id": str(application_id), "city_id": str(ids["Hamburg"].city_id),
        "status": "admitted", "quota": {"country": "DE", "year": year, "used": 2, "limit": 3},
        "position": registry.recorder.max_notification_id()}
    assert (second.status_code, second.json()) == (200, first.json())
    assert _count(registry, CityApplication.Admitted, application_id) == 1


def test_a_progress_report_retried_after_the_server_died_past_its_commit_is_stored_once(
        prepared: tuple[Registry, dict[str, Any]], database_url: str) -> None:
    registry, ids = prepared
    city_id = ids["Bremen"].city_id
    path, body = f"/cities/{city_id}/reports", progress_report()
    _dies_after_the_commit(database_url, ids["token"], path, body, "report-bremen")
    reported = [r.event for r in registry.read_log(AUDITOR)
                if isinstance(r.event, City.ReportSubmitted)]
    assert len(reported) == 1

    first, second = _retried_twice(database_url, ids["token"], path, body, "report-bremen")
    assert first.status_code == 201, first.text
    assert first.json() == {
        "city_id": str(city_id), "cycle": 1, "due": reported[0].due.isoformat(),
        "late": reported[0].late, "position": registry.recorder.max_notification_id()}
    assert (second.status_code, second.json()) == (201, first.json())
    assert sum(1 for r in registry.read_log(AUDITOR)
               if isinstance(r.event, City.ReportSubmitted)) == 1
