"""The soak of `tests/soak.py`, shortened to one 5-second issuer cycle: mixed traffic from three
client threads against uvicorn serving the example app, while the issuer rotates its key and
fails with HTTP 500 and recovers. `make soak` runs the long version."""

from __future__ import annotations

from .soak import SHORT, run_soak


def test_short_soak_has_no_violations() -> None:
    lines: list[str] = []
    report = run_soak(5.0, clients=3, schedule=SHORT, log=lines.append)
    assert report.violations == [], lines
    assert report.wrong == [] and report.server_errors == 0
    assert report.faults_played == ["500"]
    assert report.requests > 100
    # every kind of request was sent, and the rotated-in key was used once settled
    assert {"valid", "deploy", "forbidden", "bad_signature", "expired", "wrong_audience",
            "garbage", "unknown_kid", "malformed", "token_in_query", "missing", "public",
            "rotated_in"} <= set(report.classes)
    assert {200, 202, 400, 401, 403} <= set(report.statuses)
    assert 0 < report.keyset_fetches <= report.fetch_budget
