"""`gnlc import history`: the network's admissions since 2015, from a CSV file, as history.

Each row goes through the registry's `import_membership` use case (the rules of its date apply);
a row that cannot come in is refused with its line number and the reason, and the others still
come in. Importing the same file again changes nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from application.registry import Registry
from domain.acts import Actor
from domain.errors import InvalidInput, RuleViolation
from domain.forms import parse
from domain.history import HistoryRow

REQUIRED = ("city", "country", "year_joined")
OPTIONAL = ("admitted_on", "left_on", "left_reason", "source_url")


@dataclass
class Summary:
    imported: int = 0
    skipped: int = 0
    refused: list[dict[str, Any]] = field(default_factory=list)

    def refuse(self, line: int, raw: dict[str, Any], reason: str) -> None:
        self.refused.append({"line": line, "city": raw.get("city"),
                             "country": raw.get("country"), "reason": reason})

    def json(self) -> dict[str, Any]:
        return {"imported": self.imported, "skipped": self.skipped,
                "refused": sorted(self.refused, key=lambda r: r["line"])}


def read(path: Path, summary: Summary) -> list[tuple[int, dict[str, Any], HistoryRow]]:
    """The valid rows with their line numbers; invalid ones are recorded as refused."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.DictReader(file)
            _check_header(reader.fieldnames)
            rows = []
            for raw in reader:
                line = reader.line_num
                values = {k: (v.strip() or None) if isinstance(v, str) else v
                          for k, v in raw.items() if k is not None}
                try:
                    rows.append((line, values, parse(HistoryRow, values)))
                except InvalidInput as error:
                    summary.refuse(line, values, f"{error.code}: {error.message}")
            return rows
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}", field="file") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise InvalidInput(f"{path} is not a UTF-8 CSV file: {error}", field="file") from None


def _check_header(names: Any) -> None:
    columns = set(names or ())
    if missing := [c for c in REQUIRED if c not in columns]:
        raise InvalidInput(f"the CSV lacks the column {missing[0]!r} (needed: "
                           f"{', '.join(REQUIRED)})", field="file")
    if unknown := sorted(columns - set(REQUIRED) - set(OPTIONAL)):
        raise InvalidInput(f"unknown column {unknown[0]!r}; the columns are "
                           f"{', '.join(REQUIRED + OPTIONAL)}", field="file")


def import_history(registry: Registry, actor: Actor, path: Path,
                   progress: Callable[[int, int], None] = lambda done, total: None) -> Summary:
    """Import every row, oldest admission first (so that readmissions follow admissions)."""
    summary = Summary()
    rows = sorted(read(path, summary), key=lambda r: (r[2].admitted, r[0]))
    for done, (line, raw, row) in enumerate(rows, start=1):
        try:
            if registry.import_membership(actor, row):
                summary.imported += 1
            else:
                summary.skipped += 1
        except (RuleViolation, InvalidInput) as error:
            summary.refuse(line, raw, f"{error.code}: {error.message}")
        progress(done, len(rows))
    return summary
