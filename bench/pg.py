"""The PostgreSQL a benchmark writes to: one server per run, one fresh database per server
under test.

With no DSN given, an embedded PostgreSQL (the app's own `EmbeddedPostgres`, from the pip
wheel) runs in a temporary directory for the length of the run and is pinned like the other
processes; with a DSN, databases are created on that server and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.embedded import PGDATA_NAME, EmbeddedPostgres
from bench import procs

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


async def _execute(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


class Postgres:
    """Use as a context manager; `create_database` gives each contestant its own database."""

    def __init__(self, dsn: str | None, cpus: frozenset[int] | None) -> None:
        self._external = dsn
        self._cpus = cpus
        self._workdir: Path | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._databases: list[str] = []
        self.dsn = dsn or ""

    def __enter__(self) -> Postgres:
        if self._external is None:
            # Short path: the unix socket lives in pgdata and its path must fit in sun_path.
            self._workdir = Path(tempfile.mkdtemp(prefix="wbench-"))
            self._embedded = EmbeddedPostgres(self._workdir)
            self.dsn = self._embedded.start()
            procs.pin_tree(self.postmaster_pid(), self._cpus)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._external is not None:
                for name in self._databases:
                    asyncio.run(_execute(self.dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        finally:
            if self._embedded is not None:
                self._embedded.stop()
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)

    @property
    def embedded(self) -> bool:
        return self._embedded is not None

    def postmaster_pid(self) -> int:
        """The server's root process, for pinning and measuring (embedded only)."""
        assert self._workdir is not None, "only the embedded server runs here"
        text = (self._workdir / PGDATA_NAME / "postmaster.pid").read_text()
        return int(text.split("\n", 1)[0])

    def pids(self) -> list[int]:
        return [self.postmaster_pid()] if self.embedded else []

    def create_database(self, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a plain database name: {name}")
        asyncio.run(
            _execute(
                self.dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"
            )
        )
        self._databases.append(name)
        return with_database(self.dsn, name)

    def checkpoint(self) -> None:
        """Write out what earlier runs left dirty, so their checkpoint does not land in the next."""
        asyncio.run(_execute(self.dsn, "CHECKPOINT"))

    def describe(self) -> str:
        async def run() -> str:
            rows = await fetch(
                self.dsn,
                "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[]) "
                "ORDER BY name",
                ["fsync", "synchronous_commit", "shared_buffers", "wal_sync_method"],
            )
            version = (await fetch(self.dsn, "SHOW server_version"))[0][0]
            settings = ", ".join(
                f"{r['name']}={r['setting']}{'x' + r['unit'] if r['unit'] else ''}" for r in rows
            )
            return (
                f"PostgreSQL {version} ({'embedded' if self.embedded else 'external'}; {settings})"
            )

        return asyncio.run(run())
