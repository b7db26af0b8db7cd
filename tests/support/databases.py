"""Databases on a PostgreSQL server: DSNs, one-shot SQL, databases made and dropped.

Every helper opens its own connection and closes it, whatever happens.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


@asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection, closed on the way out."""
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def execute(dsn: str, *statements: str) -> None:
    """Run statements one after another on one connection."""
    async with connected(dsn) as connection:
        for statement in statements:
            await connection.execute(statement)


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query."""
    async with connected(dsn) as connection:
        return list(await connection.fetch(query, *args))


def _plain(name: str) -> str:
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name}")
    return name


async def create_database(
    server_dsn: str, name: str, *, template: str | None = None, replace: bool = False
) -> str:
    """Create database `name` (from `template`; first dropping one of that name if `replace`)
    on the server; return its DSN."""
    statements = [f"DROP DATABASE IF EXISTS {_plain(name)} WITH (FORCE)"] if replace else []
    from_template = f" TEMPLATE {_plain(template)}" if template else ""
    statements.append(f"CREATE DATABASE {_plain(name)}{from_template}")
    await execute(server_dsn, *statements)
    return with_database(server_dsn, name)


async def drop_database(server_dsn: str, name: str) -> None:
    """Drop database `name` if it exists, ending its connections."""
    await execute(server_dsn, f"DROP DATABASE IF EXISTS {_plain(name)} WITH (FORCE)")


@contextmanager
def fresh_database(server_dsn: str, template_database: str) -> Iterator[str]:
    """A new database cloned from `template_database`, dropped afterwards; yields its DSN."""
    name = f"wabahook_test_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(create_database(server_dsn, name, template=template_database))
    try:
        yield url
    finally:
        asyncio.run(drop_database(server_dsn, name))
