"""`schema.sql` and the numbered migrations describe the same database (procrastinate's
tests/migration/test_migration.py), and `migrate` is idempotent and safe to run at once."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import app.sql
from app.sql import migrations, queries, schema
from app.storage import migrate
from tests.support.databases import create_database, drop_database, execute
from tests.support.waiting import wait_until

pytestmark = pytest.mark.anyio

MIGRATIONS_DIR = Path(app.sql.__file__).parent / "migrations"
MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
BOOKKEEPING = "wabahook_migrations"

# Everything in the public schema that a migration can create or change.
CATALOG_QUERIES: dict[str, str] = {
    "columns": """
        SELECT c.table_name, c.column_name, c.data_type, c.udt_name,
               c.character_maximum_length, c.numeric_precision, c.is_nullable,
               c.column_default, c.is_identity, c.identity_generation, c.is_generated,
               c.generation_expression
        FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
        ORDER BY 1, 2""",
    "tables": """
        SELECT c.relname, c.relkind, c.relpersistence
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        ORDER BY 1""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' ORDER BY 1, 2""",
    "constraints": """
        SELECT cl.relname, co.conname, co.contype, pg_get_constraintdef(co.oid) AS definition
        FROM pg_constraint co
        JOIN pg_class cl ON cl.oid = co.conrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        WHERE n.nspname = 'public' ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS arguments,
               pg_get_functiondef(p.oid) AS definition
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p') ORDER BY 1, 2""",
    "triggers": """
        SELECT cl.relname, t.tgname, pg_get_triggerdef(t.oid) AS definition
        FROM pg_trigger t
        JOIN pg_class cl ON cl.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        WHERE n.nspname = 'public' AND NOT t.tgisinternal ORDER BY 1, 2""",
    "types": """
        SELECT t.typname, t.typtype,
               array(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid
                     ORDER BY e.enumsortorder) AS labels
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') ORDER BY 1""",
    "views": """
        SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1""",
}

Catalog = dict[str, list[dict[str, Any]]]


def _normalise_index(row: dict[str, Any]) -> dict[str, Any]:
    # `CREATE INDEX x ON public.t USING ...`: keep the definition, not the schema spelling.
    definition = re.sub(
        rf"\bON (ONLY )?(public\.)?{re.escape(row['tablename'])}\b", "ON <table>", row["indexdef"]
    )
    return {**row, "indexdef": definition}


async def catalog(connection: asyncpg.Connection, exclude: frozenset[str] = frozenset()) -> Catalog:
    result: Catalog = {}
    for part, query in CATALOG_QUERIES.items():
        rows = [dict(row) for row in await connection.fetch(query)]
        rows = [
            row
            for row in rows
            if not {row.get("table_name"), row.get("relname"), row.get("tablename")} & exclude
        ]
        if part == "indexes":
            rows = [_normalise_index(row) for row in rows]
        result[part] = rows
    return result


@pytest.fixture
async def empty_database(server_dsn: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Make empty databases (not from the migrated template); all are dropped after the test."""
    names: list[str] = []

    async def make() -> str:
        name = f"wabahook_migration_{uuid.uuid4().hex[:12]}"
        url = await create_database(server_dsn, name)
        names.append(name)
        return url

    try:
        yield make
    finally:
        for name in names:
            await drop_database(server_dsn, name)


def test_migration_properly_named() -> None:
    files = sorted(p.name for p in MIGRATIONS_DIR.iterdir() if p.name != "__pycache__")

    assert files, "no migrations"
    for name in files:
        assert MIGRATION_NAME.match(name), f"badly named migration: {name}"
    numbers = [int(MIGRATION_NAME.match(name).group(1)) for name in files]  # type: ignore[union-attr]
    assert len(set(numbers)) == len(numbers), f"duplicate migration numbers: {files}"
    assert numbers == list(range(1, len(numbers) + 1)), f"numbers not contiguous from 0001: {files}"
    # What `migrate` applies is exactly these files, in number order.
    assert [name for name, _ in migrations()] == files


async def test_schema_and_migrations_build_the_same_database(
    empty_database: Callable[[], Awaitable[str]],
) -> None:
    from_schema, from_migrations = await empty_database(), await empty_database()
    a = await asyncpg.connect(from_schema)
    b = await asyncpg.connect(from_migrations)
    try:
        await a.execute(schema())
        applied = await migrate(b)

        assert applied == [name for name, _ in migrations()]
        # schema.sql leaves the bookkeeping to `migrate`, so only that table may differ.
        assert await a.fetchval("SELECT to_regclass($1)", BOOKKEEPING) is None
        assert await b.fetchval("SELECT to_regclass($1)", BOOKKEEPING) is not None
        expected = await catalog(a)
        actual = await catalog(b, exclude=frozenset({BOOKKEEPING}))
    finally:
        await a.close()
        await b.close()
    assert expected["tables"], "schema.sql created no tables"
    for part in CATALOG_QUERIES:
        assert actual[part] == expected[part], f"{part} differ between schema.sql and migrations"


async def test_migrate_is_idempotent(empty_database: Callable[[], Awaitable[str]]) -> None:
    connection = await asyncpg.connect(await empty_database())
    try:
        first = await migrate(connection)
        before = await catalog(connection)
        second = await migrate(connection)
        after = await catalog(connection)
        recorded = await connection.fetch(f"SELECT name FROM {BOOKKEEPING} ORDER BY name")
    finally:
        await connection.close()

    assert first == [name for name, _ in migrations()]
    assert second == []
    assert after == before
    assert [row["name"] for row in recorded] == first


async def _migrate_twice_at_once(url: str) -> tuple[list[str], list[str], list[str]]:
    one, two = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        first, second = await asyncio.gather(migrate(one), migrate(two))
        recorded = await one.fetch(f"SELECT name FROM {BOOKKEEPING} ORDER BY name")
    finally:
        await one.close()
        await two.close()
    return first, second, [row["name"] for row in recorded]


async def test_concurrent_migrate_applies_each_migration_once(
    empty_database: Callable[[], Awaitable[str]],
) -> None:
    # The bookkeeping table exists (an earlier release made it): the advisory lock decides.
    url = await empty_database()
    await execute(url, queries["create_migrations_table"])

    first, second, recorded = await _migrate_twice_at_once(url)

    names = [name for name, _ in migrations()]
    assert sorted(first + second) == names
    assert recorded == names


async def test_concurrent_migrate_on_a_fresh_database(
    empty_database: Callable[[], Awaitable[str]],
) -> None:
    url = await empty_database()
    one, two = await asyncpg.connect(url), await asyncpg.connect(url)
    # Line the two runs up for certain (without this they collide almost always, but not by
    # construction): an open DROP SCHEMA holds the schema lock that creating a table in it
    # needs, so both wait inside their first statement and are let go at the same moment.
    gate = await asyncpg.connect(url)
    try:
        transaction = gate.transaction()
        await transaction.start()
        await gate.execute("DROP SCHEMA public")
        runs = asyncio.gather(migrate(one), migrate(two), return_exceptions=True)
        pids = [one.get_server_pid(), two.get_server_pid()]

        async def both_wait() -> bool:
            waiting = await gate.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE pid = ANY($1::int[]) AND wait_event_type = 'Lock'",
                pids,
            )
            return bool(waiting == 2)

        try:
            await wait_until(both_wait, timeout=10, what="both migrate runs to wait")
        finally:
            await transaction.rollback()
            results = await runs
        recorded = await gate.fetch(f"SELECT name FROM {BOOKKEEPING} ORDER BY name")
    finally:
        for connection in (one, two, gate):
            await connection.close()

    errors = [result for result in results if isinstance(result, BaseException)]
    assert not errors, errors
    applied = [name for result in results if isinstance(result, list) for name in result]
    names = [name for name, _ in migrations()]
    assert sorted(applied) == names
    assert [row["name"] for row in recorded] == names
