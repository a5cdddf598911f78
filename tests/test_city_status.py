"""A city's status (`applicant`, `active`, `ended`) is defined once, in the domain: the aggregate,
the `members` read model and its past-state fold, `GET /cities/{id}`, the audit state view, and
`gnlc show city` / `gnlc audit state` / `gnlc members` all say the same for every history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.registry import Registry
from domain.acts import Role
from tests.conftest import SECRETARIAT, SettableClock, admitted_city, endorsed_application
from tests.http_support import Network, network, ok
from tests.live_server import LiveServer
from tests.test_cli import Gnlc

# Each history is played by a city of its own country, so that no quota gets in the way.
EXPECTED = {
    "applicant": "applicant",
    "active member": "active",
    "ended member": "ended",
    "retracted only": "applicant",
    "readmitted after its end": "active",
    "readmission retracted": "ended",
    "retracted, then admitted again": "active",
}


def _play(registry: Registry, clock: SettableClock) -> dict[str, UUID]:
    """The histories of EXPECTED, in the 2019 intake; the city id of each."""
    clock.set("2019-01-10 10:00")
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    ids = {"applicant": endorsed_application(registry, "Hamburg", "DE").city_id,
           "active member": admitted_city(registry, "Lyon", "FR").city_id}
    ended = admitted_city(registry, "Turin", "IT").city_id
    retracted = admitted_city(registry, "Porto", "PT")
    readmitted = admitted_city(registry, "Graz", "AT").city_id
    readmission = admitted_city(registry, "Ghent", "BE").city_id
    comeback = admitted_city(registry, "Aarhus", "DK")
    registry.retract(SECRETARIAT, retracted.application_id, "corrigendum")
    registry.retract(SECRETARIAT, comeback.application_id, "corrigendum")
    clock.set("2019-03-20 12:00")
    for city in (ended, readmitted, readmission):
        registry.end_membership(SECRETARIAT, city, "withdrawn_by_city")
    clock.set("2019-03-21 12:00")
    admitted_city(registry, "Graz", "AT")
    admitted_city(registry, "Aarhus", "DK")
    again = admitted_city(registry, "Ghent", "BE")
    clock.set("2019-03-22 12:00")
    registry.retract(SECRETARIAT, again.application_id, "corrigendum")
    return {**ids, "ended member": ended, "retracted only": retracted.city_id,
            "readmitted after its end": readmitted, "readmission retracted": readmission,
            "retracted, then admitted again": comeback.city_id}


@pytest.fixture
def net(api: LiveServer) -> Iterator[Network]:
    yield from network(api)


def test_every_edge_gives_a_city_the_same_status_as_the_domain(
        api: LiveServer, net: Network, clock: SettableClock, database_url: str,
        tmp_path: Path) -> None:
    cities = _play(api.registry, clock)
    head = api.registry.recorder.max_notification_id()
    auditor = net.client("auditor", Role.AUDITOR)
    gnlc = Gnlc(database_url, tmp_path)
    member_statuses = {"active", "ended"}  # `members` lists members only, not applicants

    def each(status_of: Any) -> dict[str, str]:
        return {history: status_of(str(cid)) for history, cid in cities.items()}

    def listed(answer: Any) -> dict[str, str]:
        rows = answer["items"] if isinstance(answer, dict) else answer  # HTTP pages, CLI lists
        by_id = {row["city_id"]: row["status"] for row in rows}
        return {history: by_id[str(cid)] for history, cid in cities.items()
                if str(cid) in by_id}

    assert each(lambda cid: ok(net.staff.get(f"/cities/{cid}"))["status"]) == EXPECTED
    assert each(lambda cid: ok(auditor.get(f"/audit/cities/{cid}"))["city"]["status"]) == (
        EXPECTED)
    assert each(lambda cid: gnlc.ok("show", "city", cid, now=None)["status"]) == EXPECTED
    assert each(lambda cid: gnlc.ok("audit", "state", cid, now=None)["city"]["status"]) == (
        EXPECTED)
    assert each(lambda cid: api.registry.city(SECRETARIAT, UUID(cid)).status) == EXPECTED
    members = {h: s for h, s in EXPECTED.items() if s in member_statuses}
    assert listed(ok(net.staff.get("/members", params={
        "status": "all", "min_position": head}))) == members
    assert listed(ok(net.staff.get("/members", params={
        "status": "all", "as_of": "2019-12-31"}))) == members
    assert listed(gnlc.ok("members", "--status", "all", "--as-of", "2019-12-31",
                          now=None)) == members

