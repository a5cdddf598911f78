"""`gnlc tokens`: the bearer tokens of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from application.registry import parse_id
from domain.access import AccessToken
from domain.acts import Role
from domain.errors import InvalidInput
from infrastructure.cli.queries import country_option
from infrastructure.cli.session import CountryOption, JsonFlag, Session, app, err, run_in_session

tokens_app = typer.Typer(help="Bearer tokens of the HTTP API (an operator's task, on the server).")
app.add_typer(tokens_app, name="tokens")


FIRST_TOKEN = "first-secretariat"


def token_row(token: AccessToken) -> dict[str, Any]:
    return {"name": token.name, "role": str(token.role), "country": token.country,
            "city": token.city_id, "scopes": sorted(token.scopes),
            "revoked": token.revoked, "issued_at": token.created_on}


@tokens_app.command("create")
def tokens_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option("--role", help=", ".join(Role))],
    name: Annotated[str, typer.Option("--name", help="Unique; recorded as the actor.")],
    country: CountryOption = None,
    city: Annotated[str | None, typer.Option("--city", help="CITY_ID (see `gnlc city-id`).")
                    ] = None,
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="Extra scope: personal_data.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a token; its secret is printed once and only a salted hash is stored."""
    def action(s: Session) -> dict[str, Any]:
        if role not in {str(r) for r in Role}:
            raise InvalidInput(f"role must be one of {', '.join(Role)}", field="role")
        issued = s.registry().issue_token(
            s.actor(Role.SECRETARIAT), name, Role(role), country_option(country),
            parse_id(city, "city") if city else None, frozenset(scope or ()))
        if not as_json:
            err.print("[yellow]The token is shown only now; keep it secret.[/]")
        return {"name": issued.name, "role": issued.role, "token": issued.token}
    run_in_session(ctx, as_json, action)


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every token issued (never their secrets)."""
    run_in_session(ctx, as_json, lambda s: [token_row(t) for t in s.registry().tokens()])


@tokens_app.command("revoke")
def tokens_revoke(ctx: typer.Context, name: str,
                  reason: Annotated[str, typer.Option("--reason")] = "revoked",
                  as_json: JsonFlag = False) -> None:
    """Revoke a token; it is refused from the next request on."""
    def action(s: Session) -> dict[str, Any]:
        s.registry().revoke_token(s.actor(Role.SECRETARIAT), name, reason)
        return {"name": name, "revoked": True}
    run_in_session(ctx, as_json, action)

