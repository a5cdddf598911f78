"""Who may read what, decided by the use cases (no HTTP): every role against every read.

The registry's reads and the read-model queries authorise the actor themselves, as the writes
do, so the CLI, HTTP and any later edge share one rule. A scoped actor (a Commission's country,
a city's own id) is refused the same way for an id outside its scope whether it exists or not:
its answers never tell whether a city outside its scope ever applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID, uuid4

import pytest
from typer.testing import CliRunner

from application.registry import Registry
from domain.access import read_scope
from domain.acts import Actor, Role
from domain.cities import city_id
from domain.errors import Forbidden, NotFound
from infrastructure.bootstrap import build_read_side
from infrastructure.cli import app
from infrastructure.settings import Settings
from tests.conftest import (
    CITY,
    COMMISSION,
    SECRETARIAT,
    admitted_city,
    application_form,
    progress_report,
)

HAMBURG = city_id("DE", "Hamburg")
BREMEN = city_id("DE", "Bremen")
LYON = city_id("FR", "Lyon")
NEVER_APPLIED = city_id("DE", "Nirgendwo")  # derivable by anyone, but no such city applied

ACTORS = {
    "secretariat": Actor("staff", Role.SECRETARIAT),
    "auditor": Actor("auditor", Role.AUDITOR),
    "commission-de": Actor("commission-de", Role.NATIONAL_COMMISSION, country="DE"),
    "commission-fr": Actor("commission-fr", Role.NATIONAL_COMMISSION, country="FR"),
    "city-hamburg": Actor("city-hamburg", Role.CITY, city_id=HAMBURG),
    "city-bremen": Actor("city-bremen", Role.CITY, city_id=BREMEN),
    "subscriber": Actor("subscriber", Role.SUBSCRIBER),
}
EVERYONE = frozenset(ACTORS)
UNSCOPED_READERS = frozenset({"secretariat", "auditor"})
HAMBURG_READERS = UNSCOPED_READERS | {"commission-de", "city-hamburg"}
LIST_READERS = EVERYONE - {"subscriber"}


@pytest.fixture
def world(registry: Registry) -> dict[str, UUID]:
    """Hamburg and Lyon admitted in 2019, Bremen applying."""
    registry.open_intake(SECRETARIAT, 2019)
    hamburg = admitted_city(registry, "Hamburg").application_id
    admitted_city(registry, "Lyon", "FR")
    registry.submit_application(CITY, application_form("Bremen"))
    return {"hamburg_application": hamburg}


@dataclass(frozen=True)
class Read:
    name: str
    allowed: frozenset[str]
    run: Callable[[Registry, Any, Actor, dict[str, UUID]], object]


def _rows(table: str, past: bool = False) -> Callable[..., object]:
    """A read-model query as every edge makes it: the scope first, then the narrowed rows."""
    def run(_: Registry, read_side: Any, actor: Actor, __: dict[str, UUID]) -> object:
        scope = read_scope(actor, None, past=past)
        as_of = date(2019, 12, 31) if past else None
        return scope.narrow(read_side.rows(table, as_of, reader=actor))
    return run


READS = [
    Read("application", HAMBURG_READERS,
         lambda r, _, a, ids: r.application(a, ids["hamburg_application"])),
    Read("city", HAMBURG_READERS, lambda r, _, a, ids: r.city(a, HAMBURG)),
    Read("history", HAMBURG_READERS, lambda r, _, a, ids: r.history(a, HAMBURG)),
    Read("city_at", UNSCOPED_READERS,
         lambda r, _, a, ids: r.city_at(a, HAMBURG, date(2019, 12, 31))),
    Read("read_log", UNSCOPED_READERS, lambda r, _, a, ids: list(r.read_log(a))),
    Read("intakes", LIST_READERS, lambda r, _, a, ids: r.intakes(a)),
    *(Read(table, LIST_READERS, _rows(table))
      for table in ("members", "quotas", "deadlines", "applications")),
    *(Read(f"{table} as of a past day", UNSCOPED_READERS, _rows(table, past=True))
      for table in ("members", "quotas")),
]


def test_each_role_reads_exactly_what_its_permissions_and_scope_allow(
        registry: Registry, settings: Settings, world: dict[str, UUID]) -> None:
    read_side = build_read_side(settings, registry)
    outcomes: dict[tuple[str, str], str] = {}
    expected: dict[tuple[str, str], str] = {}
    for name, actor in ACTORS.items():
        for read in READS:
            expected[name, read.name] = "allowed" if name in read.allowed else "forbidden"
            try:
                read.run(registry, read_side, actor, world)
                outcomes[name, read.name] = "allowed"
            except Forbidden:
                outcomes[name, read.name] = "forbidden"
    read_side.store.engine.dispose()
    assert outcomes == expected


def test_a_scoped_reader_gets_only_the_rows_of_its_country_or_city(
        registry: Registry, settings: Settings, world: dict[str, UUID]) -> None:
    read_side = build_read_side(settings, registry)
    try:
        def members(actor: Actor, country: str | None = None) -> set[str]:
            scope = read_scope(actor, country)
            return {r["name"] for r in scope.narrow(read_side.rows("members", reader=actor))}

        # the members table has a row per city, applicants included
        assert members(ACTORS["secretariat"]) == {"Bremen", "Hamburg", "Lyon"}
        assert members(ACTORS["secretariat"], "FR") == {"Lyon"}
        assert members(ACTORS["commission-de"]) == {"Bremen", "Hamburg"}
        assert members(ACTORS["commission-fr"]) == {"Lyon"}
        assert members(ACTORS["city-hamburg"]) == {"Hamburg"}
        assert members(ACTORS["city-bremen"]) == {"Bremen"}
        quotas = read_scope(ACTORS["city-hamburg"]).narrow(
            read_side.rows("quotas", reader=ACTORS["city-hamburg"]))
        assert quotas == []  # a country's quota is no one city's row
        with pytest.raises(Forbidden):
            read_scope(ACTORS["commission-de"], "FR")
        with pytest.raises(Forbidden):
            read_scope(ACTORS["commission-de"], None, past=True)
    finally:
        read_side.store.engine.dispose()


# --- unknown and foreign ids look alike to a scoped actor --------------------------------------

def _outcome(action: Callable[[UUID], object], subject: UUID) -> tuple[str, str]:
    try:
        action(subject)
    except (Forbidden, NotFound) as error:
        return error.code, str(error)
    return "done", ""


@pytest.mark.parametrize("who", ["commission-fr", "city-bremen"])
def test_a_scoped_actor_cannot_tell_an_unknown_city_from_a_foreign_one(
        registry: Registry, world: dict[str, UUID], who: str) -> None:
    actor = ACTORS[who]
    reads: list[Callable[[UUID], object]] = [
        lambda c: registry.city(actor, c),
        lambda c: registry.history(actor, c),
        lambda c: registry.submit_report(actor, c, progress_report()),
        lambda c: registry.end_membership(actor, c, "other"),
    ]
    count = registry.count_events()
    for read in reads:
        foreign, unknown = _outcome(read, HAMBURG), _outcome(read, NEVER_APPLIED)
        assert foreign == unknown
        assert foreign[0] == "forbidden"
    assert registry.count_events() == count


@pytest.mark.parametrize("who", ["commission-fr", "city-bremen"])
def test_a_scoped_actor_cannot_tell_an_unknown_application_from_a_foreign_one(
        registry: Registry, world: dict[str, UUID], who: str) -> None:
    actor = ACTORS[who]
    acts: list[Callable[[UUID], object]] = [
        lambda a: registry.application(actor, a),
        lambda a: registry.endorse(actor, a),
        lambda a: registry.decline(actor, a, "incomplete"),
        lambda a: registry.withdraw(actor, a, "next year"),
        lambda a: registry.admit(actor, a),
        lambda a: registry.retract(actor, a, "corrigendum"),
    ]
    count = registry.count_events()
    for act in acts:
        foreign = _outcome(act, world["hamburg_application"])
        unknown = _outcome(act, uuid4())
        assert foreign == unknown
        assert foreign[0] == "forbidden"
    assert registry.count_events() == count


def test_those_who_may_see_an_id_learn_that_it_does_not_exist(
        registry: Registry, world: dict[str, UUID]) -> None:
    for actor in (ACTORS["secretariat"], ACTORS["auditor"]):
        with pytest.raises(NotFound):
            registry.city(actor, NEVER_APPLIED)
        with pytest.raises(NotFound):
            registry.application(actor, uuid4())
    # A city's own id is in its scope even before it applied; a Commission's unknown id is not
    # known to be its country's.
    with pytest.raises(NotFound):
        registry.city(Actor("nirgendwo", Role.CITY, city_id=NEVER_APPLIED), NEVER_APPLIED)
    with pytest.raises(Forbidden):
        registry.city(ACTORS["commission-de"], NEVER_APPLIED)
    with pytest.raises(NotFound):  # unscoped test actors of the other roles, as on the CLI
        registry.endorse(COMMISSION, uuid4())
    with pytest.raises(NotFound):
        registry.submit_report(CITY, NEVER_APPLIED, progress_report())


def test_a_role_without_the_permission_is_refused_before_anything_is_looked_up(
        registry: Registry, world: dict[str, UUID]) -> None:
    subscriber = ACTORS["subscriber"]
    for action in (lambda: registry.city(subscriber, NEVER_APPLIED),
                   lambda: registry.application(subscriber, uuid4()),
                   lambda: registry.end_membership(COMMISSION, NEVER_APPLIED, "other"),
                   lambda: registry.admit(COMMISSION, uuid4())):
        with pytest.raises(Forbidden):
            action()


# --- the command line reads in the role of its command -----------------------------------------

def test_the_command_line_reads_as_the_secretariat_and_audits_as_an_auditor(
        registry: Registry, settings: Settings, world: dict[str, UUID]) -> None:
    def gnlc(*args: str) -> Any:
        result = CliRunner().invoke(app, ["--database-url", settings.database_url,
                                          "--now", "2019-12-31T12:00:00+01:00", *args, "--json"])
        assert result.exit_code == 0, result.stderr or result.output
        return json.loads(result.stdout)

    application = str(world["hamburg_application"])
    assert gnlc("show", "application", application)["city"] == "Hamburg"
    assert gnlc("show", "city", str(HAMBURG))["name"] == "Hamburg"
    assert gnlc("history", str(HAMBURG))
    assert gnlc("audit", "state", str(HAMBURG), "--as-of", "2019-12-31")["city"]["name"] == (
        "Hamburg")
    assert {m["name"] for m in gnlc("members", "--as-of", "2019-12-31")} == {"Hamburg", "Lyon"}
    assert {m["name"] for m in gnlc("members", "--country", "FR")} == {"Lyon"}
    assert {q["country"] for q in gnlc("quotas", "--known-at", "2099-01-01T00:00:00+00:00")} == {
        "DE", "FR"}
    assert {a["city"] for a in gnlc("applications")} == {"Bremen", "Hamburg", "Lyon"}
    assert gnlc("deadlines", "--today", "2021-06-01")
