"""`contacts`: the mayor and contact person each city gave in its latest contact update, as
stored (their personal values sealed, see domain/personal.py). Those a city gave in its
application's form are read from the form itself (infrastructure/views.py, `with_contacts`):
keeping a row per submission would cost every rebuild a row per person of every application."""

from __future__ import annotations

from domain.cities import City
from projections.base import Projection, text_id


class ContactsProjection(Projection):
    name = "contacts"
    keys = {"contacts": ("city_id", "person")}

    def _updated(self, e: City.ContactUpdated) -> None:
        self.put("contacts", {"city_id": text_id(e.originator_id), "person": e.person,
                              "since": self.day(e.effective_at), "source": "update",
                              "details": e.details})

    handlers = {
        City.ContactUpdated: _updated,
    }
