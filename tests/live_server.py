"""The HTTP API served on a loopback port, in a thread, for tests over real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn

from application.clock import Clock
from application.registry import Registry
from domain.acts import Actor, Role
from infrastructure.bootstrap import build_api, build_registry
from infrastructure.settings import Settings

OPERATOR = Actor("test-operator", Role.SECRETARIAT)
STARTUP_TIMEOUT = 30.0


@dataclass
class LiveServer:
    url: str
    registry: Registry

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
        yield LiveServer(f"http://127.0.0.1:{port}", registry)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        registry.close()
