"""RFC 9457 problem details: every refusal and failure, as `application/problem+json`.

No stack trace reaches a client: unexpected errors become a plain 500 problem (and are logged).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg
from eventsourcing.persistence import OperationalError, PersistenceError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from domain.errors import (
    Conflict,
    Forbidden,
    GnlcError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    RuleViolation,
)
from infrastructure.eventstore.data_keys import KeyUnavailable
from infrastructure.http.idempotency import KeyReusedWithOtherRequest, StillRunning
from infrastructure.http.limits import retry_after
from infrastructure.http.schemas import Problem
from infrastructure.readmodels.read_side import Behind, Busy

TYPE_BASE = "https://gnlc.uil.unesco.org/problems/"
MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("gnlc.http")

STATUS: dict[type[GnlcError], int] = {
    InvalidInput: 422,
    NotAuthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    RuleViolation: 409,
    Conflict: 409,
}

RESPONSE: dict[str, Any] = {"model": Problem, "content": {MEDIA_TYPE: {}}}
COMMON: dict[int | str, dict[str, Any]] = {
    status: {**RESPONSE, "description": text} for status, text in (
        (400, "malformed request (e.g. a body that is not JSON)"),
        (401, "no valid bearer token"),
        (403, "outside the token's role or scope"),
        (404, "no such resource"),
        (409, "refused by a business rule, or a conflict"),
        (413, "request body over 256 KiB"),
        (422, "invalid input; `field` names the offending field"),
        (429, "over the token's request rate, its open streams or the address's failed "
              "authentications; see Retry-After"),
        (500, "unexpected failure (no details are given out)"),
        (503, "the database is unavailable, or the read models are behind"),
    )
}


class TooManyRequests(Exception):
    def __init__(self, wait: float, detail: str = "too many requests for this token") -> None:
        super().__init__(f"retry after {wait:.3f} s")
        self.wait, self.detail = wait, detail


def body(status: int, code: str, detail: str, field: str | None = None) -> dict[str, Any]:
    title = code.replace("_", " ").capitalize()
    return Problem(type=TYPE_BASE + code, title=title, status=status, detail=detail, code=code,
                   field=field).model_dump()


def for_error(error: GnlcError) -> tuple[int, dict[str, Any]]:
    status = next(code for kind, code in STATUS.items() if isinstance(error, kind))
    return status, body(status, error.code, error.message, error.field)


def keep(status: int, content: dict[str, Any]) -> bool:
    """Which outcomes an idempotency key remembers: all but those a retry may change."""
    return status < 500 and status not in (401, 429) and content.get("code") != Conflict.code


def response(status: int, content: dict[str, Any],
             headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(content, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _validation_field(error: dict[str, Any]) -> str | None:
    parts = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _allowed_methods(request: Request) -> str:
    """Every method the path answers to: the router's 405 names only its first route's."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def install(api: FastAPI) -> None:
    """Map every exception to a problem response."""

    @api.exception_handler(GnlcError)
    async def refused(_: Request, error: GnlcError) -> JSONResponse:
        status, content = for_error(error)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return response(status, content, headers)

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = dict(error.errors()[0])
        if first.get("type") == "json_invalid":
            return response(400, body(400, "malformed_request",
                                      f"the body is not valid JSON: {first.get('msg')}"))
        field = _validation_field(first)
        message = "is required" if first.get("type") == "missing" else first.get("msg", "")
        return response(422, body(422, InvalidInput.code, f"{field or 'input'}: {message}",
                                  field))

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {400: "malformed_request", 404: "not_found", 405: "method_not_allowed"}.get(
            error.status_code, "http_error")
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return response(error.status_code, body(error.status_code, code, str(error.detail)),
                        headers)

    @api.exception_handler(TooManyRequests)
    async def too_many(_: Request, error: TooManyRequests) -> JSONResponse:
        return response(429, body(429, "rate_limited", error.detail),
                        {"Retry-After": retry_after(error.wait)})

    @api.exception_handler(KeyReusedWithOtherRequest)
    async def key_reused(_: Request, error: KeyReusedWithOtherRequest) -> JSONResponse:
        return response(422, body(422, "idempotency_key_reused",
                                  "this Idempotency-Key was used for a different request",
                                  "Idempotency-Key"))

    @api.exception_handler(StillRunning)
    async def still_running(_: Request, error: StillRunning) -> JSONResponse:
        return response(409, body(409, "conflict", "the first request with this "
                                  "Idempotency-Key is still running; retry later"),
                        {"Retry-After": "1"})

    @api.exception_handler(Behind)
    async def behind(_: Request, error: Behind) -> JSONResponse:
        return response(503, body(503, "unavailable", str(error)), {"Retry-After": "1"})

    @api.exception_handler(KeyUnavailable)
    async def key_unavailable(_: Request, error: KeyUnavailable) -> JSONResponse:
        log.error("data key unavailable: %s", error)
        return response(503, body(503, "unavailable", "personal data cannot be opened: the "
                                  "data keys are unavailable (see the server's log)"))

    @api.exception_handler(Busy)
    async def busy(_: Request, error: Busy) -> JSONResponse:
        return response(503, body(503, "unavailable", str(error)), {"Retry-After": "1"})

    @api.exception_handler(OperationalError)
    @api.exception_handler(PersistenceError)
    @api.exception_handler(SQLAlchemyError)  # read models, idempotency keys
    @api.exception_handler(psycopg.Error)  # recorded times, chain reads
    @api.exception_handler(sqlite3.Error)
    async def database(_: Request, error: Exception) -> JSONResponse:
        log.error("database unavailable: %s", error)
        return response(503, body(503, "unavailable", "the database is unavailable"),
                        {"Retry-After": "1"})

    @api.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=error)
        return response(500, body(500, "internal_error",
                                  "an unexpected error occurred; it has been logged"))
