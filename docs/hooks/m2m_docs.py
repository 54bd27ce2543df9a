"""mkdocs hooks of the documentation site (`mkdocs.yml` names this file).

- ``<!-- readme:SECTION -->`` in a page is replaced by that ``## SECTION`` of README.md
  (``<!-- readme:intro -->``: the text before its first section), so the quick start exists once
  (and the suite compiles its snippets there).
- ``<!-- settings-table -->`` is replaced by the table of every `GuardSettings` option and its
  ``M2M_GUARD_*`` variable, built from the dataclass itself: the names, types and defaults come from
  the code, the meaning of each from README's configuration table. An option missing from README's
  table, or a README row without an option, fails the build.
- A link to a file of the repository outside ``docs/`` (``../README.md``, ``../examples/...``)
  becomes a link to that file in the repository on GitHub, so no page links into nothing.
"""

from __future__ import annotations

import dataclasses
import inspect
import posixpath
import re
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOB = "https://github.com/m2m-guard/m2m-guard/blob/main/"
TREE = "https://github.com/m2m-guard/m2m-guard/tree/main/"

_INCLUDE = re.compile(r"<!-- readme:(?P<section>[^>]+?) -->")
_LINK = re.compile(r"(?P<head>!?\[[^\]]*\]\()(?P<target>[^)\s]+)(?P<tail>[^)]*\))")
_ROW = re.compile(r"^\| `(?P<env>M2M_GUARD_[A-Z_]+)` \| `(?P<option>[a-z_]+)` \| "
                  r"(?P<default>.*?) \| (?P<meaning>.*) \|$", re.MULTILINE)


class DocsError(Exception):
    """A page cannot be built from the sources it names."""


def readme_section(title: str) -> str:
    """The body of README's ``## title`` section (up to the next ``## ``)."""
    text = README.read_text(encoding="utf-8")
    if title == "intro":  # what comes before the first section, without the title line
        return text.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    if match is None:
        raise DocsError(f"README.md has no '## {title}' section")
    return match.group(1).strip()


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation))
    return str(annotation).replace("typing.", "").replace("collections.abc.", "")


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _shown_default(value: Any, readme_default: str) -> str:
    """The default as an M2M_GUARD_* value; an empty default keeps README's wording of what
    empty means (``required``, ``discovery``, ``(off)``)."""
    if value is dataclasses.MISSING or value is None or value in ((), ""):
        return readme_default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}s`"
    if isinstance(value, (tuple, list, frozenset)):
        return f"`{','.join(str(item) for item in value)}`"
    return f"`{value}`"


def settings_table() -> str:
    from m2m_guard import GuardSettings

    # The prefix from_env reads, from its public signature.
    env_prefix = inspect.signature(GuardSettings.from_env).parameters["prefix"].default

    rows = {m["option"]: m for m in _ROW.finditer(readme_section("Configuration"))}
    hints = typing.get_type_hints(GuardSettings)
    fields = dataclasses.fields(GuardSettings)
    names = [field.name for field in fields]
    missing = [name for name in names if name not in rows]
    extra = sorted(set(rows) - set(names))
    if missing or extra:
        raise DocsError(f"README's configuration table is out of step with GuardSettings: "
                        f"options without a row {missing}, rows without an option {extra}")
    lines = ["| variable | option | type | default | meaning |", "|---|---|---|---|---|"]
    for field in fields:
        row = rows[field.name]
        env = f"{env_prefix}{field.name.upper()}"
        if row["env"] != env:
            raise DocsError(f"README names {row['env']} for {field.name}; the variable is {env}")
        kind = _type_name(hints[field.name]).replace("|", "\\|")
        default = _shown_default(_default(field), row["default"])
        lines.append(f"| `{env}` | `{field.name}` | `{kind}` | {default} | {row['meaning']} |")
    return "\n".join(lines)


def _outside_link(target: str, page_dir: str, docs_dir: Path) -> str | None:
    """The GitHub URL of `target` when it names a repository file outside the docs."""
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
        return None
    path, _, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(page_dir, path))
    if not resolved.startswith("../"):
        return None  # inside docs/: mkdocs checks it
    repo_path = resolved.removeprefix("../")
    if repo_path.startswith("../") or not (ROOT / repo_path).exists():
        raise DocsError(f"link to {target!r} names no file of the repository")
    base = TREE if (ROOT / repo_path).is_dir() else BLOB
    return base + repo_path + (f"#{anchor}" if anchor else "")


def rewrite_links(markdown: str, page_dir: str, docs_dir: Path) -> str:
    def replace(match: re.Match[str]) -> str:
        url = _outside_link(match["target"], page_dir, docs_dir)
        return match.group(0) if url is None else f"{match['head']}{url}{match['tail']}"

    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        out.append(line if fenced else _LINK.sub(replace, line))
    return "".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"])
    page_dir = posixpath.dirname(page.file.src_uri)
    markdown = _INCLUDE.sub(lambda m: from_readme(readme_section(m["section"]), page_dir),
                            markdown)
    if "<!-- settings-table -->" in markdown:
        markdown = markdown.replace("<!-- settings-table -->",
                                    from_readme(settings_table(), page_dir))
    return rewrite_links(markdown, page_dir, docs_dir)


def from_readme(text: str, page_dir: str) -> str:
    """README text with its links (relative to the repository root) made relative to a page in
    `page_dir` (a folder of docs/): ``docs/x.md`` is a page of the site, the rest stays a path
    into the repository, which `rewrite_links` then points at GitHub."""
    def relink(match: re.Match[str]) -> str:
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return match.group(0)
        from_page = posixpath.relpath(target, posixpath.join("docs", page_dir))
        return f"{match['head']}{from_page}{match['tail']}"

    return _LINK.sub(relink, text)
