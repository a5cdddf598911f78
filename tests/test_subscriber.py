"""docs/subscriber.py, the reference subscriber, run as a downstream team would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.acts import Role
from tests.conftest import (
    CITY,
    COMMISSION,
    SECRETARIAT,
    SettableClock,
    admitted_city,
    application_form,
)
from tests.live_server import LiveServer
from tests.test_feed import feed_positions

SUBSCRIBER = Path(__file__).resolve().parents[1] / "docs" / "subscriber.py"
TIMEOUT = 120.0


def run(api: LiveServer, token: str, state: Path, *args: str
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SUBSCRIBER), "--url", api.url, "--state", str(state), *args],
        env={**os.environ, "GNLC_TOKEN": token}, capture_output=True, text=True,
        timeout=TIMEOUT, check=False)


def run_once(api: LiveServer, token: str, state: Path) -> dict[str, Any]:
    done = run(api, token, state, "--once")
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def local_members(state: Path) -> dict[str, Any]:
    members: dict[str, Any] = json.loads(state.read_text())["members"]
    return members


def server_members(api: LiveServer, staff: httpx.Client) -> dict[str, Any]:
    """GET /members?status=all, once the read models include every event written so far."""
    position = feed_positions(api.registry)[-1]
    response = staff.get("/members", params={"status": "all", "min_position": position})
    assert response.status_code == 200, response.text
    return {row["city_id"]: {"name": row["name"], "country": row["country"],
                             "status": row["status"]} for row in response.json()["items"]}


@pytest.fixture
def staff(api: LiveServer) -> Iterator[httpx.Client]:
    with api.client(api.token("uil-coordination", Role.SECRETARIAT)) as client:
        yield client


def test_the_subscriber_keeps_the_member_list_of_the_server_and_resumes_without_reprocessing(
    api: LiveServer, clock: SettableClock, staff: httpx.Client, tmp_path: Path
) -> None:
    registry, state = api.registry, tmp_path / "members.json"
    token = api.token("website", Role.SUBSCRIBER)
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    hamburg = admitted_city(registry, "Hamburg", "DE")
    lyon = admitted_city(registry, "Lyon", "FR")
    suwon = admitted_city(registry, "Suwon", "KR")
    nantes = registry.submit_application(CITY, application_form("Nantes", "FR"))
    registry.decline(COMMISSION, nantes.application_id, "Part 2 missing")

    first = run_once(api, token, state)
    assert first["processed"] == 4 + 3  # four cities registered, three memberships started
    assert local_members(state) == server_members(api, staff)
    assert {m["status"] for m in local_members(state).values()} == {"active"}
    assert first["after"] == json.loads(state.read_text())["after"] >= feed_positions(registry)[-1]

    # A restart with nothing new reads one empty page and applies nothing.
    assert run_once(api, token, state) == {**first, "processed": 0}

    clock.set("2019-04-20 12:00")
    registry.end_membership(SECRETARIAT, hamburg.city_id, "withdrawn_by_city")
    registry.retract(SECRETARIAT, lyon.application_id, "admitted in error")
    bremen = admitted_city(registry, "Bremen", "DE")
    api.token("newsletter", Role.SUBSCRIBER)  # not in the feed: passed over

    second = run_once(api, token, state)
    assert second["processed"] == 1 + 1 + 2  # ended, retracted, Bremen registered and started
    members = local_members(state)
    assert members == server_members(api, staff)
    assert members[str(hamburg.city_id)]["status"] == "ended"
    assert str(lyon.city_id) not in members
    assert members[str(suwon.city_id)] == {"name": "Suwon", "country": "KR", "status": "active"}
    assert members[str(bremen.city_id)]["status"] == "active"

    # Hamburg comes back: its second membership is active again.
    clock.set("2019-04-25 12:00")
    admitted_city(registry, "Hamburg", "DE")
    third = run_once(api, token, state)
    assert third["processed"] == 1
    assert local_members(state) == server_members(api, staff)
    assert local_members(state)[str(hamburg.city_id)]["status"] == "active"


def test_the_subscriber_left_running_picks_up_new_events_as_they_are_written(
    api: LiveServer, clock: SettableClock, staff: httpx.Client, tmp_path: Path
) -> None:
    registry, state = api.registry, tmp_path / "members.json"
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    admitted_city(registry, "Hamburg", "DE")
    process = subprocess.Popen(
        [sys.executable, str(SUBSCRIBER), "--url", api.url, "--state", str(state),
         "--interval", "0.05"],
        env={**os.environ, "GNLC_TOKEN": api.token("website", Role.SUBSCRIBER)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_members(state, 1, process)
        lyon = admitted_city(registry, "Lyon", "FR")
        admitted_city(registry, "Suwon", "KR")
        registry.retract(SECRETARIAT, lyon.application_id, "admitted in error")
        expected = server_members(api, staff)
        assert len(expected) == 2
        wait_for_members(state, expected, process)
    finally:
        process.terminate()
        process.communicate(timeout=TIMEOUT)


def wait_for_members(state: Path, expected: int | dict[str, Any],
                     process: subprocess.Popen[str]) -> None:
    """Poll the subscriber's state file until its member list is as expected (or fail)."""
    deadline = time.monotonic() + TIMEOUT
    found: Any = None
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if state.exists():
            found = local_members(state)
            if (len(found) if isinstance(expected, int) else found) == expected:
                return
        time.sleep(0.02)  # poll the file again, until the deadline
    pytest.fail(f"the subscriber's members are {found}, expected {expected}")


def test_the_subscriber_refuses_to_start_without_a_token(
    api: LiveServer, tmp_path: Path
) -> None:
    done = run(api, "", tmp_path / "members.json", "--once")
    assert done.returncode != 0 and "GNLC_TOKEN" in done.stderr
    assert not (tmp_path / "members.json").exists()
