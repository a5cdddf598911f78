"""Personal data: which fields of a form are a person's, and how they are held in events.

The mayor's and the contact person's names, e-mail, phone and postal address are personal data.
Events never hold them in the clear: each person's values are sealed (encrypted) with a data key
of their own before the event is made, and the event keeps the other fields of the part plus an
envelope `{"key_id", "alg", "ciphertext"}` under `sealed`. Erasing the key erases the values
everywhere the event is read, while the event's bytes, and so the audit chain, stay as they were.

This module is pure: sealing and opening need keys, which the application's port provides.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from domain.errors import InvalidInput

Person = Literal["mayor", "contact"]
PERSONS: tuple[Person, ...] = ("mayor", "contact")
PERSONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "mayor": ("full_name",),
    "contact": ("full_name", "postal_address", "phone", "email"),
}
SEALED = "sealed"  # the key of a part's envelope
ERASED = "erased"  # set (true) on a part shown after its person's key was erased


def person(name: str) -> Person:
    """The person named, refusing any other name."""
    for known in PERSONS:
        if name == known:
            return known
    raise InvalidInput(f"person must be one of {', '.join(PERSONS)}, got {name!r}",
                       field="person")


def persons(given: Iterable[str] | None) -> tuple[Person, ...]:
    """The persons named (both when none is), refusing any other name."""
    chosen = {person(name) for name in given or ()}
    return tuple(p for p in PERSONS if p in chosen) or PERSONS


def personal_values(person: str, part: Mapping[str, Any]) -> dict[str, Any]:
    """The personal values of a person's part (as given, before sealing)."""
    return {name: part.get(name) for name in PERSONAL_FIELDS[person]}


def sealed_part(person: str, part: Mapping[str, Any], envelope: Mapping[str, str]
                ) -> dict[str, Any]:
    """The part as stored: its personal values replaced by their envelope."""
    fields = PERSONAL_FIELDS[person]
    return {**{k: v for k, v in part.items() if k not in fields}, SEALED: dict(envelope)}


def envelope_of(part: object) -> Mapping[str, str] | None:
    """The envelope of a stored part, None if it has none (a legacy part, or no part)."""
    envelope = part.get(SEALED) if isinstance(part, Mapping) else None
    return envelope if isinstance(envelope, Mapping) else None


def is_plaintext(person: str, part: object) -> bool:
    """Whether a stored part holds personal values in the clear (written before sealing)."""
    if not isinstance(part, Mapping) or envelope_of(part) is not None:
        return False
    return any(part.get(name) is not None for name in PERSONAL_FIELDS[person])


def holds_plaintext(data: Mapping[str, Any], of: Iterable[str] = PERSONS) -> bool:
    """Whether an event's data holds values of these persons in the clear."""
    chosen = set(of)
    return any(p in chosen and is_plaintext(p, part) for p, part in parts_of(data))


def parts_of(data: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The persons' parts found in an event's data: a form's, or a contact update's."""
    form = data.get("form")
    if isinstance(form, Mapping):
        for person in PERSONS:
            if isinstance(form.get(person), Mapping):
                yield person, form[person]
    if data.get("person") in PERSONS and isinstance(data.get("details"), Mapping):
        yield data["person"], data["details"]


def shown_part(person: str, part: Mapping[str, Any],
               values: Mapping[str, Any] | None, erased: bool) -> dict[str, Any]:
    """A stored part as a reader sees it: with `values` (opened, or in the clear in a legacy
    part) where the reader may see them; null where not, and `erased` once the key is gone."""
    fields = PERSONAL_FIELDS[person]
    shown = {k: v for k, v in part.items() if k != SEALED and k not in fields}
    for name in fields:
        shown[name] = values.get(name) if values is not None else None
    if erased:
        shown[ERASED] = True
    return shown
