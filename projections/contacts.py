"""`contacts`: each city's current mayor and contact person, as stored (their personal values
sealed, see domain/personal.py): from its latest application's form, then its contact updates."""

from __future__ import annotations

from typing import Any

from domain.applications import CityApplication
from domain.cities import City
from domain.personal import PERSONS
from projections.base import Projection, text_id


class ContactsProjection(Projection):
    name = "contacts"
    keys = {"contacts": ("city_id", "person")}

    def _put(self, city_id: str, person: str, since: Any, source: str,
             details: dict[str, Any]) -> None:
        self.put("contacts", {"city_id": city_id, "person": person, "since": since,
                              "source": source, "details": details})

    def _submitted(self, e: CityApplication.Submitted) -> None:
        for person in PERSONS:
            part = e.form.get(person)
            if isinstance(part, dict):
                self._put(str(e.city_id), person, self.day(e.effective_at), "application", part)

    def _updated(self, e: City.ContactUpdated) -> None:
        self._put(text_id(e.originator_id), e.person, self.day(e.effective_at), "update",
                  e.details)

    handlers = {
        CityApplication.Submitted: _submitted,
        City.ContactUpdated: _updated,
    }
