"""Fixtures: application tests run on SQLite and on PostgreSQL, built by the composition root."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from application.registry import Registry
from domain.acts import Actor, Role
from infrastructure.bootstrap import build_registry
from infrastructure.settings import Settings

BERLIN = ZoneInfo("Europe/Berlin")
SECRETARIAT = Actor("uil-secretariat", Role.SECRETARIAT)
COMMISSION = Actor("national-commission", Role.NATIONAL_COMMISSION)
CITY = Actor("city-hall", Role.CITY)
AUDITOR = Actor("auditor", Role.AUDITOR)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-postgres", action="store_true",
                     help="fail, instead of skipping, when PostgreSQL is unreachable (CI)")
    parser.addoption("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test",
                     help="the PostgreSQL database the tests create their schemas in")
    parser.addoption("--require-nats", action="store_true",
                     help="fail, instead of skipping, when NATS is unreachable (CI)")
    parser.addoption("--require-chromium", action="store_true",
                     help="fail, instead of skipping, when Debian's chromium is missing (CI)")
    parser.addoption("--nats-url", default="nats://127.0.0.1:4222",
                     help="the NATS server with JetStream the relay tests publish to")


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> str:
    url: str = request.config.getoption("--nats-url")
    host, _, port = url.removeprefix("nats://").partition(":")
    try:
        socket.create_connection((host, int(port or 4222)), timeout=3).close()
    except OSError:
        if request.config.getoption("--require-nats"):
            pytest.fail(f"NATS is required but unreachable at {url}")
        pytest.skip(f"NATS unreachable at {url}")
    return url


def _postgres_available(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    url: str = request.config.getoption("--postgres-url")
    if not _postgres_available(url):
        if request.config.getoption("--require-postgres"):
            pytest.fail(f"PostgreSQL is required but unreachable at {url}")
        pytest.skip(f"PostgreSQL unreachable at {url}")
    return url


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A database URL on a schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{postgres_url}?schema={schema}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gnlc.sqlite"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url)


@dataclass
class SettableClock:
    """The business clock of a test, set to Berlin wall-clock times."""

    at: datetime = datetime(2019, 3, 15, 12, 0, tzinfo=BERLIN)
    overridden: bool = True

    def now(self) -> datetime:
        return self.at

    def set(self, text: str) -> None:
        """Set from 'YYYY-MM-DD HH:MM' in Berlin, or a full ISO timestamp with offset."""
        moment = datetime.fromisoformat(text)
        self.at = moment if moment.tzinfo else moment.replace(tzinfo=BERLIN)


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock()


@pytest.fixture
def registry(settings: Settings, clock: SettableClock) -> Iterator[Registry]:
    registry = build_registry(settings, clock)
    yield registry
    registry.close()


def application_form(city: str = "Hamburg", country: str = "DE", **changes: Any) -> dict[str, Any]:
    """A complete, valid Part 1 of the application form."""
    form: dict[str, Any] = {
        "city": city,
        "country": country,
        "website": "https://www.example.org",
        "mayor": {"title": "Dr", "full_name": "Ada Mayor", "official_title": "First Mayor"},
        "contact": {
            "full_name": "Grace Contact", "official_title": "Head of Learning",
            "organisation": "City Hall", "postal_address": "1 Town Square",
            "phone": "+49 40 0000", "email": "learning@example.org",
        },
        "language": "en",
        "profile": {"population": {"value": 1_800_000, "year": 2018},
                    "area_km2": {"value": 755.2, "year": 2018}},
        "motivation": "Lifelong learning for all.",
        "implementation": "Learning festivals in every district.",
        "pledge": True,
        "signed_on": "2019-02-20",
    }
    form.update(changes)
    return form


def progress_report(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "covering_from": "2019-04-01", "covering_to": "2021-03-31",
        "summary": "We opened ten community learning centres.",
        "statistics": {"learners": 12000}, "links": ["https://www.example.org/report"],
    }
    report.update(changes)
    return report


def endorsed_application(registry: Registry, city: str, country: str = "DE") -> Any:
    """Submit and endorse an application at the current business time; return the submission."""
    submission = registry.submit_application(CITY, application_form(city, country))
    registry.endorse(COMMISSION, submission.application_id)
    return submission


def admitted_city(registry: Registry, city: str, country: str = "DE") -> Any:
    submission = endorsed_application(registry, city, country)
    registry.admit(SECRETARIAT, submission.application_id)
    return submission


@pytest.fixture
def api(settings: Settings, clock: SettableClock) -> Iterator[Any]:
    """The HTTP API on a loopback port (SQLite and PostgreSQL), with its projection runner."""
    from tests.live_server import live_server

    with live_server(settings, clock) as server:
        yield server
