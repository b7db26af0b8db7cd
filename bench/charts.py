"""PNG charts of the saved figures: latency against offered rate (`capacity`), throughput
against connections (`compare`).

matplotlib is optional (the `bench` extra installs it). Without it every command still runs
and prints one line saying the charts were skipped. The charts are drawn from the JSON each
command saves, so `python -m bench charts` draws them again from the newest results.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parent.parent
DOCS_DIR = ROOT / "docs" / "bench"  # stable paths, for BENCHMARKS.md to embed
LATENCY_CHART = "latency-vs-rate.png"
THROUGHPUT_CHART = "throughput-vs-connections.png"
SKIPPED = "charts skipped: matplotlib is not installed (pip install -e '.[bench]')"

COLOURS = {"wabahook": "tab:blue", "typical": "tab:orange", "bare": "tab:green"}
CONTESTANTS = ("bare", "wabahook", "typical")  # compare's, in its order
# Steps of the capacity search other than "held": marker, legend entry.
OUTCOME_MARKERS = {
    "missed": ("x", "a step the server missed"),
    "client": ("s", "a step wrk could not offer"),
}
SIZE = (8.0, 5.0)  # inches
DPI = 120


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def save_latency_vs_rate(data: dict[str, Any], directories: Sequence[Path]) -> list[Path]:
    """Draw `capacity`'s saved figures into each directory; the paths written."""
    return _save(latency_vs_rate, data, directories, LATENCY_CHART)


def save_throughput_vs_connections(data: dict[str, Any], directories: Sequence[Path]) -> list[Path]:
    """Draw `compare`'s saved figures into each directory; the paths written."""
    return _save(throughput_vs_connections, data, directories, THROUGHPUT_CHART)


def _save(
    draw: Callable[[dict[str, Any]], Figure],
    data: dict[str, Any],
    directories: Sequence[Path],
    name: str,
) -> list[Path]:
    if not available():
        print(f"  {SKIPPED}")
        return []
    figure = draw(data)
    paths = []
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        figure.savefig(path, dpi=DPI)
        paths.append(path)
    print(f"  chart      {name} in " + ", ".join(_shown(p.parent) for p in paths))
    return paths


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, layout="constrained")
    return figure, figure.add_subplot()


def _caption(figure: Figure, data: dict[str, Any], *more: str) -> None:
    env = data.get("environment", {})
    parts = [
        str(env.get("cpu", "")).split(", usable")[0],
        f"wabahook {env['wabahook']}" if env.get("wabahook") else "",
        *more,
    ]
    figure.supxlabel("; ".join(p for p in parts if p), fontsize=7, color="0.35")


def _plain_numbers(axis: Any) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axis.set_minor_formatter(NullFormatter())


def latency_vs_rate(data: dict[str, Any]) -> Figure:
    """p50 and p99 against offered Poisson rate, one colour per server, with the 5 s budget,
    the 250 ms median target and the capacity's p99 limit as horizontal lines."""
    figure, ax = _figure()
    lowest: list[float] = []
    outcomes: set[str] = set()
    for number, server in enumerate(data.get("servers", [])):
        name = server["name"]
        colour = COLOURS.get(name, f"C{number + 3}")
        steps = sorted(server.get("steps", []), key=lambda s: s["rate"])
        for key, style, label in (("p99_ms", "-", "p99"), ("p50_ms", "--", "p50")):
            shown = [s for s in steps if s[key] > 0]  # a log axis has no 0
            if not shown:
                continue
            lowest.append(min(s[key] for s in shown))
            ax.plot(
                [s["rate"] for s in shown],
                [s[key] for s in shown],
                style,
                marker="o",
                markersize=4,
                color=colour,
                label=f"{name} {label}",
            )
            for outcome, (marker, _) in OUTCOME_MARKERS.items():
                marked = [s for s in shown if s.get("outcome") == outcome]
                if marked:
                    outcomes.add(outcome)
                    ax.plot(
                        [s["rate"] for s in marked],
                        [s[key] for s in marked],
                        marker,
                        color=colour,
                        markerfacecolor="none",
                        markersize=9,
                    )
        if server.get("capacity"):
            bound = "≥ " if server.get("limited") or server.get("ceiling") else ""
            ax.axvline(
                server["capacity"],
                color=colour,
                linestyle=":",
                linewidth=1.2,
                label=f"{name} capacity {bound}{server['capacity']:,.0f}/s",
            )
    lines = (
        (data.get("budget_ms", 5000.0), "tab:red", "-.", "360dialog's 5 s budget"),
        (data.get("median_target_ms", 250.0), "tab:purple", "--", "median target 250 ms"),
        (data.get("p99_limit_ms", 100.0), "0.5", ":", "the capacity's p99 limit, 100 ms"),
    )
    for value, colour, style, label in lines:
        ax.axhline(value, color=colour, linestyle=style, linewidth=1.2, label=label)
    for outcome in sorted(outcomes):
        marker, label = OUTCOME_MARKERS[outcome]
        ax.plot([], [], marker, color="0.3", markerfacecolor="none", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _doubling_ticks(ax, [s["rate"] for server in data.get("servers", []) for s in server["steps"]])
    _plain_numbers(ax.yaxis)
    ax.set_ylim(bottom=min([*lowest, 1.0]) / 2, top=max(lines[0][0] * 2, ax.get_ylim()[1]))
    ax.set_xlabel("offered rate, webhooks/s (Poisson arrivals, open loop)")
    ax.set_ylabel("latency from the send, ms (log)")
    ax.set_title("Latency against offered rate")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    _caption(figure, data, f"{data.get('seconds', '?')} s per step, body {data.get('body', '?')}")
    return figure


def _doubling_ticks(ax: Axes, rates: Sequence[float]) -> None:
    """x ticks at the rates the search doubles through (the lowest rate tried, times 2^k)."""
    from matplotlib.ticker import FixedLocator

    if rates:
        low, high = min(rates), max(rates)
        ticks = [low * 2**k for k in range(int(math.log2(high / low)) + 2)]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
    _plain_numbers(ax.xaxis)


_CONNS = re.compile(r"^(\d+) conns$")


def _connections(point: dict[str, Any]) -> int | None:
    """The connection count of a full-speed point; None for a paced one."""
    if point.get("rate"):
        return None
    if point.get("connections"):
        return int(point["connections"])
    match = _CONNS.match(str(point.get("label", "")))
    return int(match.group(1)) if match else None


def throughput_vs_connections(data: dict[str, Any]) -> Figure:
    """Requests/s against open connections for compare's bare, wabahook and typical."""
    figure, ax = _figure()
    contests = {c["name"]: c for c in data.get("contests", [])}
    for name in CONTESTANTS:
        if name not in contests:
            continue
        points = sorted(
            (n, p["rps"]) for p in contests[name]["points"] if (n := _connections(p)) is not None
        )
        if not points:
            continue
        ax.plot(
            *zip(*points, strict=True),
            marker="o",
            color=COLOURS[name],
            label={"typical": "typical receiver", "bare": "bare ASGI (stores nothing)"}.get(
                name, name
            ),
        )
        for n, rps in points:
            ax.annotate(
                f"{rps:,.0f}",
                (n, rps),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
                color=COLOURS[name],
            )
    ax.set_xscale("log", base=2)
    _plain_numbers(ax.xaxis)
    _plain_numbers(ax.yaxis)
    ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.05)
    ax.set_xlabel("open connections (wrk, closed loop)")
    ax.set_ylabel("requests/s answered 200")
    ax.set_title("Throughput against connections, one server core")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _caption(figure, data, f"body {data.get('body', '?')}")
    return figure
