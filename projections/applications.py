"""`applications`: one row per application, with the business date of each step."""

from __future__ import annotations

from typing import Any

from domain.applications import CityApplication
from projections.base import Projection, Row, text_id

STEPS = ("submitted", "endorsed", "declined", "withdrawn", "admitted", "rejected", "retracted")


class ApplicationsProjection(Projection):
    name = "applications"
    keys = {"applications": ("application_id",)}

    def _submitted(self, e: CityApplication.Submitted) -> None:
        row: Row = {"application_id": text_id(e.originator_id), "city_id": str(e.city_id),
               "city": e.city, "country": self.same(e.country),
               "intake_year": self.same(e.intake_year),
               "status": "submitted", **{f"{step}_on": None for step in STEPS}}
        row["submitted_on"] = self.day(e.effective_at)
        self.put("applications", row)

    def _imported(self, e: CityApplication.Imported) -> None:
        row: Row = {"application_id": str(e.originator_id), "city_id": str(e.city_id),
                    "city": e.city, "country": e.country, "intake_year": e.intake_year,
                    "status": "admitted", **{f"{step}_on": None for step in STEPS}}
        row["admitted_on"] = e.admitted_on
        self.put("applications", row)

    def _moved(self, e: Any) -> None:
        row = self.touch("applications", text_id(e.originator_id))
        status = self.same(str(e.new_status))
        row["status"] = status
        row[f"{status}_on"] = self.day(e.effective_at)

    handlers = {
        CityApplication.Submitted: _submitted,
        CityApplication.Endorsed: _moved,
        CityApplication.Declined: _moved,
        CityApplication.Withdrawn: _moved,
        CityApplication.Admitted: _moved,
        CityApplication.Imported: _imported,
        CityApplication.Rejected: _moved,
        CityApplication.AdmissionRetracted: _moved,
    }
