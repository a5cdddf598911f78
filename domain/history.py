"""The network's history before this registry: one row per admission, as the records give it."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, HttpUrl, model_validator

from domain.countries import country_code
from domain.forms import ShortText, Strict


def _country(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a country code or name")
    try:
        return country_code(value)
    except Exception as error:  # InvalidInput: its message names the rule
        raise ValueError(getattr(error, "message", str(error))) from None


Country = Annotated[str, BeforeValidator(_country)]


class HistoryRow(Strict):
    """A city's admission in a given year; dates default to 31 December of that year."""

    city: ShortText
    country: Country
    year_joined: int = Field(ge=1990, le=9998)
    admitted_on: date | None = None
    left_on: date | None = None
    left_reason: Literal["not_reporting", "withdrawn_by_city", "other"] | None = None
    source_url: HttpUrl | None = None

    @model_validator(mode="after")
    def _dates_in_order(self) -> HistoryRow:
        if self.left_on is not None and self.left_on < self.admitted:
            raise ValueError("left_on must not be before the admission")
        if self.left_reason is not None and self.left_on is None:
            raise ValueError("left_reason needs left_on")
        return self

    @property
    def admitted(self) -> date:
        """The day of admission: the date given, or 31 December of the year joined."""
        return self.admitted_on or date(self.year_joined, 12, 31)

    @property
    def end_reason(self) -> str:
        return self.left_reason or "other"
