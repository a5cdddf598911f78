"""The membership regulations, versioned by the date they take effect."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class Regulations:
    """The rules in force from `effective_from`; `None` means the rule does not exist."""

    version: str
    effective_from: date
    quota_per_country_per_year: int | None
    window: tuple[tuple[int, int], tuple[int, int]] | None  # ((month, day), (month, day))
    report_every_years: int | None

    def default_window(self, year: int) -> tuple[date, date]:
        """The intake window of `year` these rules give; the whole year where they set none."""
        if self.window is None:
            return date(year, 1, 1), date(year, 12, 31)
        (om, od), (cm, cd) = self.window
        return date(year, om, od), date(year, cm, cd)


BEFORE_2018 = Regulations(
    version="pre-2018",
    effective_from=date.min,
    quota_per_country_per_year=None,
    window=None,
    report_every_years=None,
)

REGULATIONS_2018 = Regulations(
    version="2018",
    effective_from=date(2018, 10, 1),
    quota_per_country_per_year=3,
    window=((3, 1), (4, 30)),
    report_every_years=2,
)

# Oldest first; a new version is appended here, never edited in place (events name the version).
HISTORY: tuple[Regulations, ...] = (BEFORE_2018, REGULATIONS_2018)


def regulations_on(day: date) -> Regulations:
    """The regulations in force on `day`."""
    in_force = BEFORE_2018
    for regulations in HISTORY:
        if regulations.effective_from <= day:
            in_force = regulations
    return in_force


def first_reporting_regulations() -> Regulations:
    """The first rules requiring reports: cycles of older members count from their start."""
    return next(r for r in HISTORY if r.report_every_years is not None)
