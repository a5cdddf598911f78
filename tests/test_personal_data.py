"""Personal data: sealed in events, contact updates, and erasure by destroying the data keys.

The same tests run on SQLite and on PostgreSQL. The values searched for are unusual enough that
finding one anywhere can only be a leak."""

from __future__ import annotations

import base64
import json
import subprocess
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from application.registry import Registry
from domain.acts import Actor, Role
from domain.errors import Forbidden, InvalidInput, NotFound
from infrastructure.audit.log import StoredLog, verify
from infrastructure.bootstrap import (
    build_read_models,
    build_read_side,
    build_registry,
    build_runner,
    event_store,
)
from infrastructure.cli import app
from infrastructure.eventstore.data_keys import DataKeys
from infrastructure.settings import Settings
from infrastructure.views import history_view, with_contacts
from projections.catalogue import PROJECTIONS
from tests.conftest import (
    COMMISSION,
    SECRETARIAT,
    SettableClock,
    application_form,
)

MAYOR = "Zebulon Quillfeather"
CONTACT = {"full_name": "Xanthippe Okonkwo", "email": "xanthippe.private@quillmail.example",
           "phone": "+49 40 5550 1234", "postal_address": "17 Okonkwo Lane, Hamburg"}
NEW_CONTACT = {"full_name": "Perpetua Nightingale-Ade", "email": "perpetua@nightingale.example",
               "phone": "+49 40 5550 7777"}
PERSONAL = [MAYOR, *CONTACT.values(), *NEW_CONTACT.values()]
CITY_HALL = Actor("city-hall", Role.CITY)


def form() -> dict[str, Any]:
    return application_form(
        "Hamburg", mayor={"title": "Dr", "full_name": MAYOR, "official_title": "First Mayor"},
        contact={**CONTACT, "official_title": "Head of Learning", "organisation": "City Hall"})


def new_contact() -> dict[str, Any]:
    return {"contact": {**NEW_CONTACT, "organisation": "Learning Office"}}


@pytest.fixture
def member(registry: Registry, clock: SettableClock) -> UUID:
    """Hamburg, admitted in 2019, whose form names the mayor and contact person above."""
    clock.set("2019-01-05 10:00")
    registry.open_intake(SECRETARIAT, 2019, date(2019, 2, 1), date(2019, 4, 30))
    clock.set("2019-03-15 12:00")
    submission = registry.submit_application(CITY_HALL, form())
    registry.endorse(COMMISSION, submission.application_id)
    registry.admit(SECRETARIAT, submission.application_id)
    return submission.city_id


def stored_bytes(registry: Registry) -> bytes:
    """Every stored event's state, as the database holds it."""
    found = registry.recorder.select_notifications(1, 100_000)
    return b"".join(n.state for n in found)


def keys_of(registry: Registry) -> DataKeys:
    assert isinstance(registry.personal_data, DataKeys)
    return registry.personal_data


def key_rows(registry: Registry, city_id: UUID) -> list[tuple[Any, ...]]:
    keys = keys_of(registry)
    t = keys.table.c
    with keys.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(
            keys.table.select().with_only_columns(t.person, t.data_key, t.erased_at)
            .where(t.city_id == str(city_id)).order_by(t.created_at, t.person))]


def history_data(registry: Registry, city_id: UUID, personal: bool = True
                 ) -> list[dict[str, Any]]:
    return history_view(registry, registry.history(SECRETARIAT, city_id), personal)


def test_no_personal_value_is_stored_in_the_clear_and_the_secretariat_reads_them(
    registry: Registry, member: UUID
) -> None:
    stored = stored_bytes(registry)
    assert [v for v in PERSONAL if v.encode() in stored] == []
    assert b"Head of Learning" in stored  # what is not personal stays readable
    submitted = next(e for e in history_data(registry, member)
                     if e["type"] == "CityApplication.Submitted")
    assert submitted["data"]["form"]["mayor"]["full_name"] == MAYOR
    assert {k: submitted["data"]["form"]["contact"][k] for k in CONTACT} == CONTACT
    assert "sealed" not in submitted["data"]["form"]["contact"]
    masked = next(e for e in history_data(registry, member, personal=False)
                  if e["type"] == "CityApplication.Submitted")
    assert masked["data"]["form"]["contact"]["email"] is None
    assert masked["data"]["form"]["contact"]["official_title"] == "Head of Learning"
    # One key per person entered, in the key table (never in an event).
    assert [(person, erased) for person, _, erased in key_rows(registry, member)] == [
        ("mayor", None), ("contact", None)]


def test_a_contact_update_replaces_the_current_contact_and_the_history_says_who_and_when(
    registry: Registry, clock: SettableClock, member: UUID, settings: Settings
) -> None:
    clock.set("2020-06-01 09:00")
    assert registry.update_contacts(CITY_HALL, member, new_contact()) == ["contact"]
    assert [v for v in NEW_CONTACT.values() if v.encode() in stored_bytes(registry)] == []
    updated = history_data(registry, member)[-1]
    assert (updated["type"], updated["actor"]["name"], updated["effective_at"][:10]) == (
        "City.ContactUpdated", "city-hall", "2020-06-01")
    assert updated["data"]["details"]["email"] == NEW_CONTACT["email"]

    read_side = build_read_side(settings, registry)
    read_side.bring_up_to_date(["members"])
    rows = with_contacts(registry, read_side, SECRETARIAT, [{"city_id": str(member)}], True)
    contacts = rows[0]["contacts"]
    assert (contacts["contact"]["full_name"], contacts["contact"]["source"],
            contacts["contact"]["since"]) == (NEW_CONTACT["full_name"], "update", "2020-06-01")
    assert (contacts["mayor"]["full_name"], contacts["mayor"]["source"],
            contacts["mayor"]["since"]) == (MAYOR, "application", "2019-03-15")
    # As of a day before the update, the contact of the form.
    before = with_contacts(registry, read_side, SECRETARIAT, [{"city_id": str(member)}], True,
                           as_of=date(2020, 5, 31))
    assert before[0]["contacts"]["contact"]["full_name"] == CONTACT["full_name"]


def test_erasure_destroys_the_keys_every_view_shows_erased_and_the_chain_still_verifies(
    registry: Registry, clock: SettableClock, member: UUID, settings: Settings
) -> None:
    clock.set("2020-06-01 09:00")
    registry.update_contacts(SECRETARIAT, member, new_contact())
    log = StoredLog(event_store(settings))
    before = verify(log)
    assert before.ok
    clock.set("2021-01-10 10:00")
    done = registry.erase_personal_data(SECRETARIAT, member, None, "the mayor left office")
    assert done.recorded and len(done.erased_key_ids) == 3 and done.plaintext_events == 0
    # The keys hold no key material any more; their rows say when they went.
    assert [(p, k, e is not None) for p, k, e in key_rows(registry, member)] == [
        ("mayor", None, True), ("contact", None, True), ("contact", None, True)]
    # Every personal value of every event now reads as erased; the rest as it was.
    shown = history_data(registry, member)
    submitted = next(e for e in shown if e["type"] == "CityApplication.Submitted")["data"]["form"]
    assert (submitted["mayor"]["full_name"], submitted["mayor"]["erased"]) == (None, True)
    assert (submitted["contact"]["email"], submitted["contact"]["erased"]) == (None, True)
    assert submitted["contact"]["official_title"] == "Head of Learning"
    erased = shown[-1]
    assert (erased["type"], erased["actor"]["name"], erased["data"]["reason"]) == (
        "City.PersonalDataErased", SECRETARIAT.name, "the mayor left office")
    assert sorted(erased["data"]["key_ids"]) == sorted(done.erased_key_ids)
    assert [v for v in PERSONAL if v in str(shown)] == []
    # The state of a past day (an audit replay) shows them erased too.
    _, applications = registry.city_at(SECRETARIAT, member, date(2019, 12, 31))
    assert applications[0].form["mayor"]["sealed"]["key_id"] in done.erased_key_ids
    # The chain: the head before, then the erasure's event only.
    after = verify(log, expect=before.head)
    assert after.ok and after.checked == before.checked + 1
    assert after.head.position > before.head.position


def test_erasing_keys_already_gone_records_nothing_and_says_so(
    registry: Registry, member: UUID
) -> None:
    first = registry.erase_personal_data(SECRETARIAT, member, ["mayor"], "left office")
    assert first.recorded and first.erased_key_ids and first.erased_before == []
    version = registry.city(SECRETARIAT, member).version
    again = registry.erase_personal_data(SECRETARIAT, member, ["mayor"], "left office")
    assert (again.recorded, again.erased_key_ids, again.erased_before) == (
        False, [], first.erased_key_ids)
    assert registry.city(SECRETARIAT, member).version == version
    # The contact person's key was not touched.
    shown = history_data(registry, member)
    submitted = next(e for e in shown if e["type"] == "CityApplication.Submitted")["data"]["form"]
    assert (submitted["mayor"].get("erased"), submitted["contact"]["email"]) == (
        True, CONTACT["email"])


@pytest.mark.parametrize(("actor", "city", "persons", "reason", "refused"), [
    (CITY_HALL, None, None, "left office", Forbidden),
    (COMMISSION, None, None, "left office", Forbidden),
    (SECRETARIAT, uuid4(), None, "left office", NotFound),
    (SECRETARIAT, None, ["deputy"], "left office", InvalidInput),
    (SECRETARIAT, None, None, "  ", InvalidInput),
])
def test_an_erasure_is_refused_with_a_clear_error_and_changes_nothing(
    registry: Registry, member: UUID, actor: Actor, city: UUID | None,
    persons: list[str] | None, reason: str, refused: type[Exception]
) -> None:
    version = registry.city(SECRETARIAT, member).version
    with pytest.raises(refused) as raised:
        registry.erase_personal_data(actor, city or member, persons, reason)
    assert str(raised.value)
    assert registry.city(SECRETARIAT, member).version == version
    assert all(erased is None for _, _, erased in key_rows(registry, member))


@pytest.mark.parametrize(("actor", "city", "data", "refused", "field"), [
    (COMMISSION, None, new_contact(), Forbidden, None),
    (Actor("other-city", Role.CITY, city_id=uuid4()), None, new_contact(), Forbidden, None),
    (SECRETARIAT, uuid4(), new_contact(), NotFound, None),
    (SECRETARIAT, None, {}, InvalidInput, None),
    (SECRETARIAT, None, {"contact": {**NEW_CONTACT, "email": "not an address"}}, InvalidInput,
     "contact.email"),
    (SECRETARIAT, None, {"mayor": {"full_name": MAYOR, "shoe_size": 44}}, InvalidInput,
     "mayor.shoe_size"),
])
def test_a_contact_update_is_refused_with_a_clear_error_and_changes_nothing(
    registry: Registry, member: UUID, actor: Actor, city: UUID | None, data: Any,
    refused: type[Exception], field: str | None
) -> None:
    version = registry.city(SECRETARIAT, member).version
    keys = len(key_rows(registry, member))
    with pytest.raises(refused) as raised:
        registry.update_contacts(actor, city or member, data)
    if field is not None:
        assert getattr(raised.value, "field", None) == field
    assert registry.city(SECRETARIAT, member).version == version
    assert len(key_rows(registry, member)) == keys


def test_a_city_updates_its_own_contact_only(registry: Registry, member: UUID) -> None:
    own = Actor("hamburg", Role.CITY, city_id=member)
    assert registry.update_contacts(own, member, new_contact()) == ["contact"]


def test_events_stored_in_the_clear_before_sealing_are_counted_and_named_by_the_erasure(
    registry: Registry, clock: SettableClock, settings: Settings
) -> None:
    """A store written before values were sealed keeps them in the clear (rewriting them would
    break the chain): `plaintext_events` counts them, and the erasure's answer says so."""
    clock.set("2019-01-05 10:00")
    registry.open_intake(SECRETARIAT, 2019, date(2019, 2, 1), date(2019, 4, 30))
    clock.set("2019-03-15 12:00")
    legacy = registry_without_sealing(registry)
    try:
        old = legacy.submit_application(CITY_HALL, form())
    finally:
        legacy.close()
    assert MAYOR.encode() in stored_bytes(registry)
    assert registry.plaintext_events(SECRETARIAT) == {old.city_id: 1}
    shown = history_data(registry, old.city_id)
    assert shown[-1]["data"]["form"]["mayor"]["full_name"] == MAYOR
    done = registry.erase_personal_data(SECRETARIAT, old.city_id, None, "left office")
    assert (done.recorded, done.plaintext_events) == (False, 1)
    with pytest.raises(Forbidden):
        registry.plaintext_events(COMMISSION)


def registry_without_sealing(registry: Registry) -> Registry:
    """A registry as before personal values were sealed: the form stored as given."""
    class Unsealed(Registry):
        name = Registry.name  # the same tables

        def sealed_form(self, city_id: UUID, form: dict[str, Any]) -> dict[str, Any]:
            return form

    return Unsealed(env=registry.env, clock=registry.clock, timezone=registry.timezone,
                    personal_data=registry.personal_data)


def test_the_database_files_hold_no_key_of_an_erased_person(
    registry: Registry, member: UUID, settings: Settings, tmp_path: Path
) -> None:
    """SQLite: the bytes of every file of the store; PostgreSQL: a pg_dump of the database."""
    keys = [bytes(k) for _, k, _ in key_rows(registry, member)]
    assert len(keys) == 2 and all(len(k) == 32 for k in keys)
    assert all(k in database_bytes(settings, tmp_path) for k in keys)
    registry.erase_personal_data(SECRETARIAT, member, None, "left office")
    dumped = database_bytes(settings, tmp_path)
    assert [k for k in keys if k in dumped] == []
    assert [v for v in PERSONAL if v.encode() in dumped] == []


def database_bytes(settings: Settings, tmp_path: Path) -> bytes:
    location = event_store(settings)
    if not location.is_postgres:
        folder = location.sqlite_path.parent
        return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())
    url = location.url
    # The key table's own file too (pg_dump reads live rows only; an old row version stays in
    # its page until the table is rewritten).
    with psycopg.connect(host=url.host or "127.0.0.1", port=url.port or 5432,
                         user=url.username or "postgres", dbname=url.database or "postgres",
                         autocommit=True) as connection:
        connection.execute("CHECKPOINT")
        row = connection.execute(
            "SELECT pg_read_binary_file(pg_relation_filepath(%s))",
            [f'"{location.schema}".gnlc_data_keys']).fetchone()
    table_file = bytes(row[0]) if row else b""
    dump = subprocess.run(
        ["pg_dump", "--data-only", "--format=plain", "-h", url.host or "127.0.0.1",
         "-p", str(url.port or 5432), "-U", url.username or "postgres", "-n",
         location.schema, url.database or "postgres"],
        capture_output=True, check=True, timeout=120)
    return dump.stdout + hex_escaped(dump.stdout) + table_file


def hex_escaped(dump: bytes) -> bytes:
    """pg_dump writes bytea as \\x<hex>: the keys' bytes, decoded back from it."""
    import re
    return b"".join(bytes.fromhex(m.decode()) for m in re.findall(rb"\\\\x([0-9a-f]+)", dump))


def test_with_a_master_key_the_data_keys_are_stored_wrapped_and_open_only_with_it(
    settings: Settings, clock: SettableClock, tmp_path: Path
) -> None:
    master = base64.b64encode(bytes(range(32))).decode()
    wrapped = settings.model_copy(update={"master_key": SecretStr(master)})
    registry = build_registry(wrapped, clock)
    try:
        clock.set("2019-01-05 10:00")
        registry.open_intake(SECRETARIAT, 2019, date(2019, 2, 1), date(2019, 4, 30))
        clock.set("2019-03-15 12:00")
        city = registry.submit_application(CITY_HALL, form()).city_id
        keys = keys_of(registry)
        with keys.engine.connect() as connection:
            rows = connection.execute(keys.table.select()).mappings().all()
        assert {r["wrapped_by"] for r in rows} == {keys.wrapped_by}
        assert all(len(r["data_key"]) == 12 + 32 + 16 for r in rows)  # nonce, key, tag
        shown = history_data(registry, city)
        assert shown[-1]["data"]["form"]["mayor"]["full_name"] == MAYOR
    finally:
        registry.close()
    # Without the master key (or with another), nothing opens, and it says why: never "erased".
    other = base64.b64encode(bytes(32)).decode()
    for environment in ({}, {"GNLC_MASTER_KEY": other}):
        result = CliRunner().invoke(app, ["--database-url", settings.database_url, "history",
                                          str(city), "--json"], env=environment)
        assert result.exit_code == 6, result.stdout
        assert "master key" in json.loads(result.stderr)["error"]["message"]
    refused = CliRunner().invoke(app, ["--database-url", settings.database_url, "history",
                                       str(city), "--json"], env={"GNLC_MASTER_KEY": "short"})
    assert refused.exit_code == 2
    assert json.loads(refused.stderr)["error"]["field"] == "master_key"


def test_a_rebuild_gives_the_contacts_the_runner_kept_and_the_deadlines_none_of_them(
    registry: Registry, clock: SettableClock, member: UUID, settings: Settings
) -> None:
    clock.set("2020-06-01 09:00")
    registry.update_contacts(SECRETARIAT, member, new_contact())
    store = build_read_models(settings)
    try:
        runner = build_runner(settings, registry, store)
        runner.acquire()
        runner.catch_up()
        kept = store.rows("contacts")
        runner.rebuild(list(PROJECTIONS))
        assert store.rows("contacts") == kept
        assert [(r["person"], r["source"]) for r in kept] == [("contact", "update")]
        assert [r["city_id"] for r in store.rows("deadlines")] == [str(member)]
    finally:
        runner.release()
        store.engine.dispose()


def test_a_newer_application_s_form_replaces_an_older_contact_update(
    registry: Registry, clock: SettableClock, member: UUID, settings: Settings
) -> None:
    clock.set("2020-06-01 09:00")
    registry.update_contacts(SECRETARIAT, member, new_contact())
    clock.set("2021-01-10 10:00")
    registry.end_membership(SECRETARIAT, member, "withdrawn_by_city")
    clock.set("2022-01-05 10:00")
    registry.open_intake(SECRETARIAT, 2022, date(2022, 2, 1), date(2022, 4, 30))
    clock.set("2022-03-15 12:00")
    registry.submit_application(CITY_HALL, {**form(), "signed_on": "2022-03-01", "contact": {
        "full_name": "Gamma Newcomer", "email": "gamma@example.org"}})
    read_side = build_read_side(settings, registry)
    read_side.bring_up_to_date(["members"])
    now = with_contacts(registry, read_side, SECRETARIAT, [{"city_id": str(member)}], True)
    assert (now[0]["contacts"]["contact"]["full_name"], now[0]["contacts"]["contact"]["source"],
            now[0]["contacts"]["contact"]["since"]) == ("Gamma Newcomer", "application",
                                                        "2022-03-15")
    then = with_contacts(registry, read_side, SECRETARIAT, [{"city_id": str(member)}], True,
                         as_of=date(2021, 12, 31))
    assert then[0]["contacts"]["contact"]["full_name"] == NEW_CONTACT["full_name"]
