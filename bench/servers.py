"""The servers under test, each started the way an operator would run it, on 127.0.0.1.

Each listens on a loopback socket bound before it started (`--fd`), so no port is picked and
given up before the server takes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bench import procs
from tests.support.cli import run_wabahook, serve_argv
from tests.support.environment import scrubbed_environment, settings_environment

ROOT = Path(__file__).resolve().parent.parent
# Every contestant runs on the same event loop and HTTP parser, without access logs.
_UVICORN = [
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
    "--backlog",
    "4096",
]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """A clean slate (no WABAHOOK_* or DATABASE_URL of the shell), this checkout importable,
    then `extra`."""
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return scrubbed_environment({"PYTHONPATH": pythonpath, **extra})


def _uvicorn(app: str, fd: int, workers: int) -> list[str]:
    """uvicorn serving `app` on the inherited, listening socket `fd`."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        *_UVICORN,
        "--fd",
        str(fd),
        "--workers",
        str(workers),
    ]


@contextmanager
def wabahook(
    *,
    database_url: str,
    data_dir: Path,
    cpus: frozenset[int] | None,
    log: Path,
    workers: int = 1,
    settings: Mapping[str, str] | None = None,
) -> Iterator[procs.Server]:
    """`wabahook serve` with durable group commit; `settings` are Config fields."""
    env = child_env(
        settings_environment(
            {
                "database_url": database_url,
                "data_dir": data_dir,
                "log_level": "warning",
                **(settings or {}),
            }
        )
    )
    # Migrate once before serving, as a deployment does: workers then start on a ready schema.
    migrate = run_wabahook("migrate", env=env)
    if migrate.returncode != 0:
        output = (migrate.stdout + migrate.stderr).decode(errors="replace")
        raise RuntimeError(f"wabahook migrate failed:\n{output}")
    name = f"wabahook ({workers} worker{'s' if workers > 1 else ''})"
    with procs.server(
        name,
        lambda fd: serve_argv(fd, "--workers", str(workers)),
        cpus=cpus,
        env=env,
        log=log,
        ready_path="/readyz",
    ) as server:
        yield server


@contextmanager
def bare(*, cpus: frozenset[int] | None, log: Path, workers: int = 1) -> Iterator[procs.Server]:
    with procs.server(
        "bare ASGI",
        lambda fd: _uvicorn("bench.baselines.bare:app", fd, workers),
        cpus=cpus,
        env=child_env({}),
        log=log,
    ) as server:
        yield server


@contextmanager
def typical(
    *, database_url: str, cpus: frozenset[int] | None, log: Path, workers: int = 1
) -> Iterator[procs.Server]:
    with procs.server(
        "typical FastAPI",
        lambda fd: _uvicorn("bench.baselines.typical:app", fd, workers),
        cpus=cpus,
        env=child_env({"DATABASE_URL": database_url}),
        log=log,
    ) as server:
        yield server
