"""Part 1 of the GNLC application form and the progress report: the public input schemas."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal, TypeVar

import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    ValidationError,
    model_validator,
)

from domain.errors import InvalidInput

MAX_WORDS = 200


def _at_most_200_words(text: str) -> str:
    words = len(text.split())
    if words > MAX_WORDS:
        raise ValueError(f"must be at most {MAX_WORDS} words, got {words}")
    return text


def _iso_country(code: str) -> str:
    """An ISO 3166-1 alpha-2 code, upper-cased."""
    code = code.strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
    return code


# C0 control characters and DEL: invisible, and NUL cannot be stored in a PostgreSQL text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINE_BREAKS_AND_TABS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_characters(text: str) -> str:
    if (found := _CONTROL.search(text)) is not None:
        raise ValueError(f"must not contain control characters, got {found.group()!r}")
    return text


def _no_control_characters_but_line_breaks(text: str) -> str:
    if (found := _CONTROL_BUT_LINE_BREAKS_AND_TABS.search(text)) is not None:
        raise ValueError("must not contain control characters other than line breaks and "
                         f"tabs, got {found.group()!r}")
    return text


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*")


def _iso_date(value: object) -> object:
    """Only a YYYY-MM-DD string (or a date): not a number of seconds since 1970."""
    if isinstance(value, date) or (isinstance(value, str) and _ISO_DATE.fullmatch(value)):
        return value
    raise ValueError("must be an ISO 8601 date (YYYY-MM-DD)")


def _iso_datetime(value: object) -> object:
    """Only an ISO 8601 date and time string (or a datetime): not a number of seconds."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATETIME.fullmatch(value)):
        return value
    raise ValueError("must be an ISO 8601 date and time (YYYY-MM-DDTHH:MM:SS+HH:MM)")


CountryCode = Annotated[str, AfterValidator(_iso_country)]
Text = Annotated[str, Field(min_length=1, max_length=10_000, pattern=r"\S"),
                 AfterValidator(_no_control_characters_but_line_breaks)]
ShortText = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S"),
                      AfterValidator(_no_control_characters)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime)]
Essay = Annotated[Text, AfterValidator(_at_most_200_words)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class Mayor(Strict):
    title: ShortText | None = None
    full_name: ShortText
    official_title: ShortText | None = None


class ContactPerson(Strict):
    title: ShortText | None = None
    full_name: ShortText
    official_title: ShortText | None = None
    organisation: ShortText | None = None
    postal_address: Text | None = None
    phone: ShortText | None = None
    email: EmailStr


class Figure(Strict):
    value: float = Field(ge=0, allow_inf_nan=False)
    year: int = Field(ge=1900, le=2100)


class CityProfile(Strict):
    population: Figure | None = None
    area_km2: Figure | None = None
    gdp_per_capita_city_usd: Figure | None = None
    gdp_per_capita_country_usd: Figure | None = None
    schooling_years_men: Figure | None = None
    schooling_years_women: Figure | None = None


class ApplicationForm(Strict):
    """Part 1 of the form, signed by the mayor. Names, e-mails and phones are personal data."""

    city: ShortText
    country: CountryCode
    website: HttpUrl | None = None
    mayor: Mayor
    contact: ContactPerson
    language: Literal["en", "fr"]
    profile: CityProfile = CityProfile()
    motivation: Essay
    implementation: Essay
    pledge: Literal[True] = Field(description="the pledge to adopt the guiding documents")
    signed_on: IsoDate


class ContactUpdate(Strict):
    """A city's new mayor and/or contact person (each replaces the one recorded before)."""

    mayor: Mayor | None = None
    contact: ContactPerson | None = None

    @model_validator(mode="after")
    def _someone(self) -> ContactUpdate:
        if self.mayor is None and self.contact is None:
            raise ValueError("give the new mayor, the new contact person, or both")
        return self


class ProgressReport(Strict):
    """A biennial progress report."""

    covering_from: IsoDate
    covering_to: IsoDate
    summary: Text
    statistics: dict[ShortText, Annotated[float, Field(allow_inf_nan=False)]] = {}
    links: list[HttpUrl] = []

    @model_validator(mode="after")
    def _period_in_order(self) -> ProgressReport:
        if self.covering_to < self.covering_from:
            raise ValueError("covering_to must not be before covering_from")
        return self


Form = TypeVar("Form", bound=BaseModel)


def parse(schema: type[Form], data: Any) -> Form:
    """Validate `data` against `schema`, naming the first offending field in the error."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")  # our own rules' messages
        if first["type"] == "missing":
            message = "is required"
        elif first["type"] == "extra_forbidden":
            message = "is not a field of this form"
        raise InvalidInput(f"{field or 'input'}: {message}", field=field) from None
