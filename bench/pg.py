"""The PostgreSQL a benchmark writes to: one server per run, one fresh database per server
under test.

With no DSN given, an embedded PostgreSQL (the app's own `EmbeddedPostgres`, from the pip
wheel) runs in a temporary directory for the length of the run and is pinned like the other
processes; with a DSN, databases are created on that server and dropped afterwards.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

from bench import procs
from tests.support.databases import create_database, drop_database, execute, fetch
from tests.support.postgres import RunningPostgres, temporary_postgres


class Postgres:
    """Use as a context manager; `create_database` gives each contestant its own database."""

    def __init__(self, dsn: str | None, cpus: frozenset[int] | None) -> None:
        self._external = dsn
        self._cpus = cpus
        self._stack = ExitStack()
        self._embedded: RunningPostgres | None = None
        self._databases: list[str] = []
        self.dsn = dsn or ""

    def __enter__(self) -> Postgres:
        if self._external is None:
            with ExitStack() as stack:
                self._embedded = stack.enter_context(temporary_postgres(prefix="wbench-"))
                self.dsn = self._embedded.dsn
                procs.pin_tree(self._embedded.postmaster_pid, self._cpus)
                self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._stack:  # the embedded server, stopped and removed last
            if self._external is not None:
                for name in self._databases:
                    asyncio.run(drop_database(self.dsn, name))

    @property
    def embedded(self) -> bool:
        return self._embedded is not None

    def postmaster_pid(self) -> int:
        """The server's root process, for pinning and measuring (embedded only)."""
        assert self._embedded is not None, "only the embedded server runs here"
        return self._embedded.postmaster_pid

    def pids(self) -> list[int]:
        return [self.postmaster_pid()] if self.embedded else []

    def create_database(self, name: str) -> str:
        dsn = asyncio.run(create_database(self.dsn, name, replace=True))
        self._databases.append(name)
        return dsn

    def checkpoint(self) -> None:
        """Write out what earlier runs left dirty, so their checkpoint does not land in the next."""
        asyncio.run(execute(self.dsn, "CHECKPOINT"))

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
