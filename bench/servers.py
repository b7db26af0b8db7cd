"""The servers under test, each started the way an operator would run it, on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bench import procs

ROOT = Path(__file__).resolve().parent.parent
# Every contestant runs on the same event loop and HTTP parser, without access logs.
_UVICORN = [
    "--host",
    "127.0.0.1",
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
    # Start from a clean slate: a WABAHOOK_* or DATABASE_URL of the shell must not leak in.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("WABAHOOK_") and k != "DATABASE_URL"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def wabahook_argv() -> list[str]:
    script = Path(sys.executable).parent / "wabahook"
    if script.exists():
        return [str(script)]
    if found := shutil.which("wabahook"):
        return [found]
    return [sys.executable, "-c", "from app.cli import main; main()"]


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
    """`wabahook serve` with durable group commit; `settings` are WABAHOOK_* values."""
    port = procs.free_port()
    env = child_env(
        {
            "DATABASE_URL": database_url,
            "WABAHOOK_DATA_DIR": str(data_dir),
            "WABAHOOK_LOG_LEVEL": "warning",
            **{f"WABAHOOK_{k.upper()}": v for k, v in (settings or {}).items()},
        }
    )
    # Migrate once before serving, as a deployment does: workers then start on a ready schema.
    migrate = subprocess.run(
        [*wabahook_argv(), "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"wabahook migrate failed:\n{migrate.stdout}{migrate.stderr}")
    host = ["--host", "127.0.0.1", "--port", str(port)]
    argv = [*wabahook_argv(), "serve", *host, "--workers", str(workers)]
    name = f"wabahook ({workers} worker{'s' if workers > 1 else ''})"
    with procs.server(
        name, argv, port=port, cpus=cpus, env=env, log=log, ready_path="/readyz"
    ) as server:
        yield server


@contextmanager
def bare(*, cpus: frozenset[int] | None, log: Path, workers: int = 1) -> Iterator[procs.Server]:
    port = procs.free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baselines.bare:app",
        *_UVICORN,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with procs.server(
        "bare ASGI", argv, port=port, cpus=cpus, env=child_env({}), log=log
    ) as server:
        yield server


@contextmanager
def typical(
    *, database_url: str, cpus: frozenset[int] | None, log: Path, workers: int = 1
) -> Iterator[procs.Server]:
    port = procs.free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baselines.typical:app",
        *_UVICORN,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env = child_env({"DATABASE_URL": database_url})
    with procs.server("typical FastAPI", argv, port=port, cpus=cpus, env=env, log=log) as server:
        yield server
