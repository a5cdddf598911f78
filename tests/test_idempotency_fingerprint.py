"""What makes two requests with one Idempotency-Key the same request: the content of the body,
not how the client spelled it."""

from __future__ import annotations

from domain.forms import ProgressReport
from infrastructure.http.idempotency import fingerprint

PATH = "/cities/6f1c2a52-3f9a-4bb0-9a55-0d3f3bb5e6a1/reports"


def _report(raw: str) -> ProgressReport:
    return ProgressReport.model_validate_json(raw)


def test_bodies_with_the_same_content_in_another_key_order_and_spacing_have_one_fingerprint(
        ) -> None:
    first = _report('{"covering_from":"2020-01-01","covering_to":"2021-12-31","summary":"s",'
                    '"statistics":{"learners":10,"courses":2}}')
    again = _report('{ "statistics": { "courses": 2.0, "learners": 10 },\n'
                    '  "summary": "s", "covering_to": "2021-12-31",\n'
                    '  "covering_from": "2020-01-01" }')
    assert fingerprint("POST", PATH, first) == fingerprint("POST", PATH, again)


def test_bodies_with_different_content_have_different_fingerprints() -> None:
    first = _report('{"covering_from":"2020-01-01","covering_to":"2021-12-31","summary":"s",'
                    '"statistics":{"learners":10,"courses":2}}')
    other = _report('{"covering_from":"2020-01-01","covering_to":"2021-12-31","summary":"s",'
                    '"statistics":{"learners":10,"courses":3}}')
    assert fingerprint("POST", PATH, first) != fingerprint("POST", PATH, other)
    assert fingerprint("POST", PATH, first) != fingerprint("POST", PATH + "x", first)
