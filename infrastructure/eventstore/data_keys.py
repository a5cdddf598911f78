"""The data keys that seal personal values (see domain/personal.py): AES-256-GCM, one key per
person entered (a mayor or contact person of an application's form, or of a contact update).

The keys live in their own table in the event store's database, never in events and never in
an export. A key row is written by the recorder in the transaction of the event that uses it,
and an erasure destroys its keys in the transaction of its `PersonalDataErased` event (both are
staged here in a context variable, as the command's Idempotency-Key is in command_keys.py).
An erased key keeps a row without key material (`erased_at` set): readers can then tell an
erased value from one never given.

With a master key in the settings, every data key is stored wrapped by it (AES-GCM): a copy of
the key table (a backup, a dump) then opens nothing without the master key as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Column,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    select,
    text,
)

from domain.personal import PERSONAL_FIELDS, envelope_of, parts_of, shown_part
from infrastructure.eventstore.chain import recorded_text

DATA_KEYS_TABLE = "gnlc_data_keys"
COLUMNS = "key_id, city_id, person, data_key, wrapped_by, created_at"
ALGORITHM = "A256GCM"
NONCE_BYTES = 12


class KeyUnavailable(OSError):
    """A data key could not be opened (a master key missing or wrong, a corrupt row): a fault of
    the deployment, reported as `unavailable`, never shown as an erasure."""


@dataclass
class StagedKeys:
    """The keys of one attempt of a command, written by the next save (recorders.py)."""

    new: list[tuple[object, ...]] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)

    def take(self) -> tuple[list[tuple[object, ...]], list[str]]:
        """The rows to write, once: a second save in the same stage writes none again."""
        new, erased = self.new, self.erased
        self.new, self.erased = [], []
        return new, erased


staged_keys: ContextVar[StagedKeys | None] = ContextVar("gnlc_staged_keys", default=None)


def staged_rows() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """For the recorder saving events: the key rows to insert, and the (erased_at, key_id) of
    the keys to destroy, each once."""
    staged = staged_keys.get()
    if staged is None:
        return [], []
    new, erased = staged.take()
    now = recorded_text(datetime.now(UTC))
    return new, [(now, key_id) for key_id in erased]


def _aad(key_id: str, city_id: str, person: str) -> bytes:
    # Binds a ciphertext to its key, city and person: one cannot be passed off as another's.
    return f"gnlc:{city_id}:{person}:{key_id}".encode()


def master_key(text_: str | None) -> bytes | None:
    """The master key from its setting (32 bytes, base64), None when not set."""
    if not text_:
        return None
    try:
        key = base64.b64decode(text_.strip() + "=" * (-len(text_.strip()) % 4),
                               altchars=b"-_" if ("-" in text_ or "_" in text_) else None,
                               validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("master_key must be 32 bytes in base64") from None
    if len(key) != 32:
        raise ValueError(f"master_key must be 32 bytes in base64, got {len(key)} bytes")
    return key


@dataclass(frozen=True)
class Opened:
    """The personal values of some parts: by key id, and the key ids found erased."""

    values: dict[str, dict[str, Any]]
    erased: frozenset[str]


class DataKeys:
    """The key table, and the one place that seals and opens personal values."""

    def __init__(self, engine: Engine, schema: str | None, master: bytes | None = None
                 ) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.master = master
        self.wrapped_by = hashlib.sha256(master).hexdigest()[:16] if master else None
        self.table = Table(
            DATA_KEYS_TABLE, MetaData(schema=schema),
            Column("key_id", String(36), primary_key=True),
            Column("city_id", String(36), nullable=False, index=True),
            Column("person", String(16), nullable=False),
            # The key (wrapped by the master key when `wrapped_by` names one); NULL once erased.
            Column("data_key", LargeBinary, nullable=True),
            Column("wrapped_by", String(16), nullable=True),
            Column("created_at", String(32), nullable=False),
            Column("erased_at", String(32), nullable=True),
        )
        self._select = select(self.table.c.key_id, self.table.c.city_id, self.table.c.person,
                              self.table.c.data_key, self.table.c.wrapped_by,
                              self.table.c.erased_at).where(
            self.table.c.key_id.in_(bindparam("ids", expanding=True)))

    def create(self) -> None:
        self.table.metadata.create_all(self.engine, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    # --- writing (the application's port) -----------------------------------------------------

    @contextmanager
    def staging(self) -> Iterator[None]:
        token = staged_keys.set(StagedKeys())
        try:
            yield
        finally:
            staged_keys.reset(token)

    def seal(self, city_id: UUID, person: str, values: Mapping[str, Any]) -> dict[str, str]:
        staged = staged_keys.get()
        if staged is None:
            raise RuntimeError("seal() outside staging(): the key would never be stored")
        key_id, key = str(uuid4()), AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(dict(values), ensure_ascii=False, separators=(",", ":"))
        ciphertext = AESGCM(key).encrypt(nonce, plaintext.encode(),
                                         _aad(key_id, str(city_id), person))
        staged.new.append((key_id, str(city_id), person, self._wrap(key_id, key),
                           self.wrapped_by, recorded_text(datetime.now(UTC))))
        return {"key_id": key_id, "alg": ALGORITHM,
                "ciphertext": base64.b64encode(nonce + ciphertext).decode()}

    def live(self, city_id: UUID, persons: Sequence[str]) -> list[str]:
        t = self.table.c
        query = select(t.key_id).where(t.city_id == str(city_id), t.person.in_(list(persons)),
                                       t.erased_at.is_(None))
        with self.engine.connect() as connection:
            return sorted(r[0] for r in connection.execute(query))

    def erase(self, key_ids: Sequence[str]) -> None:
        staged = staged_keys.get()
        if staged is None:
            raise RuntimeError("erase() outside staging(): the keys would never be erased")
        staged.erased.extend(key_ids)

    def purge(self) -> None:
        """SQLite: checkpoint the write-ahead log and truncate it, so the pages that held the
        keys (zeroed on deletion: `secure_delete`, see recorders.py) leave no older copy.
        PostgreSQL: an update leaves the old row version, key included, in its page, and a
        plain VACUUM only marks its space free: VACUUM FULL writes the (small) table into a new
        file and drops the old one (its WAL and backups keep them until they rotate, and a
        transaction open meanwhile keeps the old versions alive: see the README)."""
        with self.engine.connect() as connection:
            if self.is_sqlite:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                name = self.engine.dialect.identifier_preparer.format_table(self.table)
                connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                    text(f"VACUUM FULL {name}"))

    # --- reading ------------------------------------------------------------------------------

    def open(self, parts: Iterable[tuple[str, Mapping[str, Any]]]) -> Opened:
        """Open the sealed parts (person, stored part) given, with one query for their keys."""
        envelopes = {e["key_id"]: (person, e) for person, part in parts
                     if (e := envelope_of(part)) is not None and "key_id" in e}
        if not envelopes:
            return Opened({}, frozenset())
        with self.engine.connect() as connection:
            rows = connection.execute(self._select, {"ids": list(envelopes)}).all()
        values: dict[str, dict[str, Any]] = {}
        erased: set[str] = set()
        for key_id, city_id, person, data_key, wrapped_by, erased_at in rows:
            if erased_at is not None or data_key is None:
                erased.add(key_id)
                continue
            key = self._unwrap(key_id, bytes(data_key), wrapped_by)
            values[key_id] = _decrypt(key, envelopes[key_id][1], key_id, city_id, person)
        return Opened(values, frozenset(erased))

    def _wrap(self, key_id: str, key: bytes) -> bytes:
        if self.master is None:
            return key
        nonce = os.urandom(NONCE_BYTES)
        return nonce + AESGCM(self.master).encrypt(nonce, key, key_id.encode())

    def _unwrap(self, key_id: str, stored: bytes, wrapped_by: str | None) -> bytes:
        if wrapped_by is None:
            return stored
        if self.master is None or wrapped_by != self.wrapped_by:
            raise KeyUnavailable(
                f"data key {key_id} is wrapped by master key {wrapped_by}, and the master key "
                f"configured is {self.wrapped_by or 'none'}: set GNLC_MASTER_KEY to it")
        try:
            return AESGCM(self.master).decrypt(stored[:NONCE_BYTES], stored[NONCE_BYTES:],
                                               key_id.encode())
        except InvalidTag:
            raise KeyUnavailable(f"data key {key_id} does not unwrap: corrupt row") from None

    # --- shown to readers ---------------------------------------------------------------------

    def shown(self, datas: Sequence[Mapping[str, Any]], personal: bool
                   ) -> list[dict[str, Any]]:
        """Events' data as a reader sees them: every person's part with its values opened
        (`personal`) or null, `erased` where the key is gone; one key query for them all."""
        opened = self.open(p for d in datas for p in parts_of(d)) if personal \
            else Opened({}, frozenset())
        return [_shown_data(data, opened, personal) for data in datas]

    def shown_forms(self, forms: Sequence[Mapping[str, Any]], personal: bool
                    ) -> list[dict[str, Any]]:
        """Forms as a reader sees them (see `shown_data`)."""
        return [d["form"] for d in self.shown([{"form": f} for f in forms], personal)]


def _decrypt(key: bytes, envelope: Mapping[str, str], key_id: str, city_id: str,
             person: str) -> dict[str, Any]:
    try:
        blob = base64.b64decode(envelope["ciphertext"])
        plaintext = AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:],
                                        _aad(key_id, city_id, person))
    except (InvalidTag, KeyError, ValueError):
        raise KeyUnavailable(f"the values sealed under key {key_id} do not open") from None
    values: dict[str, Any] = json.loads(plaintext)
    return values


def shown_part_of(person: str, part: Mapping[str, Any], opened: Opened, personal: bool
                  ) -> dict[str, Any]:
    """One stored part as a reader sees it."""
    envelope = envelope_of(part)
    if envelope is None:  # a legacy part, values in the clear
        values = {n: part.get(n) for n in PERSONAL_FIELDS[person]} if personal else None
        return shown_part(person, part, values, erased=False)
    key_id = envelope.get("key_id", "")
    if not personal:
        return shown_part(person, part, None, erased=False)
    return shown_part(person, part, opened.values.get(key_id), key_id in opened.erased)


def _shown_data(data: Mapping[str, Any], opened: Opened, personal: bool) -> dict[str, Any]:
    shown = dict(data)
    form = data.get("form")
    if isinstance(form, Mapping):
        shown["form"] = {k: (shown_part_of(k, v, opened, personal)
                             if k in PERSONAL_FIELDS and isinstance(v, Mapping) else v)
                         for k, v in form.items()}
    person, details = data.get("person"), data.get("details")
    if isinstance(person, str) and person in PERSONAL_FIELDS and isinstance(details, Mapping):
        shown["details"] = shown_part_of(person, details, opened, personal)
    return shown
