"""A narrated intake year, run through the real use cases with a simulated business clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.table import Table

from application.clock import FixedClock
from application.registry import Registry
from domain.acts import Actor, Role
from domain.errors import GnlcError

YEAR = 2020
APPLICANTS = [  # (city, country): four Moroccan cities compete for three places.
    ("Benguerir", "MA"), ("Chefchaouen", "MA"), ("Ifrane", "MA"), ("Oujda", "MA"),
    ("Hamburg", "DE"), ("Muharraq", "BH"),
]


def _form(city: str, country: str) -> dict[str, Any]:
    return {
        "city": city,
        "country": country,
        "website": f"https://{city.lower()}.example.org",
        "mayor": {"title": "H.E.", "full_name": f"Mayor of {city}", "official_title": "Mayor"},
        "contact": {"full_name": f"Learning City Officer of {city}",
                    "email": f"learning@{city.lower()}.example.org", "phone": "+000 000 000"},
        "language": "fr" if country == "MA" else "en",
        "profile": {"population": {"value": 250000, "year": 2019}},
        "motivation": f"{city} wants lifelong learning for all its inhabitants.",
        "implementation": "A learning festival, community learning centres and a city council.",
        "pledge": True,
        "signed_on": f"{YEAR}-02-20",
    }


def narrate(registry: Registry, actor_name: str, console: Console, database: str) -> None:
    """Run the intake of 2020 as it happened, more or less, and say what the registry did."""
    if registry.recorder.max_notification_id():
        console.print("[red]The demo needs an empty event store; point --database-url at a new "
                      "file, e.g. sqlite:///./var/demo.sqlite[/]")
        return
    secretariat = Actor(actor_name, Role.SECRETARIAT)
    commission = Actor(actor_name, Role.NATIONAL_COMMISSION)
    city = Actor(actor_name, Role.CITY)

    def at(day: date, hour: int = 10) -> None:
        registry.clock = FixedClock(datetime(day.year, day.month, day.day, hour, tzinfo=UTC))

    def step(text: str, action: Callable[[], Any]) -> Any:
        try:
            result = action()
        except GnlcError as refusal:
            console.print(
                f"  [yellow]refused[/] {text}: [bold]{refusal.code}[/] ({refusal.message})"
            )
            return None
        console.print(f"  [green]ok[/] {text}")
        return result

    console.rule(f"[bold]GNLC intake {YEAR}, on the business clock")
    at(date(YEAR, 1, 15))
    intake = step(f"{date(YEAR, 1, 15)} the secretariat opens the {YEAR} intake",
                  lambda: registry.open_intake(secretariat, YEAR))
    console.print(f"     window {intake.opens} .. {intake.closes} (Europe/Berlin, inclusive)")

    at(date(YEAR, 2, 28))
    step(f"{date(YEAR, 2, 28)} Benguerir applies a day early",
         lambda: registry.submit_application(city, _form("Benguerir", "MA")))

    ids: dict[str, UUID] = {}
    at(date(YEAR, 3, 2))
    for name, country in APPLICANTS:
        submission = step(f"{date(YEAR, 3, 2)} {name} ({country}) applies",
                          lambda n=name, c=country: registry.submit_application(city, _form(n, c)))
        ids[name] = submission.application_id
    step(f"{date(YEAR, 3, 2)} Oujda applies a second time",
         lambda: registry.submit_application(city, _form("Oujda", "MA")))

    at(date(YEAR, 3, 20))
    for name, _ in APPLICANTS:
        if name == "Muharraq":
            step(f"{date(YEAR, 3, 20)} the National Commission of Bahrain declines {name}",
                 lambda: registry.decline(commission, ids["Muharraq"], "incomplete file"))
        else:
            step(f"{date(YEAR, 3, 20)} the National Commission endorses {name}",
                 lambda n=name: registry.endorse(commission, ids[n]))

    at(date(YEAR, 4, 29))
    step(f"{date(YEAR, 4, 29)} COVID-19: the secretariat extends the window to 30 June",
         lambda: registry.extend_intake(secretariat, YEAR, date(YEAR, 6, 30), "COVID-19"))

    at(date(YEAR, 6, 15))
    for name in ("Benguerir", "Chefchaouen", "Ifrane", "Oujda", "Hamburg"):
        admission = step(
            f"{date(YEAR, 6, 15)} the secretariat admits {name}",
            lambda n=name: registry.admit(secretariat, ids[n], jury="recommended"))
        if admission:
            limit = admission.limit if admission.limit is not None else "none"
            console.print(f"     quota {admission.country} {admission.quota_year}: "
                          f"{admission.used} of {limit} used")

    at(date(YEAR, 9, 1))
    step(f"{date(YEAR, 9, 1)} a corrigendum retracts Ifrane's admission",
         lambda: registry.retract(secretariat, ids["Ifrane"], "corrigendum: published in error"))
    step(f"{date(YEAR, 9, 1)} admitting Oujda after the window closed",
         lambda: registry.admit(secretariat, ids["Oujda"]))
    step(f"{date(YEAR, 9, 1)} the secretariat extends the window again to decide late",
         lambda: registry.extend_intake(secretariat, YEAR, date(YEAR, 9, 30), "late jury"))
    step(f"{date(YEAR, 9, 1)} the secretariat admits Oujda into the freed place",
         lambda: registry.admit(secretariat, ids["Oujda"]))

    hamburg = registry.application(secretariat, ids["Hamburg"]).city_id
    at(date(YEAR + 2, 5, 2))
    report = step(
        f"{date(YEAR + 2, 5, 2)} Hamburg submits its first progress report",
        lambda: registry.submit_report(city, hamburg, {
            "covering_from": f"{YEAR}-06-15", "covering_to": f"{YEAR + 2}-04-30",
            "summary": "Learning festivals in every district."}))
    if report:
        console.print(f"     cycle {report.cycle}, due {report.due}, late: {report.late}")
    step(f"{date(YEAR + 2, 5, 2)} retracting Hamburg's admission now that it has reported",
         lambda: registry.retract(secretariat, ids["Hamburg"], "second thoughts"))

    console.rule("[bold]Where things stand")
    table = Table("application", "city", "country", "status", "quota")
    for name, _ in APPLICANTS:
        application = registry.application(secretariat, ids[name])
        quota = application.quota or {}
        table.add_row(str(application.id)[:8], name, application.country, application.status,
                      f"{quota.get('used', '')}/{quota.get('limit', '')}" if quota else "")
    console.print(table)
    console.print(f"{registry.recorder.max_notification_id()} events stored. Try:\n"
                  f"  gnlc --database-url {database} history {hamburg}")
