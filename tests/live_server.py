"""The HTTP API served on a loopback port for tests over real sockets: in a thread of the test
process, or as `gnlc serve` in a subprocess."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from application.clock import Clock
from application.registry import Registry
from domain.acts import Actor, Role
from infrastructure.bootstrap import build_api, build_registry
from infrastructure.settings import Settings

OPERATOR = Actor("test-operator", Role.SECRETARIAT)
STARTUP_TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parent.parent
GNLC = str(Path(sys.executable).with_name("gnlc"))
SERVE_STARTUP_TIMEOUT = 60.0  # a subprocess imports everything first


@dataclass
class LiveServer:
    url: str
    registry: Registry
    app: Any = None  # the ASGI application served (BodyLimit around the FastAPI application)

    def token(self, name: str, role: Role, country: str | None = None,
              city: object = None, scopes: frozenset[str] = frozenset()) -> str:
        """Issue a token as an operator would with `gnlc tokens create`."""
        return self.registry.issue_token(OPERATOR, name, role, country, city,  # type: ignore[arg-type]
                                         scopes).token

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextmanager
def live_server(settings: Settings, clock: Clock | None = None,
                projections: bool = True) -> Iterator[LiveServer]:
    """Serve the API until the context ends; the runner works in-process unless told not to."""
    registry = build_registry(settings, clock)
    app = build_api(settings, registry, clock, projections)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(int(STARTUP_TIMEOUT / 0.01)):
        if server.started or not thread.is_alive():
            break
        started.wait(0.01)  # waiting on a condition (the server's flag), with a timeout
    if not server.started:
        raise RuntimeError("the test server did not start")
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", registry, app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        registry.close()


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
            printed.append(lines.get(timeout=SERVE_STARTUP_TIMEOUT))
        _wait_until_listening(port)
        yield printed
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _wait_until_listening(port: int) -> None:
    for _ in range(int(SERVE_STARTUP_TIMEOUT / 0.05)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
            return
        except OSError:
            threading.Event().wait(0.05)
    raise AssertionError("the server never listened")
