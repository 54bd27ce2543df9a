"""Every framework module offers the same scope decorators and token accessor, as the same
objects as the package's own, so `from m2m_guard.<framework> import require_scopes` works for
each framework a user reads about and none can drift."""

from __future__ import annotations

import importlib

import pytest

import m2m_guard

# The names each adapter module re-exports from the core; one list for every framework.
SHARED_NAMES = ("all_of", "any_of", "current_token", "require", "require_any_scope",
                "require_claims", "require_clients", "require_scopes")
ADAPTERS = ("m2m_guard.starlette", "m2m_guard.fastapi", "m2m_guard.flask", "m2m_guard.django")


@pytest.mark.parametrize("module_name", ADAPTERS)
def test_adapter_module_exports_the_shared_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    public = set(module.__all__)
    missing = [name for name in SHARED_NAMES if name not in public]
    assert missing == [], f"{module_name}.__all__ lacks {missing}"
    for name in SHARED_NAMES:
        assert getattr(module, name) is getattr(m2m_guard, name), (module_name, name)
    # Every name in __all__ exists (a typo in the list would break `from ... import *`).
    assert [name for name in module.__all__ if not hasattr(module, name)] == []


def test_the_shared_list_is_the_core_public_api() -> None:
    assert set(SHARED_NAMES) <= set(m2m_guard.__all__)
