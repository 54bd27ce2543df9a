"""The benchmark table: rows with a median, its spread over the rounds, a ratio to the section's
baseline and a target with its verdict.

A verdict whose limit lies inside the row's spread (the interquartile range of the per-round
figures) is marked "inside the noise": another run on the same machine could give the other one.

Printed as plain text and written as Markdown with the machine (CPU model, cores, Python, OS)
and the versions of the packages measured.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata

from .harness import Spread

__all__ = ["Row", "machine", "markdown", "text_table", "versions", "with_best"]

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
    spread: Spread | None = None
    inside_noise: bool = False

    @classmethod
    def measured(cls, section: str, name: str, spread: Spread, unit: str, *,
                 ratio: float | None = None, baseline: str = "", note: str = "") -> Row:
        """A row whose value is the median of `spread`."""
        return cls(section, name, spread.median, unit, ratio=ratio, baseline=baseline,
                   note=note, spread=spread)

    def at_most(self, limit: float, shown: str) -> Row:
        """Target: value ≤ `limit` (`shown` is the target as printed)."""
        assert self.value is not None
        self.target, self.met = shown, self.value <= limit
        self.inside_noise = self.spread is not None and self.spread.contains(limit)
        return self

    def at_least(self, limit: float, shown: str) -> Row:
        """Target: value ≥ `limit`."""
        assert self.value is not None
        self.target, self.met = shown, self.value >= limit
        self.inside_noise = self.spread is not None and self.spread.contains(limit)
        return self

    def shown_value(self) -> str:
        return self._format(self.value)

    def shown_spread(self) -> str:
        if self.spread is None:
            return ""
        return f"{self._format(self.spread.low)} to {self._format(self.spread.high)}"

    def _format(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.unit == "µs":
            return f"{value:.2f} µs" if value < 100 else f"{value:.0f} µs"
        if self.unit == "req/s":
            return f"{value:,.0f} req/s"
        if self.unit == "MB":
            return f"{value:.2f} MB"
        if self.unit == "s":
            return f"{value:.3f} s"
        if self.unit == "x":
            return f"{value:.3f}x" if value < 0.1 else f"{value:.2f}x"
        if self.unit == "B":
            return f"{value:,.0f} B"
        return f"{value:,.0f}" if value == int(value) else f"{value:g}"

    def shown_ratio(self) -> str:
        if self.ratio is None:
            return ""
        return f"{self.ratio:.2f}x {self.baseline}".strip()

    def shown_met(self) -> str:
        if self.met is None:
            return ""
        verdict = "met" if self.met else "NOT met"
        return f"{verdict} (inside the noise)" if self.inside_noise else verdict


_HEAD = ("Section", "Contender", "Median", "Spread (IQR)", "Ratio", "Target", "Result", "Note")

SPREAD_NOTE = ("Spread: the interquartile range of the per-round figures (min to max below 4 "
               "rounds); a ratio is taken within each round, then summarised. \"inside the "
               "noise\": the target's limit lies inside that range, so another run could give "
               "the other verdict.")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.section, row.name, row.shown_value(), row.shown_spread(), row.shown_ratio(),
            row.target, row.shown_met(), row.note)


def text_table(rows: list[Row]) -> str:
    cells = [_HEAD, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_HEAD))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
             .rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def with_best(rows: list[Row]) -> list[Row]:
    """`rows` with each one's fastest round in its note (µs rows): on a loaded machine the
    fastest round is the best estimate of a micro-benchmark's own cost, since load only adds."""
    for row in rows:
        if row.spread is not None and row.unit == "µs" and row.spread.best == row.spread.best:
            best = f"best round {row._format(row.spread.best)}"
            row.note = f"{best}; {row.note}" if row.note else best
    return rows


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
