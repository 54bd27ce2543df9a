"""The event stream: every kind of event, from a real `TokenVerifier` against a real key-set
server on loopback (a fake monotonic clock where the cache's age matters), and through the ASGI
middleware for refusals made by the adapter."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from m2m_guard import GuardError, GuardSettings, TokenVerifier
from m2m_guard import events as ev
from m2m_guard.events import Event
from m2m_guard.local_issuer import KeySetServer, SigningKey

from .conftest import deployment_app

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A subscriber that keeps every event (thread-safe: refreshes run on other threads)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def kinds(self) -> list[str]:
        with self._lock:
            return [e.kind for e in self.events]

    def of(self, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def verify(verifier: TokenVerifier, token: str, front: str) -> Any:
    if front == "sync":
        return verifier.verify_sync(token)
    return anyio.run(verifier.verify, token)


@pytest.fixture(scope="module")
def rotation_keys() -> dict[str, SigningKey]:
    return {name: SigningKey.generate("ES256", kid=f"snk_{name}") for name in ("old", "new")}


# -- decisions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("front", ["sync", "async"])
def test_allowed_then_cached_then_refused(issuer: KeySetServer, settings: GuardSettings,
                                          front: str) -> None:
    recorder = Recorder()
    verifier = TokenVerifier(settings, on_event=recorder)
    token = issuer.mint()
    verify(verifier, token, front)
    verify(verifier, token, front)
    allowed = recorder.of(ev.ALLOWED)
    assert [e.cached for e in allowed] == [False, True]
    for event in allowed:
        assert event.issuer == issuer.url
        assert event.algorithm == "RS256" and event.kid == "snk_rs256"
        assert event.fingerprint == fingerprint(token)
        assert event.client_id is None  # not unless events_client_id is on
        assert event.reason is None and event.status is None
        assert event.duration is not None and event.duration >= 0
        assert event.time > 1.7e9

    expired = issuer.mint(exp=int(time.time()) - 3600)
    with pytest.raises(GuardError):
        verify(verifier, expired, front)
    [refused] = recorder.of(ev.REFUSED)
    assert (refused.reason, refused.status, refused.issuer, refused.kid, refused.algorithm) == (
        "expired", 401, issuer.url, "snk_rs256", "RS256")
    assert refused.fingerprint == fingerprint(expired)
    assert refused.cached is False and refused.client_id is None
    assert refused.duration is not None and refused.duration >= 0


def test_refusal_before_issuer_selection_has_no_issuer(issuer: KeySetServer,
                                                       settings: GuardSettings) -> None:
    recorder = Recorder()
    verifier = TokenVerifier(settings, on_event=recorder)
    for token, reason in (("not.a.jwt!", "malformed"),
                          (issuer.mint(iss="https://elsewhere.example"), "untrusted_issuer")):
        with pytest.raises(GuardError):
            verifier.verify_sync(token)
        event = recorder.of(ev.REFUSED)[-1]
        assert (event.reason, event.issuer, event.kid, event.cached) == (reason, None, None, None)
        assert event.fingerprint == fingerprint(token)


def test_client_id_only_when_enabled(issuer: KeySetServer,
                                     make_settings: Callable[..., GuardSettings]) -> None:
    recorder = Recorder()
    verifier = TokenVerifier(make_settings(events_client_id=True), on_event=recorder)
    verifier.verify_sync(issuer.mint(client_id="m2morg_42"))
    assert recorder.of(ev.ALLOWED)[0].client_id == "m2morg_42"
    # A refused token's client id is only a claim: never put in events.
    with pytest.raises(GuardError):
        verifier.verify_sync(issuer.mint(client_id="m2morg_43", aud=["someone-else"]))
    assert recorder.of(ev.REFUSED)[0].client_id is None


def test_no_cache_means_cached_is_none(issuer: KeySetServer,
                                       make_settings: Callable[..., GuardSettings]) -> None:
    recorder = Recorder()
    verifier = TokenVerifier(make_settings(token_cache_size=0), on_event=recorder)
    token = issuer.mint()
    verifier.verify_sync(token)
    verifier.verify_sync(token)
    assert [e.cached for e in recorder.of(ev.ALLOWED)] == [None, None]


def test_issuer_unavailable(make_settings: Callable[..., GuardSettings],
                            issuer: KeySetServer) -> None:
    recorder = Recorder()
    verifier = TokenVerifier(make_settings(), on_event=recorder)
    token = issuer.mint()
    issuer.stop()
    with pytest.raises(GuardError) as caught:
        verifier.verify_sync(token)
    assert caught.value.status_code == 503
    [event] = recorder.of(ev.ISSUER_UNAVAILABLE)
    assert (event.reason, event.status, event.issuer) == ("issuer_unavailable", 503, issuer.url)
    [failed] = recorder.of(ev.KEYS_FETCH_FAILED)
    assert failed.issuer == issuer.url and failed.error and failed.keys is None


def test_internal_error_is_one_refused_event(issuer: KeySetServer, settings: GuardSettings,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import m2m_guard.verifier as verifier_module

    def broken(*args: object) -> frozenset[str]:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(verifier_module, "scopes_from_claims", broken)
    recorder = Recorder()
    verifier = TokenVerifier(settings, on_event=recorder)
    with pytest.raises(GuardError):
        verifier.verify_sync(issuer.mint())
    [event] = recorder.of(ev.REFUSED)
    assert event.reason == "internal_error" and event.issuer == issuer.url


# -- key-set activity ------------------------------------------------------------------------

def test_first_load_is_fetched_and_changed(issuer: KeySetServer, settings: GuardSettings) -> None:
    recorder = Recorder()
    verifier = TokenVerifier(settings, on_event=recorder)
    verifier.warm_up_sync()
    assert recorder.kinds() == [ev.KEYS_FETCHED, ev.KEYS_CHANGED]
    fetched, changed = recorder.events
    assert fetched.keys == 4 and fetched.issuer == issuer.url
    assert changed.added == ("snk_eddsa", "snk_es256", "snk_ps256", "snk_rs256")
    assert changed.removed == () and changed.keys == 4


def test_refresh_ahead_and_not_modified(issuer: KeySetServer,
                                        make_settings: Callable[..., GuardSettings]) -> None:
    clock = FakeClock()
    recorder = Recorder()
    verifier = TokenVerifier(make_settings(jwks_cache_ttl=100), clock=clock, on_event=recorder)
    verifier.warm_up_sync()
    recorder.clear()
    clock.now += 95  # past refresh_at (ttl - ttl/10), before expiry
    verifier.verify_sync(issuer.mint())
    wait_for(lambda: ev.KEYS_NOT_MODIFIED in recorder.kinds())
    verifier.close()
    kinds = recorder.kinds()
    assert kinds.index(ev.REFRESH_AHEAD) < kinds.index(ev.KEYS_NOT_MODIFIED)
    assert ev.KEYS_CHANGED not in kinds  # 304: the same key set
    assert recorder.of(ev.KEYS_NOT_MODIFIED)[0].keys == 4
    assert issuer.not_modified == 1


def test_refresh_ahead_from_the_async_front(issuer: KeySetServer,
                                            make_settings: Callable[..., GuardSettings]) -> None:
    clock = FakeClock()
    recorder = Recorder()
    verifier = TokenVerifier(make_settings(jwks_cache_ttl=100), clock=clock, on_event=recorder)

    async def main() -> None:
        await verifier.warm_up()
        clock.now += 95
        await verifier.verify(issuer.mint())
        deadline = time.monotonic() + 5
        while ev.KEYS_NOT_MODIFIED not in recorder.kinds():
            assert time.monotonic() < deadline
            await anyio.sleep(0.01)
        await verifier.aclose()

    anyio.run(main)
    assert [e.issuer for e in recorder.of(ev.REFRESH_AHEAD)] == [issuer.url]


def test_fetch_failure_while_stale(issuer: KeySetServer,
                                   make_settings: Callable[..., GuardSettings]) -> None:
    clock = FakeClock()
    recorder = Recorder()
    verifier = TokenVerifier(make_settings(jwks_cache_ttl=100), clock=clock, on_event=recorder)
    verifier.warm_up_sync()
    issuer.set_fault("500")
    clock.now += 150  # expired: the request waits for a refresh, which fails
    verifier.verify_sync(issuer.mint())  # the last good set still serves (stale-if-error)
    failed = recorder.of(ev.KEYS_FETCH_FAILED)
    assert len(failed) == 1 and "HTTP 500" in str(failed[0].error)
    assert failed[0].keys == 4
    assert recorder.of(ev.ALLOWED)


def test_rotation_unknown_kid_keys_changed_and_cooldown(
        rotation_keys: dict[str, SigningKey],
        make_settings: Callable[..., GuardSettings]) -> None:
    old, new = rotation_keys["old"], rotation_keys["new"]
    with KeySetServer([old]) as server:
        recorder = Recorder()
        verifier = TokenVerifier(make_settings(issuer=server.url), on_event=recorder)
        verifier.verify_sync(server.mint(old))
        recorder.clear()
        server.publish(new)
        verifier.verify_sync(server.mint(new))  # unknown kid -> refetch -> found
        assert recorder.kinds() == [ev.UNKNOWN_KID, ev.KEYS_FETCHED, ev.KEYS_CHANGED,
                                    ev.ALLOWED]
        changed = recorder.of(ev.KEYS_CHANGED)[0]
        assert (changed.added, changed.removed) == (("snk_new",), ("snk_old",))
        assert recorder.of(ev.UNKNOWN_KID)[0].kid == "snk_new"
        recorder.clear()
        # Another unknown kid inside the cooldown: no refetch, refused at once.
        with pytest.raises(GuardError):
            verifier.verify_sync(server.mint(old, headers={"kid": "snk_\nforged"}))
        assert recorder.kinds() == [ev.UNKNOWN_KID, ev.COOLDOWN_HIT, ev.REFUSED]
        assert recorder.of(ev.COOLDOWN_HIT)[0].kid == "snk_?forged"
        assert recorder.of(ev.REFUSED)[0].reason == "unknown_kid"


# -- subscribing -------------------------------------------------------------------------------

def test_subscribe_and_unsubscribe(issuer: KeySetServer, settings: GuardSettings) -> None:
    verifier = TokenVerifier(settings)
    assert not verifier.subscribed
    first, second = Recorder(), Recorder()
    stop_first = verifier.subscribe(first)
    stop_second = verifier.subscribe(second)
    token = issuer.mint()
    verifier.verify_sync(token)
    assert ev.ALLOWED in first.kinds() and ev.ALLOWED in second.kinds()
    stop_first()
    verifier.verify_sync(token)
    assert len(first.of(ev.ALLOWED)) == 1 and len(second.of(ev.ALLOWED)) == 2
    stop_second()
    assert not verifier.subscribed  # nobody listens: the hot path skips events entirely
    verifier.verify_sync(token)
    assert len(second.of(ev.ALLOWED)) == 2
    with pytest.raises(TypeError):
        verifier.subscribe("not callable")  # type: ignore[arg-type]


def test_failing_subscriber_never_breaks_verification(
        issuer: KeySetServer, settings: GuardSettings,
        caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def broken(event: Event) -> None:
        calls.append(event.kind)
        raise RuntimeError("subscriber bug")

    recorder = Recorder()
    verifier = TokenVerifier(settings, on_event=broken)
    verifier.subscribe(recorder)  # subscribers after a failing one still get every event
    token = issuer.mint()
    with caplog.at_level(logging.DEBUG, logger="m2m_guard"):
        for _ in range(3):
            assert verifier.verify_sync(token).client_id == "m2morg_68315758685323697"
        with pytest.raises(GuardError):
            verifier.verify_sync(issuer.mint(exp=int(time.time()) - 3600))
    assert calls.count(ev.ALLOWED) == 3 and ev.REFUSED in calls
    assert len(recorder.of(ev.ALLOWED)) == 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "subscriber" in errors[0].getMessage()
    assert errors[0].exc_info is not None


# -- refusals made by the ASGI adapter -------------------------------------------------------

def test_adapter_refusals_are_events_once_each(issuer: KeySetServer,
                                               settings: GuardSettings) -> None:
    recorder = Recorder()
    verifier = TokenVerifier(settings, on_event=recorder)
    narrow = issuer.mint(scopes=["read:deployments"])
    with TestClient(deployment_app(settings, verifier=verifier)) as client:
        recorder.clear()
        cases = [
            ({}, "missing_token", 401),
            ({"Authorization": "Bearer"}, "malformed_authorization", 400),
            ({"Authorization": f"Bearer {issuer.mint(exp=int(time.time()) - 3600)}"},
             "expired", 401),
            ({"Authorization": f"Bearer {narrow}"}, "insufficient_scope", 403),
        ]
        for headers, reason, status in cases:
            before = len(recorder.of(ev.REFUSED))
            response = client.post("/deployments", headers=headers)
            assert response.status_code == status
            refused = recorder.of(ev.REFUSED)
            assert len(refused) == before + 1, reason  # reported once, not twice
            assert (refused[-1].reason, refused[-1].status) == (reason, status)
    scope_refusal = recorder.of(ev.REFUSED)[-1]
    assert scope_refusal.issuer == issuer.url and scope_refusal.kid == "snk_rs256"
    assert scope_refusal.fingerprint == fingerprint(narrow)
    assert scope_refusal.duration is None  # not a verification: the token was verified
    assert ev.ALLOWED in recorder.kinds()  # ... just before, as its own decision


# -- the reason codes are a closed, documented list ------------------------------------------

def _raised_reasons() -> set[str]:
    package = ROOT / "m2m_guard"
    source = "\n".join(p.read_text() for p in (*package.glob("*.py"), *package.glob("_core/*.py")))
    found = set(re.findall(r'reason="([a-z0-9_]+)"', source))
    for template in re.findall(r'reason=f"([a-z_]+)\{name\}"', source):
        found.update(template + claim for claim in ("exp", "nbf", "iat", "sub", "jti",
                                                    "client_id", "azp", "oid", "aud"))
    found.add("missing_token")  # MissingToken's default reason (its body error)
    return found


def test_every_raised_reason_is_listed() -> None:
    raised = _raised_reasons()
    assert "expired" in raised and "bad_signature" in raised and "invalid_exp" in raised
    # Templates expand to more names than the code can raise (missing_sub only with
    # required_claims, which metrics fold into missing_claim); each listed one must be raised.
    unlisted = {r for r in raised if r not in ev.REASONS and not r.startswith("missing_")}
    assert not unlisted
    for reason in ev.REASONS:
        assert reason in raised or reason in {"insufficient_scope", "issuer_unavailable"}, reason


def test_every_reason_is_documented() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    for reason in sorted(ev.REASONS):
        assert f"| `{reason}` |" in operations, reason


def test_metric_reason_folds_unknown_values() -> None:
    assert ev.metric_reason("expired") == "expired"
    assert ev.metric_reason("missing_tenant") == "missing_claim"
    assert ev.metric_reason("something_new") == "other"
    assert ev.metric_reason(None) is None


def test_operations_snippets_compile() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", operations, flags=re.DOTALL)
    assert len(snippets) >= 3
    for snippet in snippets:
        compile(snippet, "docs/operations.md", "exec")


def test_a_bug_in_building_events_never_breaks_verification(
        issuer: KeySetServer, settings: GuardSettings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("event bug")

    monkeypatch.setattr(ev, "safe_text", broken)
    monkeypatch.setattr(ev, "_hook_failed", False)
    verifier = TokenVerifier(settings, on_event=Recorder())
    with caplog.at_level(logging.INFO, logger="m2m_guard"):
        assert verifier.verify_sync(issuer.mint()).issuer == issuer.url
        with pytest.raises(GuardError) as caught:
            verifier.verify_sync(issuer.mint(exp=int(time.time()) - 3600))
        assert caught.value.reason == "expired"  # not internal_error
        with TestClient(deployment_app(settings, verifier=verifier)) as client:
            assert client.get("/deployments").status_code == 401
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "could not report an event" in errors[0].getMessage()


def test_events_client_id_setting(issuer: KeySetServer) -> None:
    base = {"M2M_GUARD_ISSUER": issuer.url, "M2M_GUARD_AUDIENCE": "deployment-api"}
    assert GuardSettings.from_env(base).events_client_id is False
    assert GuardSettings.from_env({**base, "M2M_GUARD_EVENTS_CLIENT_ID": "true"}
                                  ).events_client_id is True
    from m2m_guard import ConfigurationError
    with pytest.raises(ConfigurationError, match="M2M_GUARD_EVENTS_CLIENT_ID"):
        GuardSettings.from_env({**base, "M2M_GUARD_EVENTS_CLIENT_ID": "maybe"})
    with pytest.raises(ConfigurationError, match="events_client_id must be True or False"):
        GuardSettings(issuer=issuer.url, audience="a", events_client_id="yes")  # type: ignore[arg-type]
