"""The public test vectors kept in ``tests/vectors/`` (their source, version and licence are in
``tests/vectors/README.md``; ``SHA256SUMS`` pins their bytes).

What runs, and where:

- Wycheproof ``json_web_signature_test.json``: every case through `m2m_guard.jws.verify_compact`
  (valid ones return their payload; invalid ones raise `InvalidToken` and nothing else). HS*
  groups are counted apart: we verify asymmetric algorithms only, so every HS* vector is refused,
  the ones Wycheproof labels valid included. The data quirks (the vectors README) run in the
  labelled test as expected refusals, with the reason a strict verifier gives, and are checked
  further in a test of their own. Then every vector the
  JWS layer refuses goes through the full middleware (a real Starlette app, a real key-set server
  on loopback that publishes the vectors' keys): 401 ``invalid_token`` (with a "malformed"
  description when the token is not even an RFC 6750 b64token); never 500.
- Wycheproof ``json_web_key_test.json``: each key set through `parse_jwks` / `load_jwk`, with
  what each case asserts written next to it (`JWK_CASES`).
- Wycheproof ``primitives/``: all raw signature vectors for the JWS algorithms through
  `load_jwk(...).verify(alg, msg, sig)`, keys converted from DER to JWK with cryptography.
- RFC 7520 cookbook and RFC 7515 Appendix A: signed examples verify; HS256, ``none``, detached
  content, ``b64: false`` and JSON serialization are refused.

`test_vector_inventory` pins the number of vectors per category, so a changed vector file is
noticed; its summary (also attached as a `record_property`) is the evidence table's source.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from m2m_guard import GuardSettings, InvalidToken, TokenVerifier, current_token
from m2m_guard._core.jws import check_signature, parse_compact, verify_compact
from m2m_guard._core.keys import KeyRejected, KeySet, load_jwk, parse_jwks
from m2m_guard.asgi import M2MGuardMiddleware
from m2m_guard.local_issuer import KeySetServer, SigningKey

VECTORS = Path(__file__).resolve().parent / "vectors"
WYCHEPROOF = VECTORS / "wycheproof"
COOKBOOK = VECTORS / "rfc7520_cookbook"
RFC7515 = VECTORS / "rfc7515_appendixA"

pytestmark = [pytest.mark.vectors]

AUDIENCE = "deployment-api"
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")
# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_RFC6750_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 6750 §3: error_description = *( %x20-21 / %x23-5B / %x5D-7E )
_RFC6750_DESCRIPTION = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]+')


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public(jwk: dict[str, Any]) -> dict[str, Any]:
    """The verification key of a private JWK: the same JWK without its private members."""
    return {name: value for name, value in jwk.items() if name not in _PRIVATE_MEMBERS}


# ---------------------------------------------------------------------------------------------
# Wycheproof JWS: json_web_signature_test.json
# ---------------------------------------------------------------------------------------------

# Known data quirks (vectors README, checked against upstream history). The labelled test below
# runs them as expected refusals (`QUIRK_REASONS`), and `test_wycheproof_quirks_are_refused`
# pins the rest of what we do with them.
QUIRKS: dict[int, str] = {
    346: "labelled valid, but the key's alg is PS256 and the token's PS384: a verifier that "
         "pins the algorithm to the key rejects it",
    350: "labelled valid, but the key's alg is PS256 and the token's PS384: a verifier that "
         "pins the algorithm to the key rejects it",
    347: "labelled valid, but the key's alg is 'ES521' (not a JWS algorithm): a verifier that "
         "pins the algorithm to the key rejects it",
    351: "labelled valid, but the key's alg is 'ES521' (not a JWS algorithm): a verifier that "
         "pins the algorithm to the key rejects it",
    367: "labelled invalid, but byte-identical to the valid tc357 (padding lost upstream)",
    370: "labelled invalid, but byte-identical to the valid tc357 (padding lost upstream)",
    372: "labelled valid, but has '?' in the header segment: a strict verifier rejects it",
    373: "labelled valid, but has '?' in the payload segment: a strict verifier rejects it",
}
# tc17 (JSON serialization, labelled invalid) is no quirk for us: a compact-only verifier
# rejects it as labelled. It sits in an HS256 group, so it runs in the HS* test.


class JwsCase:
    """One Wycheproof JWS test with the verification key of its group."""

    def __init__(self, group: dict[str, Any], test: dict[str, Any]) -> None:
        self.tc_id: int = test["tcId"]
        self.comment: str = test["comment"]
        self.result: str = test["result"]
        self.flags: list[str] = test["flags"]
        raw = test["jws"]
        # tc17 holds a JSON-serialized JWS as an object: send it as the JSON text an attacker
        # would put on the wire.
        self.token: str = raw if isinstance(raw, str) else json.dumps(raw)
        # The verification key is `public` when present, else `private` (vectors README).
        self.key: dict[str, Any] = group.get("public", group["private"])
        self.hs = self.key.get("kty") == "oct"

    @property
    def id(self) -> str:
        return f"tc{self.tc_id}"


@cache
def jws_cases() -> tuple[JwsCase, ...]:
    data = _load(WYCHEPROOF / "json_web_signature_test.json")
    return tuple(JwsCase(group, test) for group in data["testGroups"] for test in group["tests"])


def _labelled_params() -> Iterator[Any]:
    for case in jws_cases():
        if case.hs:
            continue
        label = "quirk-refused" if case.tc_id in QUIRKS else case.result
        yield pytest.param(case, id=f"{case.id}-{label}")


@pytest.mark.parametrize("case", list(_labelled_params()))
def test_wycheproof_jws(case: JwsCase) -> None:
    """Asymmetric vectors: valid ones return their payload, invalid ones raise InvalidToken.
    A data quirk (labelled valid, but its key pins another algorithm) is an expected refusal,
    with the reason `QUIRK_REASONS` names."""
    if case.tc_id in QUIRKS:
        assert case.result == "valid", "a quirk is a vector labelled valid that we refuse"
        with pytest.raises(InvalidToken) as refused:
            verify_compact(case.token, case.key)
        assert refused.value.reason == QUIRK_REASONS[case.tc_id], QUIRKS[case.tc_id]
    elif case.result == "valid":
        payload = verify_compact(case.token, case.key)
        assert payload == _unb64url(case.token.split(".")[1]), case.comment
    else:
        # Any exception other than InvalidToken propagates and fails the test.
        with pytest.raises(InvalidToken) as refused:
            verify_compact(case.token, case.key)
        assert refused.value.reason not in (None, "", "internal_error"), case.comment


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.id}-{c.result}")
                                  for c in jws_cases() if c.hs])
def test_wycheproof_hs_vectors_are_refused(case: JwsCase) -> None:
    """Every HS* vector is refused, the valid-labelled ones included: we verify asymmetric
    algorithms only. Refused twice over: the symmetric key is never loaded, and the token's
    own header (HS*, `none`, or broken framing) is refused before any key is looked at."""
    with pytest.raises(InvalidToken) as with_key:
        verify_compact(case.token, case.key)
    assert with_key.value.reason == "key_refused"
    with pytest.raises(InvalidToken) as header_only:
        parse_compact(case.token)
    assert header_only.value.reason in ("algorithm_refused", "malformed", "malformed_header")


QUIRK_REASONS = {
    346: "algorithm_mismatch", 350: "algorithm_mismatch",  # PS384 token under a PS256 key
    347: "key_refused", 351: "key_refused",                # key alg "ES521" is no JWS alg
    367: "key_refused", 370: "key_refused",                # HS256 key
    372: "key_refused", 373: "key_refused",                # HS256 key (and '?' in a segment)
}


@pytest.mark.parametrize("tc_id", sorted(QUIRKS), ids=lambda tc: f"tc{tc}")
def test_wycheproof_quirks_are_refused(tc_id: int) -> None:
    """What the strict verifier does with the README's quirks: it refuses all of them."""
    cases = {case.tc_id: case for case in jws_cases()}
    case = cases[tc_id]
    with pytest.raises(InvalidToken) as refused:
        verify_compact(case.token, case.key)
    assert refused.value.reason == QUIRK_REASONS[tc_id]
    if tc_id in (367, 370):
        assert case.token == cases[357].token  # the quirk itself: identical to a valid vector
    if tc_id in (372, 373):
        with pytest.raises(InvalidToken) as framing:
            parse_compact(case.token)  # '?' is refused by framing alone, whatever the key
        assert framing.value.reason == "malformed"
    if tc_id in (346, 350):
        # Without the key's alg the same token verifies: the refusal is the pinning, nothing else.
        unpinned = {k: v for k, v in case.key.items() if k != "alg"}
        assert verify_compact(case.token, unpinned) == _unb64url(case.token.split(".")[1])


# ---------------------------------------------------------------------------------------------
# Wycheproof JWS through the full middleware
# ---------------------------------------------------------------------------------------------

def _refused_by_jws_layer() -> list[JwsCase]:
    """Every vector the JWS layer refuses: all invalid ones, all HS* ones and the quirks."""
    return [case for case in jws_cases()
            if case.result == "invalid" or case.hs or case.tc_id in QUIRKS]


class GuardedApp:
    """A real Starlette app behind `M2MGuardMiddleware`, its issuer and its verifier."""

    def __init__(self, server: KeySetServer, control: SigningKey, verifier: TokenVerifier,
                 client: TestClient, published: list[dict[str, Any]]) -> None:
        self.server = server
        self.control = control
        self.verifier = verifier
        self.client = client
        self.published = published


def _vector_keys() -> list[dict[str, Any]]:
    """The distinct verification keys of the Wycheproof JWS groups, as published JWKs."""
    seen: list[dict[str, Any]] = []
    for case in jws_cases():
        if case.key not in seen:
            seen.append(case.key)
    return seen


@pytest.fixture(scope="module")
def guarded() -> Iterator[GuardedApp]:
    control = SigningKey.generate("ES256", kid="control-es256")
    published = _vector_keys()
    with KeySetServer([control]) as server:
        server.extra_jwks = list(published)  # the issuer serves every vector's key
        settings = GuardSettings(issuer=server.url, audience=AUDIENCE, http_timeout=2.0)
        verifier = TokenVerifier(settings)

        async def protected(request: Request) -> JSONResponse:
            token = current_token()
            assert token is not None
            return JSONResponse({"client_id": token.client_id})

        app = Starlette(routes=[Route("/protected", protected)],
                        middleware=[Middleware(M2MGuardMiddleware, verifier=verifier)])
        with TestClient(app, raise_server_exceptions=True) as client:
            yield GuardedApp(server, control, verifier, client, published)
        verifier.close()


def test_middleware_serves_the_vector_keys(guarded: GuardedApp) -> None:
    """The control path: the app is live, its issuer's key set (control key plus every vector
    key) was fetched over loopback, loaded with exactly the keys `load_jwk` accepts, and a real
    token passes. So the refusals below are the middleware's verdicts, not a broken setup."""
    response = guarded.client.get(
        "/protected", headers={"Authorization": f"Bearer {guarded.server.mint(guarded.control)}"})
    assert response.status_code == 200
    assert response.json() == {"client_id": "m2morg_68315758685323697"}
    assert guarded.server.requests["/keys"] >= 1

    accepted: list[str] = []
    refused: list[tuple[str, str]] = []
    for jwk in guarded.published:
        try:
            load_jwk(jwk)
            accepted.append(jwk["kid"])
        except KeyRejected as exc:
            refused.append((jwk["kid"], str(exc)))
    report = guarded.verifier.health()["issuers"][guarded.server.url]
    assert report["usable"] is True
    assert sorted(report["key_ids"]) == sorted(["control-es256", *accepted])
    assert sorted((e["kid"], e["reason"]) for e in report["dropped_keys"]) == sorted(refused)
    # 21 distinct group keys: 12 usable; 9 dropped (3 oct, 2 use:enc, 2 key_ops without
    # verify, 2 with alg "ES521").
    assert (len(accepted), len(refused)) == (12, 9)
    assert Counter(reason.split(" ")[0] for _, reason in refused) == {
        "symmetric": 3, "use": 2, "key_ops": 2, "alg": 2}


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c.id}-{c.result}")
                                  for c in _refused_by_jws_layer()])
def test_wycheproof_refused_through_middleware(
    guarded: GuardedApp, case: JwsCase, caplog: pytest.LogCaptureFixture
) -> None:
    """Each refused vector, sent as a bearer token, ends in 401 invalid_token (a malformed token
    when it is not an RFC 6750 b64token at all); never 500, never an internal error turned
    into a 401."""
    caplog.set_level(logging.INFO, logger="m2m_guard")
    response = guarded.client.get("/protected",
                                  headers={"Authorization": f"Bearer {case.token}"})
    body = response.json()
    assert response.headers["cache-control"] == "no-store"
    assert response.status_code == 401, case.comment
    description = body["error_description"]
    assert body == {"error": "invalid_token", "error_description": description}
    assert _RFC6750_DESCRIPTION.fullmatch(description)
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="api", error="invalid_token", error_description="{description}"')
    # Not even an RFC 6750 b64token: refused as malformed before any JWS parsing.
    malformed = description.startswith("The access token is malformed: ")
    assert malformed == (not _RFC6750_B64TOKEN.fullmatch(case.token)), description
    # Each refusal is logged with its reason. The payloads are not claim sets, so a token that
    # passes framing is refused at its claims; one that does not, at framing.
    reasons = re.findall(r"m2m_guard refused kind=refused reason=(\S+)", caplog.text)
    if malformed:
        expected = "malformed_authorization"
    else:
        try:
            parse_compact(case.token)
            expected = "malformed_claims"
        except InvalidToken as framing:
            expected = str(framing.reason)
    assert reasons == [expected]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], \
        "an unexpected exception inside verification"


# ---------------------------------------------------------------------------------------------
# Wycheproof JWK: json_web_key_test.json
# ---------------------------------------------------------------------------------------------

# tcId -> (kids that load, reasons the others are dropped for, does the token verify, what the
# case asserts). Wycheproof's own expectations are whole-set refusals for "MixedKeySet" and
# "DuplicateKid"; the key loader drops unusable keys from a set instead, so we assert the keys are
# dropped and that the token is refused.
JWK_CASES: dict[int, tuple[list[str], list[str], bool, str]] = {
    1: (["kid-ec-sign"], ["symmetric (oct) keys are never accepted"], False,
        "mixed set (oct + EC): the symmetric key is dropped, the EC key kept; the HS256 token "
        "finds no key"),
    2: ([], ["symmetric (oct) keys are never accepted"] * 2, False,
        "HS256 set, valid token: refused, symmetric keys are never loaded from a JWKS"),
    3: ([], ["symmetric (oct) keys are never accepted"] * 2, False,
        "HS256 set, modified signature: refused"),
    4: ([], ["symmetric (oct) keys are never accepted"] * 2, False,
        "duplicate kid (both oct): both dropped; the token finds no key"),
    5: (["kid-rsa-sign"], [], True, "RS256 set, valid token: verifies, payload returned"),
    6: ([], ["use is 'enc', not 'sig'"], False, "RSA key with use:enc (alg RSA1_5): dropped"),
    7: ([], ["the RSA modulus has the ROCA weakness (CVE-2017-15361)"], False,
        "RSA key with the ROCA (Infineon) weakness: dropped"),
    8: ([], ["RSA key of 1024 bits; at least 2048 are required"], False,
        "1024-bit RSA key: dropped"),
    9: ([], ["RSA public exponent is invalid"], False, "RSA key with e = 1: dropped"),
    10: ([], ["symmetric (oct) keys are never accepted"], False, "short HS256 key: dropped"),
    11: ([], ["symmetric (oct) keys are never accepted"], False, "short HS384 key: dropped"),
    12: ([], ["symmetric (oct) keys are never accepted"], False, "short HS512 key: dropped"),
    13: ([], ["symmetric (oct) keys are never accepted"], False,
         "long HS256 key, valid token: refused, no HS* at all"),
    14: ([], ["symmetric (oct) keys are never accepted"], False,
         "long HS384 key, valid token: refused, no HS* at all"),
    15: ([], ["symmetric (oct) keys are never accepted"], False,
         "long HS512 key, valid token: refused, no HS* at all"),
    16: ([], ["symmetric (oct) keys are never accepted"], False, "empty HS256 key: dropped"),
    17: ([], ["symmetric (oct) keys are never accepted"], False, "empty HS384 key: dropped"),
    18: ([], ["symmetric (oct) keys are never accepted"], False, "empty HS512 key: dropped"),
    19: ([], ["alg 'ES521' is not an accepted asymmetric algorithm"], False,
         "P-256 key with alg ES521 (wrong algorithm): dropped"),
    20: ([], ["alg 'ES224' is not an accepted asymmetric algorithm"], False,
         "P-256 key with alg ES224 (no JWS algorithm): dropped"),
    21: ([], ["use is 'enc', not 'sig'"], False, "EC key with use:enc: dropped"),
    22: ([], ["the point is not on curve P-256"], False, "EC point not on its curve: dropped"),
    23: ([], ["coordinates of a P-384 key must be 48 bytes"], False,
         "P-256 coordinates labelled P-384 (wrong curve): dropped"),
    24: ([], ["member 'n' is missing or not a string"], False,
         "EC members under kty RSA (wrong kty): dropped"),
    25: ([], ["symmetric (oct) keys are never accepted"], False,
         "AES-GCM key offered for signatures: dropped"),
    26: ([], ["symmetric (oct) keys are never accepted"], False,
         "AES key-wrap key offered for signatures: dropped"),
}


@cache
def jwk_cases() -> tuple[tuple[dict[str, Any], dict[str, Any]], ...]:
    data = _load(WYCHEPROOF / "json_web_key_test.json")
    return tuple((group, test) for group in data["testGroups"] for test in group["tests"])


def _verify_with_key_set(token: str, keys: KeySet) -> bytes:
    """Key selection as the verifier does it: the one key matching kid and alg, then verify."""
    jws = parse_compact(token)
    candidates = keys.candidates(jws.kid, jws.alg)
    if len(candidates) != 1:
        raise InvalidToken("no single key fits", reason="unknown_kid")
    check_signature(jws, candidates[0])
    return jws.payload


def _jwk_params() -> Iterator[Any]:
    for group, test in jwk_cases():
        yield pytest.param(group, test, id=f"tc{test['tcId']}-{group['comment']}")


@pytest.mark.parametrize(("group", "test"), list(_jwk_params()))
def test_wycheproof_jwk(group: dict[str, Any], test: dict[str, Any]) -> None:
    """See `JWK_CASES` for what each case asserts."""
    loaded_kids, dropped_reasons, verifies, what = JWK_CASES[test["tcId"]]
    key_set = group.get("public", group["private"])
    keys = parse_jwks(json.dumps(key_set).encode())

    assert sorted(str(k.kid) for k in keys.keys) == sorted(loaded_kids), what
    assert sorted(reason for _, reason in keys.dropped) == sorted(dropped_reasons), what
    # Each dropped key is refused on its own too, with the same reason.
    for jwk in key_set["keys"]:
        if jwk.get("kid") not in loaded_kids:
            with pytest.raises(KeyRejected):
                load_jwk(jwk)

    if verifies:
        assert test["result"] == "valid"
        assert _verify_with_key_set(test["jws"], keys) == _unb64url(test["jws"].split(".")[1])
    else:
        with pytest.raises(InvalidToken):
            _verify_with_key_set(test["jws"], keys)
        # The JWS layer with the group's first key says the same, whatever the key.
        with pytest.raises(InvalidToken):
            verify_compact(test["jws"], key_set["keys"][0])


# ---------------------------------------------------------------------------------------------
# Wycheproof primitives: raw signatures for exactly the JWS algorithms
# ---------------------------------------------------------------------------------------------

_EC_CURVES = {"secp256r1": ("P-256", 32, "ES256"), "secp384r1": ("P-384", 48, "ES384"),
              "secp521r1": ("P-521", 66, "ES512")}
SIGNATURE_FILES = sorted(p.name for p in (WYCHEPROOF / "primitives").glob("*.json")
                         if not p.name.startswith("hmac"))
HMAC_FILES = sorted(p.name for p in (WYCHEPROOF / "primitives").glob("hmac_*.json"))


def _uint(value: int, size: int | None = None) -> str:
    return _b64url(value.to_bytes(size or max(1, (value.bit_length() + 7) // 8), "big"))


def der_to_jwk(der_hex: str, alg: str | None) -> dict[str, Any]:
    """A public JWK from a DER SubjectPublicKeyInfo, converted with cryptography."""
    key = load_der_public_key(bytes.fromhex(der_hex))
    jwk: dict[str, Any]
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        jwk = {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
    elif isinstance(key, ec.EllipticCurvePublicKey):
        crv, size, alg = _EC_CURVES[key.curve.name]
        point = key.public_numbers()
        jwk = {"kty": "EC", "crv": crv, "x": _uint(point.x, size), "y": _uint(point.y, size)}
    elif isinstance(key, ed25519.Ed25519PublicKey):
        alg = "EdDSA"
        jwk = {"kty": "OKP", "crv": "Ed25519",
               "x": _b64url(key.public_bytes(Encoding.Raw, PublicFormat.Raw))}
    else:  # pragma: no cover - the files hold nothing else
        raise TypeError(f"unexpected key type {type(key).__name__}")
    assert alg is not None
    return {**jwk, "alg": alg, "use": "sig"}


def _file_alg(data: dict[str, Any], group: dict[str, Any]) -> str | None:
    kind = group["type"]
    if kind == "RsassaPkcs1Verify":
        return "RS" + group["sha"].removeprefix("SHA-")
    if kind == "RsassaPssVerify":
        # JWS PS* is MGF1 with the same hash and a salt as long as the hash (RFC 7518 §3.5).
        size = int(group["sha"].removeprefix("SHA-"))
        assert group["mgf"] == "MGF1" and group["mgfSha"] == group["sha"]
        assert group["sLen"] == size // 8
        return f"PS{size}"
    return None  # EC and EdDSA: the curve decides


@pytest.mark.parametrize("filename", SIGNATURE_FILES)
def test_wycheproof_primitives(filename: str) -> None:
    """Every vector of the file: valid ones verify, invalid ones do not, "acceptable" ones
    (RSA PKCS#1 with the NULL of the DigestInfo missing) are refused: the stricter choice."""
    data = _load(WYCHEPROOF / "primitives" / filename)
    wrong: list[str] = []
    outcomes: Counter[str] = Counter()
    for group in data["testGroups"]:
        jwk = der_to_jwk(group["publicKeyDer"], _file_alg(data, group))
        given = group.get("publicKeyJwk") or group.get("keyJwk")
        if given is not None:  # our conversion agrees with the file's own JWK
            for member in ("kty", "crv", "n", "e", "x", "y"):
                assert given.get(member) == jwk.get(member), (filename, member)
        key = load_jwk(jwk)
        alg = jwk["alg"]
        assert key.algorithms == {alg}  # the JWK's alg pins it
        for test in group["tests"]:
            ok = key.verify(alg, bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"]))
            expected = test["result"] == "valid"
            outcomes[f"{test['result']}:{'accepted' if ok else 'refused'}"] += 1
            if ok != expected:
                wrong.append(f"tc{test['tcId']} ({test['result']}, {test['comment']})")
    assert wrong == []
    assert sum(outcomes.values()) == data["numberOfTests"]
    assert outcomes["valid:accepted"] > 0 and outcomes["invalid:refused"] > 0


@pytest.mark.parametrize("filename", HMAC_FILES)
def test_wycheproof_hmac_keys_are_refused(filename: str) -> None:
    """HS* primitives: no HMAC key, whatever its size, becomes a verification key."""
    data = _load(WYCHEPROOF / "primitives" / filename)
    keys = {test["key"] for group in data["testGroups"] for test in group["tests"]}
    assert keys
    for key in keys:
        jwk = {"kty": "oct", "k": _b64url(bytes.fromhex(key)), "alg": "HS" + filename[9:12]}
        with pytest.raises(KeyRejected, match="symmetric"):
            load_jwk(jwk)


# ---------------------------------------------------------------------------------------------
# RFC 7520 cookbook
# ---------------------------------------------------------------------------------------------

COOKBOOK_VALID = ["jws/4_1.rsa_v15_signature.json", "jws/4_2.rsa-pss_signature.json",
                  "jws/4_3.ecdsa_signature.json", "curve25519/jws.json"]


@pytest.mark.parametrize("name", COOKBOOK_VALID)
def test_cookbook_signature_verifies(name: str) -> None:
    example = _load(COOKBOOK / name)
    key = _public(example["input"]["key"])
    assert "alg" not in key  # the cookbook keys carry no alg: nothing pins, the token's decides
    payload = verify_compact(example["output"]["compact"], key)
    assert payload == example["input"]["payload"].encode("utf-8")
    assert parse_compact(example["output"]["compact"]).alg == example["input"]["alg"]


@pytest.mark.parametrize("name", COOKBOOK_VALID)
@pytest.mark.parametrize("form", ["json", "json_flat"])
def test_cookbook_json_serialization_is_refused(name: str, form: str) -> None:
    """The same valid signatures in JSON serialization: a compact-only verifier refuses them."""
    example = _load(COOKBOOK / name)
    text = json.dumps(example["output"][form])
    with pytest.raises(InvalidToken) as refused:
        verify_compact(text, _public(example["input"]["key"]))
    assert refused.value.reason == "malformed"


def _rfc7797_compact(example: dict[str, Any]) -> str:
    output = example["output"]
    if "compact" in output:
        return str(output["compact"])
    flat = output["json_flat"]  # 4.2 has no compact form ('$.02' holds a dot): build it
    return f"{flat['protected']}.{flat['payload']}.{flat['signature']}"


COOKBOOK_REFUSED = {
    "jws/4_4.hmac-sha2_integrity_protection.json": "HS256",
    "jws/4_5.signature_with_detached_content.json": "detached content (empty payload segment)",
    "rfc7797/hmac-sha2_b64_false.json": "b64:false (RFC 7797), compact form",
    "rfc7797/4.2.hmac-sha2_b64_false.json": "b64:false (RFC 7797), payload with a dot",
}


@pytest.mark.parametrize("name", sorted(COOKBOOK_REFUSED))
def test_cookbook_refused(name: str) -> None:
    """All four are HS256 examples: refused with their key, and by their header alone."""
    example = _load(COOKBOOK / name)
    token = _rfc7797_compact(example)
    with pytest.raises(InvalidToken) as with_key:
        verify_compact(token, example["input"]["key"])
    assert with_key.value.reason == "key_refused"
    with pytest.raises(InvalidToken) as header_only:
        parse_compact(token)
    assert header_only.value.reason in ("algorithm_refused", "malformed")


def _cookbook_rsa_signer() -> tuple[Callable[[bytes], bytes], dict[str, Any]]:
    jwk = _load(COOKBOOK / "jws/4_1.rsa_v15_signature.json")["input"]["key"]
    n, e, d, p, q, dp, dq, qi = (int.from_bytes(_unb64url(jwk[m]), "big")
                                 for m in ("n", "e", "d", "p", "q", "dp", "dq", "qi"))
    private = rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, rsa.RSAPublicNumbers(e, n)).private_key()

    def sign(data: bytes) -> bytes:
        return private.sign(data, padding.PKCS1v15(), SHA256())

    return sign, _public(jwk)


@pytest.mark.parametrize(("header", "reason"), [
    ({"alg": "RS256", "b64": False, "crit": ["b64"]}, "crit_refused"),
    ({"alg": "RS256", "b64": False}, "b64_refused"),
])
def test_cookbook_b64_false_with_asymmetric_key_is_refused(
    header: dict[str, Any], reason: str
) -> None:
    """Derived from RFC 7797 with the cookbook's RSA key, so the signature is genuinely valid
    over the unencoded payload: the refusal comes from the header rule, not from HS256."""
    sign, public = _cookbook_rsa_signer()
    protected = _b64url(json.dumps(header, separators=(",", ":")).encode())
    payload = "Zm9v"  # unencoded, but only base64url characters: framing cannot catch it
    token = f"{protected}.{payload}.{_b64url(sign(f'{protected}.{payload}'.encode()))}"
    with pytest.raises(InvalidToken) as refused:
        verify_compact(token, public)
    assert refused.value.reason == reason


def test_cookbook_detached_content_with_asymmetric_key_is_refused() -> None:
    """RFC 7515 Appendix F detached content, signed with the cookbook's RSA key: the token's
    payload segment is empty, so the signature (over the real payload) does not verify."""
    sign, public = _cookbook_rsa_signer()
    example = _load(COOKBOOK / "jws/4_5.signature_with_detached_content.json")
    protected = _b64url(json.dumps({"alg": "RS256", "kid": public["kid"]}).encode())
    payload = _b64url(example["input"]["payload"].encode("utf-8"))
    signature = _b64url(sign(f"{protected}.{payload}".encode()))
    assert verify_compact(f"{protected}.{payload}.{signature}", public)  # attached: fine
    with pytest.raises(InvalidToken) as refused:
        verify_compact(f"{protected}..{signature}", public)
    assert refused.value.reason == "bad_signature"


# ---------------------------------------------------------------------------------------------
# RFC 7515 Appendix A
# ---------------------------------------------------------------------------------------------

RFC7515_CLAIMS = b'{"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}'


def _rfc7515_key(name: str) -> dict[str, Any]:
    text = (RFC7515 / name).read_text(encoding="utf-8").strip()
    if not text.startswith("{"):  # A.7.jwk is a link to another file (it holds its name)
        text = (RFC7515 / text).read_text(encoding="utf-8").strip()
    return dict(json.loads(text))


def _rfc7515_token(name: str) -> str:
    return (RFC7515 / name).read_text(encoding="utf-8").strip()


@pytest.mark.parametrize(("part", "payload"), [
    ("A.2", RFC7515_CLAIMS),  # RS256
    ("A.3", RFC7515_CLAIMS),  # ES256
    ("A.4", b"Payload"),      # ES512
])
def test_rfc7515_signature_verifies(part: str, payload: bytes) -> None:
    key = _public(_rfc7515_key(f"rfc7515_{part}.jwk"))
    assert verify_compact(_rfc7515_token(f"rfc7515_{part}.jwsc"), key) == payload


def test_rfc7515_a1_hs256_is_refused() -> None:
    token = _rfc7515_token("rfc7515_A.1.jwsc")
    with pytest.raises(InvalidToken) as with_key:
        verify_compact(token, _rfc7515_key("rfc7515_A.1.jwk"))
    assert with_key.value.reason == "key_refused"
    with pytest.raises(InvalidToken) as header_only:
        parse_compact(token)
    assert header_only.value.reason == "algorithm_refused"


def test_rfc7515_a5_alg_none_is_refused() -> None:
    token = _rfc7515_token("rfc7515_A.5.jwsc")
    key = _public(_rfc7515_key("rfc7515_A.2.jwk"))
    with pytest.raises(InvalidToken):
        verify_compact(token, key)
    # With a non-empty signature the empty-signature rule cannot be what refuses it: alg is.
    with pytest.raises(InvalidToken) as refused:
        verify_compact(token + "AAAA", key)
    assert refused.value.reason == "algorithm_refused"


@pytest.mark.parametrize(("document", "keys"), [
    ("rfc7515_A.6.jwsg", ["rfc7515_A.6.1.jwk", "rfc7515_A.6.2.jwk"]),  # general JSON
    ("rfc7515_A.7.jwsf", ["rfc7515_A.7.jwk"]),                          # flattened JSON
])
def test_rfc7515_json_serialization_is_refused(document: str, keys: list[str]) -> None:
    """Refused by the compact-only verifier, although each signature in it is valid: the same
    signature rebuilt as a compact token verifies."""
    text = _rfc7515_token(document)
    data = json.loads(text)
    signatures = data.get("signatures", [data])
    assert len(signatures) == len(keys)
    for entry, key_file in zip(signatures, keys, strict=True):
        key = _public(_rfc7515_key(key_file))
        with pytest.raises(InvalidToken) as refused:
            verify_compact(text, key)
        assert refused.value.reason == "malformed"
        compact = f"{entry['protected']}.{data['payload']}.{entry['signature']}"
        assert verify_compact(compact, key) == RFC7515_CLAIMS


# ---------------------------------------------------------------------------------------------
# Inventory: the evidence table's numbers, pinned
# ---------------------------------------------------------------------------------------------

EXPECTED_INVENTORY = {
    "wycheproof_jws.total": 401,
    "wycheproof_jws.labelled_valid": 46,
    "wycheproof_jws.labelled_invalid": 355,
    "wycheproof_jws.asymmetric.valid_verified": 32,
    "wycheproof_jws.asymmetric.invalid_refused": 325,
    "wycheproof_jws.asymmetric.quirks_refused": 4,
    "wycheproof_jws.hs.total_refused": 40,
    "wycheproof_jws.hs.labelled_valid_refused": 10,
    "wycheproof_jws.through_middleware": 369,  # 355 invalid + 10 valid HS* + 4 quirks
    "wycheproof_jwk.total": 26,
    "wycheproof_jwk.verifies": 1,
    "wycheproof_jwk.refused": 25,  # ROCA (tc7) included
    "wycheproof_primitives.signature_vectors": 4126,
    "wycheproof_primitives.hmac_vectors_keys_refused": 522,
}


def _inventory() -> dict[str, int]:
    cases = jws_cases()
    asym = [c for c in cases if not c.hs]
    hs = [c for c in cases if c.hs]
    counts = {
        "wycheproof_jws.total": len(cases),
        "wycheproof_jws.labelled_valid": sum(c.result == "valid" for c in cases),
        "wycheproof_jws.labelled_invalid": sum(c.result == "invalid" for c in cases),
        "wycheproof_jws.asymmetric.valid_verified":
            sum(c.result == "valid" and c.tc_id not in QUIRKS for c in asym),
        "wycheproof_jws.asymmetric.invalid_refused":
            sum(c.result == "invalid" and c.tc_id not in QUIRKS for c in asym),
        "wycheproof_jws.asymmetric.quirks_refused": sum(c.tc_id in QUIRKS for c in asym),
        "wycheproof_jws.hs.total_refused": len(hs),
        "wycheproof_jws.hs.labelled_valid_refused": sum(c.result == "valid" for c in hs),
        "wycheproof_jws.through_middleware": len(_refused_by_jws_layer()),
        "wycheproof_jwk.total": len(jwk_cases()),
        "wycheproof_jwk.verifies": sum(v[2] for v in JWK_CASES.values()),
        "wycheproof_jwk.refused": sum(not v[2] for v in JWK_CASES.values()),
        "wycheproof_primitives.signature_vectors": sum(
            _load(WYCHEPROOF / "primitives" / f)["numberOfTests"] for f in SIGNATURE_FILES),
        "wycheproof_primitives.hmac_vectors_keys_refused": sum(
            _load(WYCHEPROOF / "primitives" / f)["numberOfTests"] for f in HMAC_FILES),
    }
    return counts


def test_vector_files_are_the_pinned_copies() -> None:
    """The vector files are byte for byte the upstream copies `SHA256SUMS` names, and nothing
    else is in the folder: a changed or added file is noticed before any count is."""
    listed: dict[str, str] = {}
    for line in (VECTORS / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    present = {path.relative_to(VECTORS).as_posix() for path in VECTORS.rglob("*")
               if path.is_file()} - {"README.md", "SHA256SUMS"}
    assert present == set(listed)
    for name, digest in listed.items():
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == digest, name


def test_vector_inventory(record_property: Callable[[str, object], None]) -> None:
    """The number of vectors per category; a changed vector file changes these numbers."""
    counts = _inventory()
    for name, value in counts.items():
        record_property(name, value)
    print("\nvector inventory:\n" + "\n".join(f"  {k:52} {v:5}" for k, v in counts.items()))
    assert counts == EXPECTED_INVENTORY
    # The parts add up: every Wycheproof JWS vector is in exactly one bucket.
    assert (counts["wycheproof_jws.asymmetric.valid_verified"]
            + counts["wycheproof_jws.asymmetric.invalid_refused"]
            + counts["wycheproof_jws.asymmetric.quirks_refused"]
            + counts["wycheproof_jws.hs.total_refused"]) == counts["wycheproof_jws.total"]
    assert (counts["wycheproof_primitives.signature_vectors"]
            + counts["wycheproof_primitives.hmac_vectors_keys_refused"]) == 4648
    assert set(JWK_CASES) == {test["tcId"] for _, test in jwk_cases()}
