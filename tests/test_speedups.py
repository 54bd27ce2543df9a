"""The `[speedups]` switch: which parsers are in use, and `M2M_GUARD_SPEEDUPS=off` turning the
extra off (the suites run both ways: `make test` runs the parsing and attack suites again with
it off)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from m2m_guard import GuardSettings

PROBE = "import json; from m2m_guard._core import speedups; print(json.dumps(speedups.ACTIVE))"


def _active(**env: str) -> dict[str, str | None]:
    environ = {k: v for k, v in os.environ.items() if k != "M2M_GUARD_SPEEDUPS"}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True,
                          text=True, timeout=60, check=True)
    active: dict[str, str | None] = json.loads(done.stdout)
    return active


def test_the_extra_is_used_when_installed_and_off_when_switched_off() -> None:
    installed = {"json": "msgspec" if importlib.util.find_spec("msgspec") else None,
                 "base64": "pybase64" if importlib.util.find_spec("pybase64") else None}
    assert _active() == installed
    for value in ("off", "0", "false", "NO"):
        assert _active(M2M_GUARD_SPEEDUPS=value) == {"json": None, "base64": None}


def test_the_switch_is_not_taken_for_a_misspelt_setting() -> None:
    # Unknown M2M_GUARD_* variables are configuration errors; this one is a process switch.
    settings = GuardSettings.from_env({"M2M_GUARD_ISSUER": "https://issuer.example",
                                       "M2M_GUARD_AUDIENCE": "api",
                                       "M2M_GUARD_SPEEDUPS": "off"})
    assert settings.audiences == ("api",)
