"""``python -m m2m_guard``: the `m2m-guard` command (see `m2m_guard.cli`)."""

from .cli import main

raise SystemExit(main())
