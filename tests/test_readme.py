"""The README's quick start works as written against `gnlc serve` on an empty embedded store."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GNLC = str(Path(sys.executable).with_name("gnlc"))
STARTUP_TIMEOUT = 60.0


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart -->\s*```sh\n(.*?)```", readme, re.S)
    assert block, "the README has no quick start block"
    return block.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(database_url: str, port: int, *options: str) -> Iterator[list[str]]:
    """`gnlc serve` in a subprocess; yields the lines it printed up to 'gnlc API on'."""
    env = {**os.environ, "GNLC_DATABASE_URL": database_url}
    server = subprocess.Popen([GNLC, "serve", "--port", str(port), *options], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert server.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in server.stdout],  # type: ignore[union-attr]
                     daemon=True).start()
    printed: list[str] = []
    try:
        while not printed or not printed[-1].startswith("gnlc API on"):
            printed.append(lines.get(timeout=STARTUP_TIMEOUT))
        _wait_until_listening(port)
        yield printed
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _wait_until_listening(port: int) -> None:
    for _ in range(int(STARTUP_TIMEOUT / 0.05)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
            return
        except OSError:
            threading.Event().wait(0.05)
    raise AssertionError("the server never listened")


def test_the_quick_start_admits_a_city_with_the_token_printed_on_first_start(tmp_path: Path
                                                                             ) -> None:
    url, port = f"sqlite:///{tmp_path}/gnlc.sqlite", free_port()
    with serving(url, port) as printed:
        exports = [line for line in printed if line.startswith("export GNLC_TOKEN=")]
        assert len(exports) == 1
        token = exports[0].strip().split("=", 1)[1]
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", quick_start()], cwd=ROOT, capture_output=True,
            text=True, timeout=120,
            env={**os.environ, "GNLC_TOKEN": token, "GNLC_URL": f"http://127.0.0.1:{port}"})
    assert done.returncode == 0, done.stderr
    assert '"name":"Cork","country":"IE","status":"active"' in done.stdout


def test_a_restarted_server_prints_no_token_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/gnlc.sqlite"
    with serving(url, free_port()) as first:
        assert any("GNLC_TOKEN=" in line for line in first)
    with serving(url, free_port()) as second:
        assert not any("GNLC_TOKEN=" in line for line in second)
        assert any("Tokens exist already" in line for line in second)
