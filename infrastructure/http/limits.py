"""Request limits: body size (413), a per-token request rate, failed authentications per client
address and live streams per token (429 with Retry-After)."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

MAX_BODY_BYTES = 256 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RateLimiter:
    """A token bucket per key: `rate` requests a second on average, bursts of up to `burst`.

    The libraries at hand (limits, slowapi) offer fixed or moving windows, which cannot express
    "20 a second with bursts of 200"; the bucket is a dozen lines.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    def admit(self, key: str) -> float:
        """0 if the request may go ahead, else the seconds to wait before the next one may."""
        if not self.enabled:
            return 0.0
        with self._lock:
            now, tokens = self._refilled(key)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def waiting(self, key: str) -> float:
        """The seconds before `key` may go ahead again (0 if it may now), consuming nothing."""
        if not self.enabled:
            return 0.0
        with self._lock:
            _, tokens = self._refilled(key)
            return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _refilled(self, key: str) -> tuple[float, float]:
        """Now, and the tokens `key`'s bucket holds now (the caller holds the lock)."""
        now = self.clock()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        return now, min(float(self.burst), tokens + (now - then) * self.rate)

    def forget_full(self, keep: int) -> None:
        """Drop the buckets that have filled up again (as good as new), then the oldest beyond
        `keep`: keeps memory bounded when keys come and go (client addresses)."""
        with self._lock:
            now = self.clock()
            live = [(key, (tokens, then)) for key, (tokens, then) in self._buckets.items()
                    if tokens + (now - then) * self.rate < self.burst]
            self._buckets = dict(live[-keep:])

    def __len__(self) -> int:
        return len(self._buckets)


# Addresses with recent failed authentications kept before the full buckets are dropped.
ADDRESSES_KEPT = 100_000
# At most one sweep of the buckets a second: a sweep reads them all, on the event loop, and an
# attacker rotating addresses could otherwise make every failed request pay for one.
SWEEP_SECONDS = 1.0


class FailedAuthentications:
    """Failed authentications per client address, limited before the token is looked up.

    Checking a token costs a database query on the event loop: an address that keeps sending
    unknown tokens is refused once over its rate, without that query. Bearers that did
    authenticate (remembered by digest) still go through, so a caller sharing the address (a
    proxy, loopback) is not locked out by another's failures."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 remembered: int = 10_000) -> None:
        self.limiter = RateLimiter(rate, burst, clock)
        self.remembered = remembered
        self._known: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self._swept = float("-inf")

    def refusal(self, address: str, bearer: str) -> float:
        """0 if the bearer may be looked up, else the seconds the address must wait."""
        wait = self.limiter.waiting(address)
        if wait and not self._is_known(bearer):
            return wait
        return 0.0

    def failed(self, address: str) -> None:
        self.limiter.admit(address)
        now = self.limiter.clock()
        if len(self.limiter) > ADDRESSES_KEPT and now - self._swept >= SWEEP_SECONDS:
            self._swept = now
            self.limiter.forget_full(ADDRESSES_KEPT)

    def succeeded(self, bearer: str) -> None:
        digest = _digest(bearer)
        with self._lock:
            self._known[digest] = None
            self._known.move_to_end(digest)
            while len(self._known) > self.remembered:
                self._known.popitem(last=False)

    def _is_known(self, bearer: str) -> bool:
        with self._lock:
            return _digest(bearer) in self._known


def _digest(bearer: str) -> bytes:
    return hashlib.sha256(bearer.encode("utf-8", "surrogatepass")).digest()


class StreamSlots:
    """Live streams held open per key (a token), at most `limit` at once; 0: no limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        """Take a slot for `key`; False if it holds `limit` already."""
        with self._lock:
            held = self._open.get(key, 0)
            if self.limit and held >= self.limit:
                return False
            self._open[key] = held + 1
            return True

    def free(self, key: str) -> None:
        with self._lock:
            held = self._open.get(key, 0) - 1
            if held > 0:
                self._open[key] = held
            else:
                self._open.pop(key, None)


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by header or while reading."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        # Read the whole body first (it is small, or refused): a refusal raised from inside the
        # application would be turned into a 500 by the framework's error middleware.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({
            "type": "https://gnlc.uil.unesco.org/problems/payload_too_large",
            "title": "Payload too large", "status": 413, "code": "payload_too_large",
            "detail": f"request bodies are limited to {self.limit} bytes",
        }).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
