"""Every event carries its audit metadata: actor, source, correlation id, reason, clock flag."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from application.registry import Registry
from domain.acts import Role
from domain.applications import CityApplication
from tests.conftest import AUDITOR, CITY, COMMISSION, SECRETARIAT, SettableClock, application_form


def test_an_event_stored_before_correlation_ids_existed_reads_with_none(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    submission = registry.submit_application(CITY, application_form())
    application = registry.application(SECRETARIAT, submission.application_id)
    application.endorse(registry._act(COMMISSION))
    (event,) = application.collect_events()
    stored = registry.mapper.to_stored_event(event)
    state = json.loads(stored.state)
    del state["correlation_id"], state["class_version"]  # the form of version 1
    registry.recorder.insert_events([replace(stored, state=json.dumps(state).encode())])
    (endorsed,) = [r.event for r in registry.read_log(AUDITOR)
                   if isinstance(r.event, CityApplication.Endorsed)]
    assert endorsed.correlation_id is None
    assert registry.application(SECRETARIAT, submission.application_id).status == "endorsed"


def test_the_events_of_one_use_case_share_the_callers_correlation_id(
    registry: Registry, clock: SettableClock
) -> None:
    registry.open_intake(SECRETARIAT, 2019)
    clock.set("2019-03-15 12:00")
    registry.submit_application(replace(CITY, correlation_id="req-42"), application_form())
    submitted = [r.event for r in registry.read_log(AUDITOR)][-3:]
    assert {e.correlation_id for e in submitted} == {"req-42"}


def test_an_http_request_id_is_recorded_on_the_events_it_causes(api: Any,
                                                               clock: SettableClock) -> None:
    token = api.token("secretariat-1", Role.SECRETARIAT)
    with api.client(token) as client:
        assert client.post("/intakes", json={"year": 2019},
                           headers={"X-Request-ID": "intake-2019"}).status_code == 201
        clock.set("2019-03-15 12:00")
        submitted = client.post("/applications", json=application_form()).json()
        city = client.get(f"/cities/{submitted['city_id']}/history").json()
    opened = [r.event for r in api.registry.read_log(AUDITOR)
              if type(r.event).__name__ == "IntakeOpened"]
    assert opened[0].correlation_id == "intake-2019" and opened[0].source == "http"
    ids = {e["correlation_id"] for e in city}
    assert len(ids) == 1 and None not in ids  # one generated id for the whole request
    assert {e["source"] for e in city} == {"http"}
