"""A reference subscriber: follows the gnlc event feed and keeps a local copy of the member list.

    GNLC_TOKEN=gnlc_... python docs/subscriber.py --url http://127.0.0.1:8000 --state members.json

It asks only for the event types it needs (`next_after` moves past all others), and after every
page stores its position together with the member list, written to a temporary file and renamed:
a restart resumes where it stopped, and no event is applied twice. `--once` stops at the first
empty page (caught up); otherwise it polls. Needs Python 3.10+ and httpx, nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

TYPES = "city.registered,membership.started,membership.ended,membership.retracted"
PERIOD_STATUS = {"membership.started": "active", "membership.ended": "ended",
                 "membership.retracted": "retracted"}


def load(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"after": 0, "cities": {}, "members": {}}


def save(path: Path, state: dict[str, Any]) -> None:
    temporary = path.with_name(f"{path.name}.tmp")
    temporary.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


def apply(state: dict[str, Any], event: dict[str, Any]) -> None:
    data, city = event["data"], event["city_id"]
    if event["type"] == "city.registered":
        state["cities"][city] = {"name": data["name"], "country": data["country"], "periods": {}}
    else:  # the status of one membership period of the city
        state["cities"][city]["periods"][str(data["period"])] = PERIOD_STATUS[event["type"]]


def members(state: dict[str, Any]) -> dict[str, dict[str, str]]:
    """city id -> name, country and status of its latest membership that was not retracted."""
    found = {}
    for city_id, city in state["cities"].items():
        kept = [status for _, status in sorted(city["periods"].items(), key=lambda p: int(p[0]))
                if status != "retracted"]
        if kept:
            found[city_id] = {"name": city["name"], "country": city["country"],
                              "status": kept[-1]}
    return found


def follow(client: httpx.Client, path: Path, once: bool, interval: float) -> dict[str, Any]:
    state, processed = load(path), 0
    while True:
        try:
            response = client.get("/events", params={
                "after": state["after"], "limit": 500, "types": TYPES})
        except httpx.TransportError:
            if once:
                raise
            time.sleep(interval)  # the server is away: try again later
            continue
        if response.status_code == 429:  # over the token's rate: wait as told
            time.sleep(float(response.headers.get("Retry-After", interval)))
            continue
        response.raise_for_status()
        page = response.json()
        for event in page["events"]:
            apply(state, event)
            processed += 1
        if page["next_after"] != state["after"]:
            state["after"] = page["next_after"]
            state["members"] = members(state)
            save(path, state)
        if not page["events"]:
            if once:
                return {"processed": processed, "after": state["after"],
                        "members": len(state["members"])}
            time.sleep(interval)  # caught up: poll again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("GNLC_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--state", type=Path, default=Path("gnlc-members.json"))
    parser.add_argument("--once", action="store_true", help="stop when caught up")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    args = parser.parse_args()
    token = os.environ.get("GNLC_TOKEN") or sys.exit("set GNLC_TOKEN to a subscriber token")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
        print(json.dumps(follow(client, args.state, args.once, args.interval)))


if __name__ == "__main__":
    main()
