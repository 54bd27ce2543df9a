"""What a rule beyond scopes costs on a cache hit: a claim-equality rule
(``custom_claims.environment`` equal to a value, the README's example) checked on the token the
verified-token cache answers, alone and through the decorator an endpoint carries.

Contenders, interleaved (`harness.interleave`), on one repeated token:

- ``cache hit``: `TokenVerifier.verify_sync`, answered by the cache (the baseline);
- ``cache hit + claim rule``: the same, then the rule's check on the returned token;
- ``endpoint``, ``endpoint with the rule``: a plain function and the same function decorated
  with the rule, called with the token current (what an adapter does per request).

The rows are the differences per call, round by round: the target is < 1 µs for the rule on a
cache hit (an absolute figure, because the issue states it so; the ratio to the cache hit is
shown too).
"""

from __future__ import annotations

from m2m_guard import TokenVerifier, require_claims
from m2m_guard._core.context import reset_current_token, set_current_token
from m2m_guard.local_issuer import SigningKey, scalekit_claims

from .apps import guard_settings
from .harness import Config, interleave, per_round
from .report import Row

SECTION = "rules on a cache hit (RS256)"
RULE_ROW = "claim-equality rule on a cache hit"
DECORATOR_ROW = "decorated endpoint: the rule's extra cost"
TARGET_US = 1.0


def contenders(key: SigningKey, issuer: str) -> tuple[dict[str, object], TokenVerifier]:
    token = key.sign(scalekit_claims(issuer, custom_claims={"environment": "production_us"}))
    verifier = TokenVerifier(guard_settings(issuer))
    verifier.warm_up_sync()
    verify = verifier.verify_sync
    access = verify(token)
    rule = require_claims({"custom_claims.environment": "production_us"})
    check = rule.requirement.check

    def endpoint() -> int:
        return 1

    decorated = rule(endpoint)

    def hit(batch: int) -> None:
        for _ in range(batch):
            verify(token)

    def hit_and_rule(batch: int) -> None:
        for _ in range(batch):
            check(verify(token))

    def plain(batch: int) -> None:
        marker = set_current_token(access)
        try:
            for _ in range(batch):
                endpoint()
        finally:
            reset_current_token(marker)

    def with_rule(batch: int) -> None:
        marker = set_current_token(access)
        try:
            for _ in range(batch):
                decorated()
        finally:
            reset_current_token(marker)

    return {"cache hit": hit, "cache hit + claim rule": hit_and_rule, "endpoint": plain,
            "endpoint with the rule": with_rule}, verifier


def run(key: SigningKey, issuer: str, config: Config) -> list[Row]:
    found, verifier = contenders(key, issuer)
    try:
        results = interleave(found, config)  # type: ignore[arg-type]
    finally:
        verifier.close()
    hit, ruled = results["cache hit"], results["cache hit + claim rule"]
    plain, decorated = results["endpoint"], results["endpoint with the rule"]
    rows = [Row.measured(SECTION, name, result.spread.scaled(1e6), "µs")
            for name, result in results.items()]
    rule = Row.measured(SECTION, RULE_ROW, per_round(lambda h, r: (r - h) * 1e6, hit, ruled),
                        "µs", ratio=(ruled.median - hit.median) / hit.median,
                        baseline="cache hit", note="(hit + rule) - hit")
    rows.append(rule.at_most(TARGET_US, f"< {TARGET_US:g} µs"))
    rows.append(Row.measured(SECTION, DECORATOR_ROW,
                             per_round(lambda p, d: (d - p) * 1e6, plain, decorated), "µs",
                             note="decorated - plain, token current"))
    return rows
