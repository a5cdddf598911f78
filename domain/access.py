"""Who may do what: the roles' permissions, their scopes, and the access tokens that carry them."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.acts import Act, Actor, AuditedAggregate, Role
from domain.errors import Forbidden, InvalidInput, InvalidTransition, NotAuthenticated

PERSONAL_DATA = "personal_data"
SCOPES = frozenset({PERSONAL_DATA})
TOKEN_PREFIX = "gnlc"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


class Action(StrEnum):
    OPEN_INTAKE = "open_intake"
    EXTEND_INTAKE = "extend_intake"
    SUBMIT_APPLICATION = "submit_application"
    ENDORSE = "endorse"
    DECLINE = "decline"
    WITHDRAW = "withdraw"
    ADMIT = "admit"
    REJECT = "reject"
    RETRACT = "retract"
    SUBMIT_REPORT = "submit_report"
    END_MEMBERSHIP = "end_membership"
    IMPORT_HISTORY = "import_history"
    UPDATE_CONTACTS = "update_contacts"
    ERASE_PERSONAL_DATA = "erase_personal_data"
    READ = "read"
    READ_PAST = "read_past"
    READ_FEED = "read_feed"


PERMISSIONS: dict[Role, frozenset[Action]] = {
    # Token administration is not an action of any role: only an operator on the server does it.
    Role.SECRETARIAT: frozenset(Action),
    Role.NATIONAL_COMMISSION: frozenset({Action.ENDORSE, Action.DECLINE, Action.READ}),
    Role.CITY: frozenset(
        {Action.SUBMIT_APPLICATION, Action.WITHDRAW, Action.SUBMIT_REPORT,
         Action.UPDATE_CONTACTS, Action.READ}
    ),
    Role.AUDITOR: frozenset({Action.READ, Action.READ_PAST, Action.READ_FEED}),
    Role.SUBSCRIBER: frozenset({Action.READ_FEED}),
}


def authorise(
    actor: Actor, action: Action, country: str | None = None, city_id: UUID | None = None
) -> None:
    """Refuse with `Forbidden` unless the actor's role allows the action on this country/city.

    The role is checked before anything is looked up, and a subject that does not exist is
    passed as country None (and the id asked for as `city_id` when it names a city): a scoped
    actor then gets the same `Forbidden` for an unknown id as for another country's or city's,
    so no token learns whether a city outside its scope ever applied."""
    if action not in PERMISSIONS[actor.role]:
        raise Forbidden(f"the role {actor.role} may not {action.replace('_', ' ')}")
    if not in_scope(actor, country, city_id):
        raise Forbidden(f"{actor.name} acts for {_scope_text(actor)} only")


def in_scope(actor: Actor, country: str | None, city_id: UUID | None) -> bool:
    """Whether data of this country and city is within the actor's scope."""
    if actor.country is not None and country != actor.country:
        return False
    return actor.city_id is None or city_id == actor.city_id


RowT = TypeVar("RowT", bound=Mapping[str, Any])


@dataclass(frozen=True)
class ReadScope:
    """The rows of the read models an actor gets: of one country, of one city, or all."""

    country: str | None = None
    city_id: UUID | None = None

    def admits(self, row: Mapping[str, Any]) -> bool:
        """Whether a row (with `country`, and `city_id` where it concerns one city) is in scope;
        a row of no one city (a country's quota) is outside a city's scope."""
        if self.country is not None and row["country"] != self.country:
            return False
        if self.city_id is None:
            return True
        return row.get("city_id") is not None and UUID(str(row["city_id"])) == self.city_id

    def narrow(self, rows: Iterable[RowT]) -> list[RowT]:
        return [row for row in rows if self.admits(row)]


def read_scope(actor: Actor, country: str | None = None, past: bool = False) -> ReadScope:
    """What of the read models (members, quotas, deadlines, applications) the actor may read
    when asking for `country` (None: every country it may see), now or at a past point (`past`:
    `as_of`/`known_at`). The one rule every edge applies: refused with `Forbidden` outside the
    role, or for another country than a Commission's own."""
    authorise(actor, Action.READ, actor.country, actor.city_id)
    if past:
        authorise(actor, Action.READ_PAST, actor.country, actor.city_id)
    if actor.country is not None and country not in (None, actor.country):
        raise Forbidden(f"{actor.name} acts for the country {actor.country} only",
                        field="country")
    return ReadScope(actor.country or country, actor.city_id)


def _scope_text(actor: Actor) -> str:
    return f"the city {actor.city_id}" if actor.city_id else f"the country {actor.country}"


def token_id(name: str) -> UUID:
    """The id of a token's aggregate: one per name, so that names are unique."""
    return uuid5(NAMESPACE_URL, f"gnlc:token:{name}")


def digest(salt: str, secret: str) -> str:
    """The salted SHA-256 of a secret; secrets are 256 random bits, so a slow hash adds nothing."""
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def token_text(token: UUID, secret: str) -> str:
    return f"{TOKEN_PREFIX}_{token.hex}_{secret}"


def parse_token(text: str) -> tuple[UUID, str]:
    """The token's id and secret; anything malformed is `NotAuthenticated`."""
    prefix, _, rest = text.partition("_")
    hex_id, _, secret = rest.partition("_")
    try:
        if prefix != TOKEN_PREFIX or not secret:
            raise ValueError
        return UUID(hex=hex_id), secret
    except ValueError:
        raise NotAuthenticated("the bearer token is malformed") from None


class AccessToken(AuditedAggregate):
    """A bearer token: its holder's name, role and scope; only a salted hash of its secret."""

    class Issued(AuditedAggregate.Event, Aggregate.Created):
        name: str
        role: str
        country: str | None
        city_id: UUID | None
        scopes: list[str]
        salt: str
        secret_hash: str

    def __init__(
        self, name: str, role: str, country: str | None, city_id: UUID | None,
        scopes: list[str], salt: str, secret_hash: str, **_audit: Any,
    ) -> None:
        self.name, self.role, self.country, self.city_id = name, Role(role), country, city_id
        self.scopes = frozenset(scopes)
        self.salt, self.secret_hash = salt, secret_hash
        self.revoked = False

    @classmethod
    def issue(
        cls, act: Act, name: str, role: Role, country: str | None, city_id: UUID | None,
        scopes: frozenset[str], salt: str, secret: str,
    ) -> AccessToken:
        _check_grant(name, role, country, city_id, scopes)
        return cls._create(
            cls.Issued, id=token_id(name), name=name, role=str(role), country=country,
            city_id=city_id, scopes=sorted(scopes), salt=salt,
            secret_hash=digest(salt, secret), **act.event_fields(),
        )

    class Revoked(AuditedAggregate.Event):
        reason: str

        def apply(self, token: AccessToken) -> None:
            token.revoked = True

    def revoke(self, act: Act, reason: str) -> None:
        if self.revoked:
            raise InvalidTransition(f"the token {self.name} is already revoked", field="name")
        self.trigger_event(self.Revoked, reason=reason, **act.event_fields())

    def actor(self, secret: str, source: str) -> Actor:
        """The actor this token stands for, if the secret matches and the token is in force."""
        if self.revoked or not hmac.compare_digest(digest(self.salt, secret), self.secret_hash):
            raise NotAuthenticated("the bearer token is unknown or revoked")
        return Actor(self.name, self.role, source, self.country, self.city_id, self.scopes)


def _check_grant(
    name: str, role: Role, country: str | None, city_id: UUID | None, scopes: frozenset[str]
) -> None:
    """A token's scope must fit its role: a country for a Commission, a city for a city."""
    if not NAME_PATTERN.match(name):
        raise InvalidInput(
            "name must be 1-100 letters, digits or . _ @ - and start with a letter or digit",
            field="name",
        )
    if unknown := scopes - SCOPES:
        raise InvalidInput(f"unknown scope {sorted(unknown)[0]!r}", field="scope")
    if (role is Role.NATIONAL_COMMISSION) != (country is not None):
        raise InvalidInput("a national_commission token needs --country, and only it",
                           field="country")
    if (role is Role.CITY) != (city_id is not None):
        raise InvalidInput("a city token needs --city, and only it", field="city")
