"""python -m bench {budget,capacity,compare,dispatch,items,scale,soak}: each command starts and
stops all it needs (`charts` draws the charts again from saved figures).

Every server listens on 127.0.0.1 only, every run is bounded in time, and every process
started here is stopped by its process group before the command returns.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from app.cli import config_options
from bench import budget as budget_mod
from bench import capacity as capacity_mod
from bench import charts as charts_mod
from bench import compare as compare_mod
from bench import dispatch as dispatch_mod
from bench import items as items_mod
from bench import report
from bench import scale as scale_mod

# Server settings the load commands pass on to `wabahook serve`: the CLI's own typed options
# (`--flush-ms` ... with WABAHOOK_FLUSH_MS ... as their variables), values checked by click.
_SETTINGS = ("flush_ms", "batch_rows", "flush_slots", "pool_size", "max_body")
_wabahook_options = config_options(_SETTINGS)


def _database_option(command: Any) -> Any:
    return click.option(
        "--database-url",
        envvar="DATABASE_URL",
        default=None,
        show_envvar=True,
        help="PostgreSQL server to create the benchmark databases on (they are dropped "
        "afterwards); unset: an embedded PostgreSQL for the length of the run",
    )(command)


def _placement_option(command: Any) -> Any:
    return click.option(
        "--pg-cpu",
        type=click.Choice(["client", "server", "any"]),
        default="client",
        show_default=True,
        help="CPU PostgreSQL runs on: the load generator's (the server keeps its core to "
        "itself, as with a database on its own host), the server's (one core holds the whole "
        "durable path), or any",
    )(command)


def _settings(options: dict[str, Any]) -> dict[str, str]:
    return {name: str(options[name]) for name in _SETTINGS if options.get(name) is not None}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Benchmarks of wabahook: the 5 s budget at a target rate, the highest rate held with a
    short tail, throughput against baselines, cost against body size and settings, and memory
    over a soak."""
    # SIGTERM ends a run as Ctrl-C does: through the `finally`s that stop every process it
    # started (by default, SIGTERM would end this process and leave them running).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _load_options(rate: float, seconds: int) -> Any:
    def decorate(command: Any) -> Any:
        options = [
            click.option(
                "--rate",
                type=float,
                default=rate,
                show_default=True,
                help="requests/s offered (the 360dialog mix)",
            ),
            click.option(
                "--duration",
                type=click.IntRange(1, 3600),
                default=seconds,
                show_default=True,
                help="seconds of load",
            ),
            click.option(
                "--user-rps",
                type=float,
                default=10.0,
                show_default=True,
                help="requests/s per locust user (one connection each)",
            ),
            click.option(
                "--large-rps",
                type=float,
                default=0.0,
                show_default=True,
                help="3 MB bodies/s sent beside the mix",
            ),
            click.option("--large-size", type=int, default=3_000_000, show_default=True),
            click.option("--workers", type=click.IntRange(1, 16), default=1, show_default=True),
            click.option("--seed", type=int, default=1, show_default=True),
        ]
        for option in reversed(options):
            command = option(command)
        return _database_option(_placement_option(_wabahook_options(command)))

    return decorate


@main.command()
@_load_options(rate=200.0, seconds=20)
@click.option(
    "--step",
    is_flag=True,
    help="step the rate instead: the highest one held with p99 < 100 ms, against the typical "
    "receiver's (`capacity` with its defaults)",
)
@click.pass_context
def budget(ctx: click.Context, step: bool, **options: Any) -> None:
    """Does this host hold the traffic inside the 5 s budget? Exit 1 on any miss."""
    if step:
        shared = ("database_url", "pg_cpu", *_SETTINGS)
        ctx.invoke(capacity, **{name: options[name] for name in shared if name in options})
        return  # capacity exits with its own verdict
    ok = budget_mod.run(command="budget", **_load_kwargs(options), warmup=0.0)
    sys.exit(0 if ok else 1)


@main.command()
@_load_options(rate=1000.0, seconds=180)
@click.option(
    "--warmup",
    type=float,
    default=None,
    help="seconds before the memory baseline is taken [default: a quarter of the run, at most 60]",
)
def soak(warmup: float | None, **options: Any) -> None:
    """Steady load for minutes: RSS after warm-up and at the end, and the latency histogram."""
    seconds = options["duration"]
    warm = warmup if warmup is not None else min(60.0, seconds / 4)
    ok = budget_mod.run(command="soak", **_load_kwargs(options), warmup=warm)
    sys.exit(0 if ok else 1)


def _load_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "rate": options["rate"],
        "seconds": options["duration"],
        "user_rps": options["user_rps"],
        "large_rps": options["large_rps"],
        "large_size": options["large_size"],
        "workers": options["workers"],
        "settings": _settings(options),
        "database_url": options["database_url"],
        "pg_cpu": options["pg_cpu"],
        "seed": options["seed"],
    }


def _measured_run_duration(default: float) -> Any:
    # compare and scale repeat short measured runs; the load commands' --duration is one run.
    return click.option(
        "--duration",
        type=click.FloatRange(1, 600),
        default=default,
        show_default=True,
        help="seconds per measured run",
    )


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


@main.command()
@_measured_run_duration(default=20.0)
@click.option(
    "--connections",
    default="64,256",
    show_default=True,
    help="comma-separated connection counts; ratios and targets use the first",
)
@click.option(
    "--body",
    default="cloud-text-1024",
    show_default=True,
    help="cloud-text-<bytes> (one Cloud text message of that size) or mix "
    "(single-event Cloud and On-Premise bodies, 3 statuses per inbound)",
)
@click.option(
    "--half/--no-half",
    default=True,
    show_default=True,
    help="also pace wabahook at half its maximum throughput",
)
@_wabahook_options
@_placement_option
@_database_option
def compare(
    duration: float,
    connections: str,
    body: str,
    half: bool,
    database_url: str | None,
    pg_cpu: str,
    **options: Any,
) -> None:
    """Requests/s, latency and RSS of bare ASGI, wabahook and a typical receiver, same run."""
    ok = compare_mod.run(
        seconds=duration,
        connections=_ints(connections),
        body=body,
        database_url=database_url,
        pg_cpu=pg_cpu,
        half=half,
        settings=_settings(options),
    )
    sys.exit(0 if ok else 1)


@main.command()
@_measured_run_duration(default=10.0)
@click.option(
    "--start", type=click.FloatRange(1), default=250.0, show_default=True, help="first rate, /s"
)
@click.option(
    "--max-rate",
    type=click.FloatRange(1),
    default=64_000.0,
    show_default=True,
    help="the search doubles no higher",
)
@click.option(
    "--precision",
    type=click.FloatRange(0.01, 1),
    default=0.1,
    show_default=True,
    help="bisect until the lowest rate missed is within this share of the highest held",
)
@click.option(
    "--max-steps",
    type=click.IntRange(1, 40),
    default=12,
    show_default=True,
    help="measured steps per server, at most",
)
@click.option(
    "--per-connection",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="requests/s offered per open connection (as budget's --user-rps)",
)
@click.option(
    "--servers",
    "names",
    default="wabahook,typical",
    show_default=True,
    help="comma-separated, from wabahook, typical and bare (bare shows the client's ceiling)",
)
@click.option(
    "--body",
    default="mix",
    show_default=True,
    help="mix (single-event Cloud and On-Premise bodies, 3 statuses per inbound) or "
    "cloud-text-<bytes>, as compare's",
)
@_wabahook_options
@_placement_option
@_database_option
def capacity(
    duration: float,
    start: float,
    max_rate: float,
    precision: float,
    max_steps: int,
    per_connection: float,
    names: str,
    body: str,
    database_url: str | None,
    pg_cpu: str,
    **options: Any,
) -> None:
    """The highest Poisson rate each receiver holds with p99 under 100 ms and no errors:
    wabahook against the typical receiver, open loop, the rate doubled then bisected."""
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = set(chosen) - set(capacity_mod.SERVERS)
    if unknown or not chosen:
        raise click.BadParameter(
            f"unknown servers: {', '.join(sorted(unknown))}", param_hint="--servers"
        )
    if start > max_rate:
        raise click.BadParameter("must not exceed --max-rate", param_hint="--start")
    ok = capacity_mod.run(
        names=chosen,
        seconds=duration,
        start=start,
        max_rate=max_rate,
        precision=precision,
        max_steps=max_steps,
        per_connection=per_connection,
        body=body,
        database_url=database_url,
        pg_cpu=pg_cpu,
        settings=_settings(options),
    )
    sys.exit(0 if ok else 1)


@main.command()
@click.option(
    "--capacity",
    "capacity_json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="capacity figures [default: the newest in bench/results]",
)
@click.option(
    "--compare",
    "compare_json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="compare figures [default: the newest in bench/results]",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=charts_mod.DOCS_DIR,
    show_default=True,
    help="directory the PNGs are written to",
)
def charts(capacity_json: Path | None, compare_json: Path | None, out: Path) -> None:
    """Draw the charts again from saved figures: latency against rate (capacity) and
    throughput against connections (compare)."""
    drawn = False
    for name, given, draw in (
        ("capacity", capacity_json, charts_mod.save_latency_vs_rate),
        ("compare", compare_json, charts_mod.save_throughput_vs_connections),
    ):
        path = given or report.latest(name)
        if path is None:
            print(f"  no {name} figures in {report.RESULTS_DIR}: run `python -m bench {name}`")
            continue
        print(f"  {name:<10} from {path}")
        drawn = bool(draw(json.loads(path.read_text()), [out])) or drawn
    sys.exit(0 if drawn or not charts_mod.available() else 1)


@main.command()
@_measured_run_duration(default=8.0)
@click.option(
    "--only",
    type=click.Choice(["size", "flush", "batch", "workers", "copy"]),
    multiple=True,
    help="run only these dimensions (repeatable) [default: all]",
)
@click.option("--sizes", default="1024,65536,1048576,3000000", show_default=True)
@click.option("--flush-ms-values", default="1,2,5,10,20", show_default=True)
@click.option("--batch-rows-values", default="16,64,256,4000", show_default=True)
@click.option("--connections", type=int, default=64, show_default=True)
@_placement_option
@_database_option
def scale(
    duration: float,
    only: tuple[str, ...],
    sizes: str,
    flush_ms_values: str,
    batch_rows_values: str,
    connections: int,
    pg_cpu: str,
    database_url: str | None,
) -> None:
    """How cost grows: body size, WABAHOOK_FLUSH_MS, WABAHOOK_BATCH_ROWS, 1 vs 2 workers,
    and PostgreSQL's own ingest rate (copy)."""
    ok = scale_mod.run(
        seconds=duration,
        dimensions=only or ("size", "flush", "batch", "workers", "copy"),
        sizes=_ints(sizes),
        flush_ms=[float(v) for v in flush_ms_values.split(",")],
        batch_rows=_ints(batch_rows_values),
        connections=connections,
        pg_cpu=pg_cpu,
        database_url=database_url,
    )
    sys.exit(0 if ok else 1)


@main.command()
@click.option(
    "--only",
    type=click.Choice(dispatch_mod.PARTS),
    multiple=True,
    help="run only these parts (repeatable) [default: all]",
)
@click.option(
    "--events", type=click.IntRange(1), default=20_000, show_default=True, help="throughput backlog"
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="WABAHOOK_FORWARD_CONCURRENCY, and the baseline client's requests in flight",
)
@click.option("--rate", type=float, default=1000.0, show_default=True, help="latency: events/s")
@click.option("--latency-duration", type=click.FloatRange(1, 600), default=20.0, show_default=True)
@_measured_run_duration(default=10.0)
@click.option("--rounds", type=click.IntRange(1, 10), default=2, show_default=True)
@click.option("--connections", type=int, default=64, show_default=True, help="ingestion: wrk's")
@click.option(
    "--streams",
    default=",".join(dispatch_mod.STREAMS),
    show_default=True,
    help="ingestion: many-contacts (a fresh wa_id per body) and/or one-contact (compare's "
    "default stream, one wa_id)",
)
@click.option(
    "--backlog",
    type=click.IntRange(1),
    default=dispatch_mod.SMALL_BACKLOG,
    show_default=True,
    help="memory: a backlog measured beside the 10,000 one (e.g. 1000000)",
)
@click.option(
    "--receiver-down",
    type=click.FloatRange(0, 600),
    default=5.0,
    show_default=True,
    help="memory: seconds the receiver refuses connections at the start",
)
@_placement_option
@_database_option
def dispatch(
    only: tuple[str, ...],
    duration: float,
    latency_duration: float,
    streams: str,
    **options: Any,
) -> None:
    """The dispatcher: events/s handed on, latency at a fixed rate, what it costs ingestion,
    and its memory with a large backlog."""
    names = [s.strip() for s in streams.split(",") if s.strip()]
    unknown = set(names) - set(dispatch_mod.STREAMS)
    if unknown or not names:
        raise click.BadParameter(
            f"unknown streams: {', '.join(sorted(unknown))}", param_hint="--streams"
        )
    ok = dispatch_mod.run(
        parts=only or dispatch_mod.PARTS,
        ingest_seconds=duration,
        latency_seconds=latency_duration,
        streams=names,
        **options,
    )
    sys.exit(0 if ok else 1)


@main.command()
def items() -> None:
    """What forward_mode=items costs to build against bodies and events, per body of the mix."""
    items_mod.run()


if __name__ == "__main__":
    main()
