"""`quotas`: per country and intake year, the admissions in force, retractions and pending ones."""

from __future__ import annotations

from datetime import date
from typing import Any

from domain.applications import CityApplication
from domain.regulations import regulations_on
from projections.base import Projection, Row, text_id


def quota_limit(year: int) -> int | None:
    """The limit in force on the last day of the intake year (None where no quota applies)."""
    return regulations_on(date(year, 12, 31)).quota_per_country_per_year


class QuotasProjection(Projection):
    name = "quotas"
    keys = {"quotas": ("country", "year"), "quota_applications": ("application_id",)}

    def _quota(self, country: str, year: int) -> Row:
        if self.get("quotas", country, year) is None:
            self.put("quotas", {"country": country, "year": year,
                                      "limit": quota_limit(year), "admitted": 0,
                                      "retracted": 0, "pending": 0})
        return self.touch("quotas", country, year)

    def _application(self, e: Any) -> tuple[Row, Row]:
        application = self.touch("quota_applications", text_id(e.originator_id))
        return application, self._quota(application["country"], application["year"])

    def _submitted(self, e: CityApplication.Submitted) -> None:
        self.put("quota_applications", {"application_id": text_id(e.originator_id),
                                        "country": self.same(e.country),
                                        "year": self.same(e.intake_year), "status": "pending"})
        self._quota(e.country, e.intake_year)["pending"] += 1

    def _closed(self, e: Any) -> None:
        application, quota = self._application(e)
        application["status"] = "closed"
        quota["pending"] -= 1

    def _admitted(self, e: CityApplication.Admitted) -> None:
        application, quota = self._application(e)
        application["status"] = "admitted"
        quota["pending"] -= 1
        quota["admitted"] += 1

    def _imported(self, e: CityApplication.Imported) -> None:
        self.put("quota_applications", {"application_id": str(e.originator_id),
                                        "country": e.country, "year": e.intake_year,
                                        "status": "admitted"})
        self._quota(e.country, e.intake_year)["admitted"] += 1

    def _retracted(self, e: CityApplication.AdmissionRetracted) -> None:
        application, quota = self._application(e)
        application["status"] = "retracted"
        quota["admitted"] -= 1
        quota["retracted"] += 1

    handlers = {
        CityApplication.Submitted: _submitted,
        CityApplication.Declined: _closed,
        CityApplication.Withdrawn: _closed,
        CityApplication.Rejected: _closed,
        CityApplication.Admitted: _admitted,
        CityApplication.Imported: _imported,
        CityApplication.AdmissionRetracted: _retracted,
    }
