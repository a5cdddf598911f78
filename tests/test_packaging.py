"""What `pip install .` ships: every package and subpackage, and the files it reads at run time.

The whole install (a fresh virtual environment outside the checkout, `gnlc serve` and the README's
quick start from another directory) is CI's step `.ci/wheel`; here the wheel is built and read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infrastructure.cli import app
from projections.public import schemas

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("domain", "application", "infrastructure", "projections")
# Left out of the copy the wheel is built from: what a build or a run leaves in a checkout (a stale
# build/ would hide a missing file).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "var", "*.egg-info",
                                    "__pycache__", "*.pyc", ".*_cache", ".hypothesis")


def shipped_sources() -> set[str]:
    """Every file of the four packages in the source tree, as a wheel names it."""
    return {path.relative_to(ROOT).as_posix()
            for top in TOP_LEVEL for path in (ROOT / top).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The names in a wheel built from a clean copy of the checkout, as `pip install .` builds."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, work / "src", ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(work / "dist"), str(work / "src")],
                   check=True, capture_output=True, timeout=300)
    [built] = (work / "dist").glob("gnlc-*.whl")
    with zipfile.ZipFile(built) as archive:
        return set(archive.namelist())


def test_the_wheel_ships_every_package_and_subpackage_of_the_source_tree(wheel: set[str]
                                                                         ) -> None:
    packages = {path.parent.relative_to(ROOT).as_posix() for top in TOP_LEVEL
                for path in (ROOT / top).rglob("__init__.py")}
    assert "infrastructure/http" in packages
    missing = sorted(p for p in packages if f"{p}/__init__.py" not in wheel)
    assert not missing, f"packages left out of the wheel: {missing}"


def test_the_wheel_ships_every_file_the_packages_hold_including_package_data(wheel: set[str]
                                                                             ) -> None:
    sources = shipped_sources()
    assert "infrastructure/examples/application.json" in sources
    assert sorted(sources - wheel) == []


def test_the_wheel_ships_nothing_but_the_four_packages_and_its_metadata(wheel: set[str]) -> None:
    tops = {name.split("/", 1)[0] for name in wheel}
    assert tops == {*TOP_LEVEL, "gnlc-0.1.0.dist-info"}


def test_the_example_application_prints_the_packaged_form_which_the_registry_accepts() -> None:
    from domain.forms import ApplicationForm, parse

    done = CliRunner().invoke(app, ["example", "application"])
    assert done.exit_code == 0, done.output
    form = parse(ApplicationForm, json.loads(done.stdout))
    assert (form.city, form.country) == ("Cork", "IE")


def test_events_schemas_writes_into_the_directory_it_is_given(tmp_path: Path) -> None:
    target = tmp_path / "contract"
    done = CliRunner().invoke(app, ["events", "schemas", str(target)])
    assert done.exit_code == 0, done.output
    written = {path.stem: json.loads(path.read_text(encoding="utf-8"))
               for path in target.glob("*.json")}
    assert written == schemas()


def test_events_schemas_without_a_directory_is_a_usage_error_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["events", "schemas"])
    assert done.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_events_schemas_into_a_directory_it_cannot_write_names_it_and_exits_2(
        tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    done = CliRunner().invoke(app, ["events", "schemas", str(blocked / "events")])
    assert done.exit_code == 2
    assert "out_dir" in done.output and "Traceback" not in done.output
