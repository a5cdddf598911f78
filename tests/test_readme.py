"""The README's quick start works as written against `gnlc serve` on an empty embedded store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.live_server import free_port, serving

ROOT = Path(__file__).resolve().parent.parent


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart -->\s*```sh\n(.*?)```", readme, re.S)
    assert block, "the README has no quick start block"
    return block.group(1)


def test_the_quick_start_admits_a_city_with_the_token_printed_on_first_start(tmp_path: Path
                                                                             ) -> None:
    url, port = f"sqlite:///{tmp_path}/gnlc.sqlite", free_port()
    with serving(url, port) as printed:
        exports = [line for line in printed if line.startswith("export GNLC_TOKEN=")]
        assert len(exports) == 1
        token = exports[0].strip().split("=", 1)[1]
        # From another directory, with this environment's `gnlc` on the PATH, as a user would.
        path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", quick_start()], cwd=tmp_path, capture_output=True,
            text=True, timeout=120, env={**os.environ, "PATH": path, "GNLC_TOKEN": token,
                                         "GNLC_URL": f"http://127.0.0.1:{port}"})
    assert done.returncode == 0, done.stderr
    assert '"name":"Cork","country":"IE","status":"active"' in done.stdout


def test_a_restarted_server_prints_no_token_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/gnlc.sqlite"
    with serving(url, free_port()) as first:
        assert any("GNLC_TOKEN=" in line for line in first)
    with serving(url, free_port()) as second:
        assert not any("GNLC_TOKEN=" in line for line in second)
        assert any("Tokens exist already" in line for line in second)
