"""`make demo`: the end-to-end demo with this directory's deployment API (starlette_app.py).

It runs `m2m-guard demo` (see `m2m_guard.cli.demo`) with `starlette_app.create_app` as the API:
the local issuer (in memory) and the API under uvicorn on free loopback ports, the "GitHub Actions
Deployment Service" client registered through the management API, its token, and each call with
its status. Exits 0 when every call got the expected answer. ``--serve`` keeps both running and
prints curl commands to try by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from starlette_app import create_app

from m2m_guard.cli.demo import run_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="m2m_guard's end-to-end demo on loopback.")
    parser.add_argument("--serve", action="store_true",
                        help="keep the servers running and print curl commands (Ctrl-C stops)")
    raise SystemExit(run_demo(create_app, serve=parser.parse_args().serve))
