"""The benchmark table: rows with a median, a ratio to the section's baseline and a target.

Printed as plain text and written as Markdown with the machine (CPU model, cores, Python, OS)
and the versions of the packages measured.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata

__all__ = ["Row", "machine", "markdown", "text_table", "versions"]

PACKAGES = ("m2m-guard", "cryptography", "PyJWT", "joserfc", "Authlib", "starlette", "uvicorn",
            "waitress", "httpx")


@dataclass
class Row:
    """One measured line. `value` is in `unit`; `ratio` is against `baseline` (a row name)."""

    section: str
    name: str
    value: float | None
    unit: str
    ratio: float | None = None
    baseline: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    def shown_value(self) -> str:
        if self.value is None:
            return "n/a"
        if self.unit == "µs":
            return f"{self.value:.2f} µs" if self.value < 100 else f"{self.value:.0f} µs"
        if self.unit == "req/s":
            return f"{self.value:,.0f} req/s"
        if self.unit == "MB":
            return f"{self.value:.2f} MB"
        if self.unit == "s":
            return f"{self.value:.3f} s"
        if self.unit == "x":
            return f"{self.value:.2f}x"
        if self.unit == "B":
            return f"{self.value:,.0f} B"
        return f"{self.value:,.0f}" if self.value == int(self.value) else f"{self.value:g}"

    def shown_ratio(self) -> str:
        if self.ratio is None:
            return ""
        return f"{self.ratio:.2f}x {self.baseline}".strip()

    def shown_met(self) -> str:
        return "" if self.met is None else ("met" if self.met else "NOT met")


_HEAD = ("Section", "Contender", "Median", "Ratio", "Target", "Result", "Note")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.section, row.name, row.shown_value(), row.shown_ratio(), row.target,
            row.shown_met(), row.note)


def text_table(rows: list[Row]) -> str:
    cells = [_HEAD, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_HEAD))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
             .rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    return {
        "CPU": _cpu_model(),
        "Cores": str(os.cpu_count()),
        "Python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "OS": f"{platform.system()} {platform.release()} ({platform.machine()})",
    }


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def markdown(rows: list[Row], *, title: str, when: str, mode: str, extra: list[str]) -> str:
    out = [f"# {title}", "", f"Run: {when} ({mode}). Medians of interleaved rounds; ratios are "
           "within this one run.", ""]
    out += ["| Machine | |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in machine().items()]
    out += ["", "| Package | Version |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in versions().items()]
    out += ["", "| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in _cells(row)) + " |"
            for row in rows]
    if extra:
        out += ["", *extra]
    return "\n".join(out) + "\n"
