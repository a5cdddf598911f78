"""The infrastructure is grouped by adapter, and import-linter keeps the groups pointing inward."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFRASTRUCTURE = ROOT / "infrastructure"


def test_infrastructure_holds_a_package_per_adapter_and_only_the_root_modules_on_top() -> None:
    assert sorted(p.name for p in INFRASTRUCTURE.glob("*.py")) == [
        "__init__.py", "bootstrap.py", "settings.py", "views.py"]
    assert sorted(p.parent.name for p in INFRASTRUCTURE.glob("*/__init__.py")) == [
        "audit", "cli", "console", "eventstore", "examples", "feed", "http", "readmodels"]


def test_the_command_line_is_one_module_per_command_group() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (INFRASTRUCTURE / "cli").glob("*.py")}
    assert len(sizes) >= 10
    assert max(sizes.values()) < 300, sizes


def test_the_layer_contracts_between_the_adapter_groups_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Infrastructure groups point inward" in result.stdout
    assert "know no edge" in result.stdout
