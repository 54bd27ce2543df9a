"""The structure docs/architecture.md describes, checked on the source: no import circles, no
private name imported across modules outside the private packages, no framework in the core."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packages import MODULE_PACKAGES, import_public_module

PACKAGE = Path(__file__).resolve().parents[1] / "m2m_guard"
FRAMEWORKS = ("starlette", "fastapi", "flask", "werkzeug", "django", "rest_framework", "uvicorn")


def _module_name(path: Path) -> str:
    parts = ["m2m_guard", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_private(module: str) -> bool:
    """In a private package or a `_`-prefixed module (dunder modules are not private)."""
    return any(part.startswith("_") and not part.startswith("__")
               for part in module.split(".")[1:])


def _runtime_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs (at import time or in a function); not `if TYPE_CHECKING:` ones."""
    def walk(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                yield from (n for item in child.orelse for n in walk_one(item))
                continue
            yield from walk_one(child)

    def walk_one(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        else:
            yield from walk(node)

    yield from walk(tree)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, *(node.module.split(".") if node.module else [])])
    return node.module or ""


def _edges(module: str) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for the package's own imports."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("m2m_guard"):
                    yield alias.name, None, node.lineno
            continue
        target = _resolve(module, node)
        if not target.startswith("m2m_guard"):
            continue
        for alias in node.names:
            submodule = f"{target}.{alias.name}"
            if submodule in MODULES:
                yield submodule, None, node.lineno
            else:
                yield target, alias.name, node.lineno


def _graph() -> dict[str, set[str]]:
    return {module: {target for target, _, _ in _edges(module) if target in MODULES}
            for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                found.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_package_is_seen_whole() -> None:
    assert {"m2m_guard", "m2m_guard.verifier", "m2m_guard._core.gate", "m2m_guard.asgi",
            "m2m_guard.local_issuer.issuer"} <= set(MODULES)
    assert "m2m_guard._core.keystore" in _graph()["m2m_guard.verifier"]


def test_the_import_graph_has_no_circles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_private_name_is_imported_outside_the_private_packages() -> None:
    offences = []
    for module, path in MODULES.items():
        if _is_private(module):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {}  # names bound to one of our modules, e.g. `from . import events as ev`
        for target, name, line in _edges(module):
            if name is not None and name.startswith("_") and not name.startswith("__"):
                offences.append(f"{module}:{line} imports {target}.{name}")
        for node in _runtime_imports(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, node)
                for alias in node.names:
                    if f"{target}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                offences.append(f"{module}:{node.lineno} reads {aliases[node.value.id]}."
                                f"{node.attr}")
    assert offences == []


def test_the_private_name_check_sees_an_offence() -> None:
    tree = ast.parse("from ._core.context import _CURRENT\n")
    [node] = list(_runtime_imports(tree))
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("m2m_guard.asgi", node) == "m2m_guard._core.context"
    assert node.names[0].name.startswith("_")


def test_the_core_imports_no_web_framework() -> None:
    for module, path in MODULES.items():
        if not module.startswith(("m2m_guard._core", "m2m_guard.verifier")) \
                and module not in ("m2m_guard.asgi", "m2m_guard.wsgi", "m2m_guard"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in _runtime_imports(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # our own modules (asgi uses m2m_guard.starlette only when installed)
            names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""]
            assert not any(name.split(".")[0] in FRAMEWORKS for name in names), (module, names)


def test_public_modules_import_no_private_module_of_an_adapter_but_their_own() -> None:
    for module in MODULES:
        if _is_private(module):
            continue
        for target, _, line in _edges(module):
            if target.startswith("m2m_guard._adapters."):
                adapter = target.rsplit(".", 1)[1].split("_")[0]
                assert module.rsplit(".", 1)[1] in (adapter, "drf"), (module, line, target)


def test_the_asgi_middleware_runs_without_starlette() -> None:
    """`m2m_guard.asgi` is for any ASGI app: with Starlette not importable it still guards."""
    import subprocess
    import sys
    import textwrap

    program = textwrap.dedent("""
        import asyncio, sys
        sys.modules["starlette"] = None  # any import of starlette now fails
        from m2m_guard import GuardSettings
        from m2m_guard.asgi import M2MGuardMiddleware

        sent = []
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        async def receive():
            return {"type": "http.request"}
        async def send(message):
            sent.append(message)
        guard = M2MGuardMiddleware(app, GuardSettings(
            issuer="https://issuer.example", audience="api", public_paths=["/health"]))
        def scope(path):
            return {"type": "http", "method": "GET", "path": path, "query_string": b"",
                    "headers": []}
        asyncio.run(guard(scope("/health"), receive, send))
        asyncio.run(guard(scope("/api"), receive, send))
        print([m["status"] for m in sent if m["type"] == "http.response.start"])
        print("starlette" in [name.split(".")[0] for name in sys.modules
                              if sys.modules[name] is not None])
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[200,", "401]", "False"]


@pytest.mark.parametrize("name", sorted(MODULE_PACKAGES))
def test_the_import_paths_of_the_mcp_modules_work(name: str) -> None:
    """Their own packages (the mcp and fastmcp extras) are needed to import them."""
    assert not _is_private(name) and import_public_module(name)


def test_documented_import_paths_still_work() -> None:
    """Every module path users import today, and the names the docs show from the re-exporting
    ones (the implementation moved into the private core)."""
    import importlib

    public = ["m2m_guard", "m2m_guard.asgi", "m2m_guard.wsgi", "m2m_guard.starlette",
              "m2m_guard.fastapi", "m2m_guard.flask", "m2m_guard.django", "m2m_guard.drf",
              "m2m_guard.otel", "m2m_guard.health", "m2m_guard.events", "m2m_guard.testing",
              "m2m_guard.local_issuer", "m2m_guard.dpop", "m2m_guard.cli", "m2m_guard.settings",
              "m2m_guard.errors", "m2m_guard.token", "m2m_guard.verifier"]
    for name in public:
        assert not _is_private(name) and importlib.import_module(name)
    shown = {"jws": ["verify_compact"],
             "bearer": ["split_credentials", "authorization_from_environ", "extract_bearer"],
             "rules": ["PathRules", "is_cors_preflight"],
             "endpoints": ["render_refusal", "health_answer", "OperationalEndpoints"],
             "encoding": ["MAX_JSON_DEPTH"], "resource_metadata": ["resource_metadata"],
             "asgi": ["M2MGuardMiddleware", "TokenCredentials", "PathRules"]}
    for module, names in shown.items():
        loaded = importlib.import_module(f"m2m_guard.{module}")
        for name in names:
            assert getattr(loaded, name) is not None, f"m2m_guard.{module}.{name}"
            assert name in loaded.__all__
