"""The documentation stands on its own: every relative link in README.md and docs/*.md leads to a
file of the repository (a clone, an sdist or a package page has nothing outside it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def links(document: Path) -> list[str]:
    """The link targets of a Markdown file, code blocks left out."""
    text = FENCE.sub("", document.read_text(encoding="utf-8"))
    return [*INLINE_LINK.findall(text), *REFERENCE.findall(text)]


def anchors(document: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings."""
    text = FENCE.sub("", document.read_text(encoding="utf-8"))
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#{1,6}\s+(.+)$", text, re.M)}


def test_the_rules_are_in_the_repository_and_the_readme_links_them() -> None:
    assert "docs/rules.md" in links(ROOT / "README.md")
    assert (ROOT / "docs" / "rules.md").is_file()


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_to_a_file_inside_the_repository(document: Path) -> None:
    broken = []
    for target in links(document):
        if SCHEME.match(target):
            continue  # a web address, not a file of the repository
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, f"{document.relative_to(ROOT)}: {broken}"
