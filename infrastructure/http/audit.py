"""Auditors' endpoints: the head of the hash chain, and a city's state at a past point."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import FastAPI, Path, Query
from pydantic import BaseModel

from application.registry import Registry
from domain.access import PERSONAL_DATA, Action, authorise
from domain.errors import InvalidInput
from infrastructure.audit.log import StoredLog
from infrastructure.http.api import Caller
from infrastructure.views import audit_state_view


class ChainHead(BaseModel):
    position: int
    hash: str


class CityState(BaseModel):
    city: dict[str, Any] | None
    applications: list[dict[str, Any]]


def add_audit_routes(api: FastAPI, registry: Registry, log: StoredLog) -> None:
    @api.get("/audit/head", response_model=ChainHead, tags=["audit"])
    def head(actor: Caller) -> dict[str, Any]:
        """The head of the hash chain, to compare with a published one (`gnlc audit verify
        --expect HASH@POSITION`)."""
        authorise(actor, Action.READ_PAST)
        found = log.head()
        return {"position": found.position, "hash": found.hash}

    @api.get("/audit/cities/{city_id}", response_model=CityState, tags=["audit"])
    def city_state(
        actor: Caller, city_id: Annotated[UUID, Path()],
        as_of: Annotated[date | None, Query(description="end of this business day")] = None,
        known_at: Annotated[datetime | None, Query(
            description="what had been recorded by this moment (with offset)")] = None,
        position: Annotated[int | None, Query(ge=0, description="up to this log position")
                            ] = None,
    ) -> dict[str, Any]:
        """A city's full state at a point (as `gnlc audit state`)."""
        # The role first: nothing is looked up (not even the chain) for a role that may not.
        authorise(actor, Action.READ_PAST, actor.country, actor.city_id)
        if known_at is not None and known_at.tzinfo is None:
            raise InvalidInput("known_at must carry a UTC offset (e.g. +01:00)", field="known_at")
        city, applications = registry.city_at(actor, city_id, as_of,
                                              log.limit(position, known_at))
        return audit_state_view(registry.personal_data, city, applications,
                                PERSONAL_DATA in actor.scopes)
