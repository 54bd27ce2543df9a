"""The signature call alone: m2m_guard's direct call against PyJWT's `Algorithm.verify`.

Both check the same signatures with the same public key object (built once by PyJWT's
`from_jwk`, as `keys.load_jwk` does): "direct" is the verifier `load_jwk` prepared (padding,
hash and curve objects made once, `r || s` checked and turned into DER), "PyJWT" calls
`jwt.get_algorithm_by_name(alg).verify(message, key, signature)`, which makes those objects on
every call. The decision rule (recorded in docs/decisions.md): PyJWT's call is used if it costs
less than 0.3 µs more per verification, else the direct call stays. A 0.3 µs difference is far
below the noise of a busy machine on a 20-200 µs operation, so the extra cost is taken from
the fastest of many short interleaved rounds of each (the rounds the machine did not disturb),
not from medians.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import jwt

from m2m_guard._core.encoding import b64url_decode
from m2m_guard._core.keys import load_jwk
from m2m_guard.local_issuer import SigningKey

from .harness import Config, interleave
from .report import Row

BUDGET_US = 0.3  # what PyJWT's call may cost on top of the direct one


def _config(config: Config) -> Config:
    """Many short rounds: the same number of calls as `config`, in batches of at most 50."""
    batch = min(config.batch, 50)
    rounds = max(config.rounds, config.rounds * config.batch // batch)
    return Config(rounds=rounds, batch=batch, quick=config.quick)


def _inputs(tokens: list[str]) -> list[tuple[bytes, bytes]]:
    pairs = []
    for token in tokens:
        head, payload, signature = token.split(".")
        pairs.append((f"{head}.{payload}".encode("ascii"), b64url_decode(signature)))
    return pairs


def contenders(key: SigningKey, tokens: list[str]) -> dict[str, Callable[[int], None]]:
    loaded = load_jwk(key.public_jwk())
    direct = loaded.verifiers[key.alg]
    algorithm: Any = jwt.get_algorithm_by_name(key.alg)
    public = loaded.public_key
    pairs = _inputs(tokens)

    def cycling(check: Callable[[bytes, bytes], bool]) -> Callable[[int], None]:
        source = itertools.cycle(pairs)

        def run(batch: int) -> None:
            for _ in range(batch):
                message, signature = next(source)
                if not check(message, signature):
                    raise AssertionError("a valid signature was refused")

        return run

    return {
        "direct call (m2m_guard)": cycling(direct),
        "PyJWT Algorithm.verify": cycling(
            lambda message, signature: algorithm.verify(message, public, signature)),
    }


def run(keys: dict[str, SigningKey], pools: dict[str, list[str]], config: Config) -> list[Row]:
    rows: list[Row] = []
    for alg, key in keys.items():
        results = interleave(contenders(key, pools[alg]), _config(config))
        direct, pyjwt = results["direct call (m2m_guard)"], results["PyJWT Algorithm.verify"]
        section = f"signature call {alg}"
        rows.append(Row(section, direct.name, direct.median * 1e6, "µs"))
        rows.append(Row(section, pyjwt.name, pyjwt.median * 1e6, "µs",
                        ratio=pyjwt.median / direct.median, baseline="direct"))
        extra = (min(pyjwt.samples) - min(direct.samples)) * 1e6
        rows.append(Row(section, "PyJWT's extra cost per verification", extra, "µs",
                        target=f"< {BUDGET_US} µs to switch", met=extra < BUDGET_US,
                        note="NOT met: the direct call stays" if extra >= BUDGET_US else
                        "met: PyJWT's call would do"))
    return rows
