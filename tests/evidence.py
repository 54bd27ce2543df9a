"""The evidence tables of docs/security.md, counted from the test suite itself.

    python -m tests.evidence           print the tables
    python -m tests.evidence --write   rewrite them in docs/security.md
    python -m tests.evidence --check   exit 1 when docs/security.md is stale

Counts come from `pytest --collect-only` (test cases per file), the vector inventory of
tests/test_vectors.py (vectors per public suite), the fault table of tests/test_faults.py and the
Hypothesis profiles registered in tests/conftest.py. tests/test_security_docs.py runs `--check`'s
comparison, so the published numbers cannot drift from the suite.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "security.md"
EVIDENCE = ("<!-- evidence-table:start -->", "<!-- evidence-table:end -->")
FAULTS = ("<!-- fault-table:start -->", "<!-- fault-table:end -->")
FILES = ("tests/test_vectors.py", "tests/attacks", "tests/test_faults.py", "tests/fuzz",
         "tests/test_keyset_behaviour.py", "tests/test_discovery.py", "tests/test_jwks_policy.py",
         "tests/test_soak_short.py")


def collected() -> Counter[str]:
    """Test cases per file (a directory's files are counted under the directory)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *FILES], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise SystemExit(f"pytest --collect-only failed:\n{result.stdout}\n{result.stderr}")
    counts: Counter[str] = Counter()
    for line in result.stdout.splitlines():
        if "::" not in line:
            continue
        path = line.split("::", 1)[0]
        for folder in ("tests/fuzz", "tests/attacks"):
            if path.startswith(folder + "/"):
                path = folder
        counts[path] += 1
    return counts


def render_evidence_table() -> str:
    from hypothesis import settings as hypothesis_settings

    from . import conftest  # noqa: F401 - registers the Hypothesis profiles
    from .test_faults import CASES
    from .test_faults import FAULTS as FAULT_ROWS
    from .test_vectors import _inventory

    tests = collected()
    inventory = _inventory()
    properties = tests["tests/fuzz"]
    ci = hypothesis_settings.get_profile("ci").max_examples
    fuzz = hypothesis_settings.get_profile("fuzz").max_examples
    rows = [
        ("Wycheproof JWS vectors (`json_web_signature_test.json`)", "tests/test_vectors.py",
         f"{inventory['wycheproof_jws.total']} vectors: "
         f"{inventory['wycheproof_jws.asymmetric.valid_verified']} verified, "
         f"{inventory['wycheproof_jws.asymmetric.invalid_refused']} invalid refused, "
         f"{inventory['wycheproof_jws.hs.total_refused']} HS* refused; "
         f"{inventory['wycheproof_jws.through_middleware']} also through the middleware"),
        ("Wycheproof JWK vectors (`json_web_key_test.json`)", "tests/test_vectors.py",
         f"{inventory['wycheproof_jwk.total']} key sets: "
         f"{inventory['wycheproof_jwk.verifies']} usable, "
         f"{inventory['wycheproof_jwk.refused']} refused"),
        ("Wycheproof signature primitives (RSA PKCS#1, PSS, ECDSA, EdDSA)",
         "tests/test_vectors.py",
         f"{inventory['wycheproof_primitives.signature_vectors']} signatures; "
         f"{inventory['wycheproof_primitives.hmac_vectors_keys_refused']} HMAC vectors "
         f"whose keys are refused"),
        ("Vector test cases in all (with RFC 7520 and RFC 7515 Appendix A)",
         "tests/test_vectors.py", f"{tests['tests/test_vectors.py']} test cases"),
        ("Attack cases by category (exact status and error code, never 500)",
         "tests/attacks", f"{tests['tests/attacks']} test cases"),
        ("Key-set cache, discovery and fetch rules", "tests/test_keyset_behaviour.py, "
         "tests/test_discovery.py, tests/test_jwks_policy.py",
         f"{tests['tests/test_keyset_behaviour.py'] + tests['tests/test_discovery.py']}"
         f" end-to-end + {tests['tests/test_jwks_policy.py']} policy test cases"),
        ("Issuer faults (the table below) x situations x fronts", "tests/test_faults.py",
         f"{len(FAULT_ROWS)} faults x {len(CASES)} situations x 2 fronts; "
         f"{tests['tests/test_faults.py']} test cases in all"),
        ("Fuzz properties (Hypothesis)", "tests/fuzz",
         f"{properties} properties: {ci:,} examples each in `make test` "
         f"({properties * ci:,}), {fuzz:,} each in `make fuzz` ({properties * fuzz:,})"),
        ("Soak (real uvicorn, rotating and failing issuer)", "tests/soak.py, "
         "tests/test_soak_short.py",
         "one 5 s issuer cycle in `make test`; 120 s (10 cycles, 8 fault kinds) in `make soak`"),
    ]
    lines = ["| evidence | where | count |", "|---|---|---|"]
    lines += [f"| {what} | {where} | {count} |" for what, where, count in rows]
    return "\n".join(lines)


def render_fault_table() -> str:
    from .test_faults import render_fault_table as render

    return render()


def _replace(text: str, markers: tuple[str, str], table: str) -> str:
    start, end = markers
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"docs/security.md has no {start} ... {end} block")
    return pattern.sub(lambda _: f"{start}\n{table}\n{end}", text)


def published(text: str, markers: tuple[str, str]) -> str:
    """The table between `markers` in `text`."""
    start, end = markers
    return text[text.index(start) + len(start):text.index(end)].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.evidence")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite docs/security.md's tables")
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/security.md is stale")
    args = parser.parse_args(argv)
    evidence, faults = render_evidence_table(), render_fault_table()
    text = DOC.read_text(encoding="utf-8")
    if args.write:
        text = _replace(_replace(text, EVIDENCE, evidence), FAULTS, faults)
        DOC.write_text(text, encoding="utf-8")
        print(f"updated {DOC.relative_to(ROOT)}")
        return 0
    if args.check:
        stale = [name for name, markers, table in (("evidence", EVIDENCE, evidence),
                                                   ("fault", FAULTS, faults))
                 if published(text, markers) != table]
        if stale:
            print(f"docs/security.md is stale ({', '.join(stale)} table): "
                  f"run python -m tests.evidence --write", file=sys.stderr)
            return 1
        print("docs/security.md is up to date")
        return 0
    print(evidence, faults, sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
