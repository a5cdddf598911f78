"""Cross-aggregate invariants under real concurrency: eight processes racing against one store.

Every test starts eight worker processes once (spawn, so each has its own interpreter, connections
and registry) and runs all its rounds inside them. Before each round the workers meet at a barrier,
then all issue their command at the same moment; each reports its outcome on a queue. The store is
then read back in the test process.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest

from application.clock import FixedClock
from application.registry import Registry
from domain.applications import CityApplication, Status
from domain.cities import City, city_id
from domain.errors import DuplicateApplication, GnlcError, QuotaExhausted
from domain.quotas import QuotaLedger, ledger_id
from infrastructure.bootstrap import build_registry
from infrastructure.settings import Settings
from tests.conftest import AUDITOR, COMMISSION, SECRETARIAT, SettableClock, application_form

pytestmark = pytest.mark.race

WORKERS = 8
QUOTA = 3
INTAKE_YEAR = 2019
# Inside the 2019 window (1 March .. 30 April, Europe/Berlin), under the 2018 regulations.
BUSINESS_TIME = "2019-03-15T12:00:00+01:00"

# One country per round, so that every round starts with an untouched quota.
COUNTRIES = [
    "FR", "ES", "IT", "PT", "BE", "NL", "AT", "CH", "PL", "CZ", "SK", "HU",
    "RO", "BG", "GR", "SE", "NO", "FI", "DK", "IE", "KR", "JP", "CN", "BR",
]  # fmt: skip
ADMISSION_ROUNDS = 20
SUBMISSION_ROUNDS = 5

BARRIER_TIMEOUT = 60.0
RESULT_TIMEOUT = 120.0
JOIN_TIMEOUT = 30.0

ADMITTED = "admitted"
SUBMITTED = "submitted"

# (round, kind, payload): kind "admit" with an application id, or "submit" with a form.
Command = tuple[int, str, Any]
# (round, worker, outcome, application id or diagnostic)
Outcome = tuple[int, int, str, str]


# --- the worker process ----------------------------------------------------------------------


def _race_worker(
    database_url: str,
    business_time: str,
    worker: int,
    commands: Sequence[Command],
    barrier: threading.Barrier,
    results: multiprocessing.Queue[Outcome],
) -> None:
    """Run one command per round, each one released together with the other workers'."""
    registry: Registry | None = None
    try:
        clock = FixedClock(datetime.fromisoformat(business_time))
        registry = build_registry(Settings(database_url=database_url), clock)
        for round_no, kind, payload in commands:
            barrier.wait(timeout=BARRIER_TIMEOUT)
            results.put((round_no, worker, *_run(registry, kind, payload)))
    except BaseException:
        # A broken barrier or a failed start: report it, so the test fails instead of waiting.
        results.put((-1, worker, "crashed", traceback.format_exc()))
        barrier.abort()
    finally:
        if registry is not None:
            registry.close()


def _run(registry: Registry, kind: str, payload: Any) -> tuple[str, str]:
    try:
        if kind == "admit":
            admission = registry.admit(SECRETARIAT, UUID(payload))
            return ADMITTED, str(admission.application_id)
        submission = registry.submit_application(SECRETARIAT, payload)
        return SUBMITTED, str(submission.application_id)
    except GnlcError as error:
        return error.code, error.message
    except Exception as error:
        return f"unexpected {type(error).__name__}", traceback.format_exc()


# --- the test process ------------------------------------------------------------------------


@contextmanager
def racing_workers(
    database_url: str, commands_per_worker: Sequence[Sequence[Command]]
) -> Iterator[multiprocessing.Queue[Outcome]]:
    """Start one spawned process per command list; yield the queue of their outcomes."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(commands_per_worker))
    results: multiprocessing.Queue[Outcome] = context.Queue()
    processes = [
        context.Process(
            target=_race_worker,
            args=(database_url, BUSINESS_TIME, worker, commands, barrier, results),
            name=f"race-worker-{worker}",
            daemon=True,
        )
        for worker, commands in enumerate(commands_per_worker)
    ]
    for process in processes:
        process.start()
    try:
        yield results
    finally:
        for process in processes:
            process.join(timeout=JOIN_TIMEOUT)
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=JOIN_TIMEOUT)
        results.close()
        results.join_thread()


def collect(results: multiprocessing.Queue[Outcome], rounds: int) -> dict[int, list[Outcome]]:
    """The outcomes of every round, WORKERS per round; fails on a crashed worker or a timeout."""
    by_round: dict[int, list[Outcome]] = {r: [] for r in range(rounds)}
    for _ in range(rounds * WORKERS):
        try:
            outcome = results.get(timeout=RESULT_TIMEOUT)
        except queue.Empty:
            pytest.fail(
                f"no outcome within {RESULT_TIMEOUT} s; so far: "
                f"{ {r: [o[2] for o in outcomes] for r, outcomes in by_round.items()} }"
            )
        round_no, worker, code, detail = outcome
        if code == "crashed":
            pytest.fail(f"worker {worker} crashed:\n{detail}")
        by_round[round_no].append(outcome)
    return by_round


def describe(outcomes: Sequence[Outcome]) -> str:
    return "\n".join(f"  worker {w}: {code}: {detail}" for _, w, code, detail in outcomes)


@pytest.fixture
def setup_registry(database_url: str) -> Iterator[Registry]:
    """The registry of the test process; it creates the schema before any worker starts."""
    clock = SettableClock(at=datetime.fromisoformat(BUSINESS_TIME))
    registry = build_registry(Settings(database_url=database_url), clock)
    registry.open_intake(SECRETARIAT, INTAKE_YEAR)
    yield registry
    registry.close()


def endorsed_applications(registry: Registry, country: str) -> list[UUID]:
    """WORKERS endorsed applications of `country` to the intake, one per city."""
    ids = []
    for n in range(WORKERS):
        form = application_form(city=f"Quota City {country} {n + 1}", country=country)
        submission = registry.submit_application(SECRETARIAT, form)
        registry.endorse(COMMISSION, submission.application_id)
        ids.append(submission.application_id)
    return ids


# --- the tests -------------------------------------------------------------------------------


def test_eight_simultaneous_admissions_for_one_country_never_exceed_the_quota_of_three(
    database_url: str, setup_registry: Registry
) -> None:
    countries = COUNTRIES[:ADMISSION_ROUNDS]
    applications = {r: endorsed_applications(setup_registry, c) for r, c in enumerate(countries)}
    commands = [
        [(r, "admit", str(applications[r][worker])) for r in range(ADMISSION_ROUNDS)]
        for worker in range(WORKERS)
    ]

    with racing_workers(database_url, commands) as results:
        by_round = collect(results, ADMISSION_ROUNDS)

    for round_no, country in enumerate(countries):
        outcomes = by_round[round_no]
        codes = sorted(code for _, _, code, _ in outcomes)
        assert codes == [ADMITTED] * QUOTA + [QuotaExhausted.code] * (WORKERS - QUOTA), (
            f"round {round_no} ({country}):\n{describe(outcomes)}"
        )
        winners = {UUID(detail) for _, _, code, detail in outcomes if code == ADMITTED}

        stored = {app_id: setup_registry.application(SECRETARIAT, app_id)
                  for app_id in applications[round_no]}
        admitted = {app_id for app_id, app in stored.items() if app.status == Status.ADMITTED}
        assert admitted == winners, f"round {round_no} ({country})"
        assert all(
            app.status == Status.ENDORSED for app_id, app in stored.items() if app_id not in winners
        ), f"round {round_no} ({country}): a refused application changed status"

        ledger: object = setup_registry.repository.get(ledger_id(country, INTAKE_YEAR))
        assert isinstance(ledger, QuotaLedger)
        assert ledger.used == QUOTA, f"round {round_no} ({country})"
        assert set(ledger.admitted) == winners, f"round {round_no} ({country})"
        for app_id in winners:
            city = setup_registry.city(SECRETARIAT, stored[app_id].city_id)
            assert city.active_membership is not None
            assert city.active_membership.application_id == app_id


def test_eight_simultaneous_submissions_for_one_city_leave_exactly_one_open_application(
    database_url: str, setup_registry: Registry
) -> None:
    cities = [("DE", f"Race City {r + 1}") for r in range(SUBMISSION_ROUNDS)]
    commands = [
        [
            (r, "submit", application_form(city=name, country=country))
            for r, (country, name) in enumerate(cities)
        ]
        for _ in range(WORKERS)
    ]

    with racing_workers(database_url, commands) as results:
        by_round = collect(results, SUBMISSION_ROUNDS)

    for round_no, (country, name) in enumerate(cities):
        outcomes = by_round[round_no]
        codes = sorted(code for _, _, code, _ in outcomes)
        assert codes == [DuplicateApplication.code] * (WORKERS - 1) + [SUBMITTED], (
            f"round {round_no} ({name}):\n{describe(outcomes)}"
        )
        (winner,) = (UUID(detail) for _, _, code, detail in outcomes if code == SUBMITTED)

        city = setup_registry.city(SECRETARIAT, city_id(country, name))
        assert city.open_application_id == winner, f"round {round_no} ({name})"
        lodged = [
            event
            for event in setup_registry.repository.event_store.get(city.id)
            if isinstance(event, City.ApplicationLodged)
        ]
        assert [event.application_id for event in lodged] == [winner], f"round {round_no}"
        application = setup_registry.application(SECRETARIAT, winner)
        assert isinstance(application, CityApplication)
        assert application.status == Status.SUBMITTED
        assert application.city_id == city.id

    applications = {
        event.originator_id
        for record in setup_registry.read_log(AUDITOR)
        if isinstance((event := record.event), CityApplication.Submitted)
    }
    assert len(applications) == SUBMISSION_ROUNDS, "a refused submission left an application"
