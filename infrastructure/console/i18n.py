"""English and French: one gettext catalogue (locale/fr/LC_MESSAGES/messages.po), chosen by a
cookie set by the language switch, else by Accept-Language; dates and country names per locale
(Babel's CLDR data)."""

from __future__ import annotations

import gettext
from datetime import date, datetime
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LANGUAGES = ("en", "fr")
DEFAULT = "en"
LANG_COOKIE = "gnlc_lang"
LOCALE_DIR = Path(__file__).parent / "locale"


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The catalogue of a language, compiled from its .po file once per process."""
    po = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if language == DEFAULT or not po.exists():
        return gettext.NullTranslations()
    with po.open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def negotiate(cookie: str | None, accept_language: str | None) -> str:
    """The switch's choice, else the first language of Accept-Language we have, else English."""
    if cookie in LANGUAGES:
        return str(cookie)
    ranked: list[tuple[float, str]] = []
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        ranked.append((weight, tag.strip().lower()[:2]))
    for _, language in sorted(ranked, key=lambda r: -r[0]):
        if language in LANGUAGES:
            return language
    return DEFAULT


def day(value: Any, language: str) -> str:
    """A calendar date in the locale's medium format ('4 déc. 2026', 'Dec 4, 2026')."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    return format_date(value, format="medium", locale=language)


def moment(value: Any, language: str, timezone: str) -> str:
    """A timestamp in the secretariat's time zone, in the locale's format."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return format_datetime(value, format="medium", tzinfo=ZoneInfo(timezone), locale=language)


@cache
def country_names(language: str) -> dict[str, str]:
    territories: dict[str, str] = dict(Locale.parse(language).territories)
    return territories


def country_name(code: str | None, language: str) -> str:
    if not code:
        return ""
    return country_names(language).get(code.upper(), code)
