"""Regenerate the French catalogue's message ids from the templates and the pages
(`python -m infrastructure.console.catalogue`): a maintainer's tool, not run by the server."""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

HERE = Path(__file__).parent
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
KEYWORDS = {"_": None, "gettext": None, "N_": None}


def message_ids() -> list[str]:
    """Every message the console shows, in the order found."""
    found: dict[str, None] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
            HERE, METHODS, OPTIONS, KEYWORDS):
        if isinstance(message, str) and message:
            found[message] = None
    return list(found)


def update(language: str = "fr") -> list[str]:
    """Add the new message ids to the language's .po; return those still untranslated."""
    po = HERE / "locale" / language / "LC_MESSAGES" / "messages.po"
    catalog = read_po(po.open("rb"), locale=language) if po.exists() else Catalog(locale=language)
    for message in message_ids():
        if message not in catalog:
            catalog.add(message, "")
    with po.open("wb") as out:
        write_po(out, catalog, omit_header=False, sort_output=True, width=100)
    return [str(m.id) for m in catalog if m.id and not m.string]


if __name__ == "__main__":
    print("\n".join(update()))
