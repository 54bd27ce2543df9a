"""The benchmark chart: per-request cost side by side, drawn from the rows of one run.

Two panels of horizontal bars (µs, lower is better), both RS256 with 2048-bit keys:

- verifying one token: m2m_guard cached and uncached, PyJWT, authlib and joserfc, with the raw
  `cryptography` signature check drawn as the limit a full verification cannot beat;
- one request through a Starlette app in process: no auth, m2m_guard with a repeated and with a
  new token, the naive PyJWT middleware and `BaseHTTPMiddleware` + PyJWT, with no auth plus the
  raw signature check as the limit for a new token.

`series` picks the figures (no plotting library needed); `render` draws them with matplotlib
(the bench extra) as a small SVG whose text stays text, with no timestamp of its own: the run's
date and machine are in its title. `make bench` draws the chart of the run it just made;

    python -m benchmarks.chart [RESULTS.md] [--out FILE.svg]

draws it again from a run's saved Markdown (default: benchmarks/results/latest.md, into
docs/images/benchmarks.svg), without measuring anything.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .report import Row

__all__ = ["Panel", "from_markdown", "render", "series", "subtitle"]

RESULTS = Path(__file__).parent / "results" / "latest.md"
CHART = Path(__file__).parent.parent / "docs" / "images" / "benchmarks.svg"

VERIFY_SECTION = "verify RS256 (2048-bit)"
ASGI_SECTION = "ASGI in-process (Starlette, RS256)"
VERIFY_BARS = (("TokenVerifier cached", "m2m_guard, cached token"),
               ("TokenVerifier uncached", "m2m_guard, uncached"),
               ("authlib", "authlib"), ("joserfc", "joserfc"), ("PyJWT jwt.decode", "PyJWT"))
ASGI_BARS = (("no auth", "no auth"), ("m2m_guard, repeated token", "m2m_guard, cached token"),
             ("m2m_guard, unique tokens", "m2m_guard, new token"),
             ("naive PyJWT middleware", "naive PyJWT middleware"),
             ("BaseHTTPMiddleware + PyJWT", "BaseHTTPMiddleware + PyJWT"))


@dataclass(frozen=True)
class Panel:
    """One panel: its title, its bars (label, µs) and its limit line (label, µs)."""

    title: str
    bars: tuple[tuple[str, float], ...]
    limit: tuple[str, float]


def _value(rows: list[Row], section: str, name: str) -> float:
    for row in rows:
        if row.section == section and row.name == name:
            if row.value is None:
                raise ValueError(f"no figure for {section!r} / {name!r} in this run")
            return row.value
    raise ValueError(f"no row {section!r} / {name!r} in this run")


def series(rows: list[Row]) -> tuple[Panel, Panel]:
    """The chart's figures, taken from the run's rows (raises ValueError when one is missing)."""
    raw = _value(rows, VERIFY_SECTION, "raw cryptography")
    verify = Panel("Verifying one RS256 token",
                   tuple((label, _value(rows, VERIFY_SECTION, name))
                         for name, label in VERIFY_BARS),
                   ("raw signature check: the limit", raw))
    no_auth = _value(rows, ASGI_SECTION, "no auth")
    asgi = Panel("One request through a Starlette app, in process",
                 tuple((label, _value(rows, ASGI_SECTION, name)) for name, label in ASGI_BARS),
                 ("no auth + raw signature check: the limit for a new token", no_auth + raw))
    return verify, asgi


def render(rows: list[Row], *, subtitle: str) -> str:
    """The chart of `rows` as SVG text; `subtitle` names the run (date, machine)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    panels = series(rows)
    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "m2m_guard",
                                "font.size": 9, "font.family": "sans-serif"})
    figure, axes = pyplot.subplots(2, 1, figsize=(7.2, 5.0), layout="constrained")
    for axis, panel in zip(axes, panels, strict=True):
        labels = [label for label, _ in panel.bars][::-1]
        values = [value for _, value in panel.bars][::-1]
        colours = ["#2b6cb0" if label.startswith("m2m_guard") else
                   "#a0aec0" if label == "no auth" else "#ed8936" for label in labels]
        axis.barh(labels, values, color=colours, height=0.6)
        top = max(max(values), panel.limit[1])
        for y, value in enumerate(values):
            axis.text(value + top * 0.01, y, f"{value:.1f} µs", va="center", fontsize=8)
        axis.axvline(panel.limit[1], color="#c53030", linestyle="--", linewidth=1.2)
        axis.text(panel.limit[1] + top * 0.01, len(values) - 0.45,
                  f"{panel.limit[0]} ({panel.limit[1]:.1f} µs)", color="#c53030", fontsize=8,
                  va="bottom")
        axis.set_xlim(0, top * 1.25)
        axis.set_ylim(-0.6, len(values) + 0.2)
        axis.set_title(panel.title, loc="left", fontsize=10, fontweight="bold")
        axis.set_xlabel("µs per call (median; lower is better)")
        axis.spines[["top", "right"]].set_visible(False)
    figure.suptitle(f"m2m_guard benchmarks: {subtitle}", fontsize=9, x=0.01,
                    horizontalalignment="left")
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None, "Creator": "benchmarks/chart.py"})
    pyplot.close(figure)
    return out.getvalue()


def subtitle(when: str, mode: str, machine: dict[str, str]) -> str:
    """The run a chart shows: date, mode and machine, as in the run's Markdown header."""
    return f"{when} ({mode}), {machine['CPU']}, {machine['Cores']} cores, {machine['Python']}"


def from_markdown(text: str) -> tuple[list[Row], str]:
    """The rows (µs figures only) and the subtitle of a run's saved Markdown."""
    run = re.search(r"^Run: (.+?) \((\w+)\)\.", text, re.MULTILINE)
    if run is None:
        raise ValueError("not a benchmark run's Markdown: no 'Run:' line")
    machine = dict(re.findall(r"^\| (CPU|Cores|Python|OS) \| (.+?) \|$", text, re.MULTILINE))
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if len(cells) == 7 and cells[2].endswith(" µs"):
            rows.append(Row(cells[0], cells[1], float(cells[2].removesuffix(" µs")), "µs"))
        elif len(cells) == 7 and cells[2] == "n/a":
            rows.append(Row(cells[0], cells[1], None, "µs"))
    return rows, subtitle(run.group(1), run.group(2), machine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chart",
                                     description="Draw the chart of a saved benchmark run.")
    parser.add_argument("results", type=Path, nargs="?", default=RESULTS)
    parser.add_argument("--out", type=Path, default=CHART)
    args = parser.parse_args(argv)
    rows, title = from_markdown(args.results.read_text(encoding="utf-8"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(rows, subtitle=title), encoding="utf-8")
    print(f"written: {args.out} (from {args.results})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
