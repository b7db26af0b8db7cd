"""Fixtures: a real PostgreSQL (DATABASE_URL, else embedded), a database per test cloned from a
migrated template, and real uvicorn servers on loopback. The helpers they use live in
`tests.support`; tests import helpers from there, never from here."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import pytest

from app.config import Config
from app.storage import migrate
from tests.support.databases import connected, create_database, drop_database, fresh_database
from tests.support.environment import scrub_process_environment
from tests.support.postgres import temporary_postgres
from tests.support.servers import running_server

_EXTERNAL_DSN = pytest.StashKey[str | None]()


def pytest_configure(config: pytest.Config) -> None:
    # Tests must not depend on the shell they run in: no WABAHOOK_* setting or DATABASE_URL
    # of it reaches a test or a process a test starts. DATABASE_URL names the test server.
    config.stash[_EXTERNAL_DSN] = scrub_process_environment()


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def server_dsn(pytestconfig: pytest.Config) -> Iterator[str]:
    """The PostgreSQL server every test database lives on."""
    external = pytestconfig.stash[_EXTERNAL_DSN]
    if external:
        yield external
        return
    with temporary_postgres(prefix="wabahook-test-pg-") as postgres:
        yield postgres.dsn


@pytest.fixture(scope="session")
def embedded_server(pytestconfig: pytest.Config) -> bool:
    """Whether the test server is the embedded one: a process of this machine."""
    return not pytestconfig.stash[_EXTERNAL_DSN]


@pytest.fixture(scope="session")
def template_database(server_dsn: str) -> Iterator[str]:
    """A database migrated once per session; each test clones it."""
    name = f"wabahook_template_{os.getpid()}"

    async def create() -> None:
        url = await create_database(server_dsn, name, replace=True)
        async with connected(url) as connection:
            await migrate(connection)

    asyncio.run(create())
    yield name
    asyncio.run(drop_database(server_dsn, name))


@pytest.fixture
def db_factory(server_dsn: str, template_database: str) -> Iterator[Callable[[], str]]:
    """Make fresh migrated databases; all are dropped after the test."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(fresh_database(server_dsn, template_database))


@pytest.fixture
def database_url(db_factory: Callable[[], str]) -> str:
    return db_factory()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    async with connected(database_url) as connection:
        yield connection


@pytest.fixture
def server_factory(tmp_path: Path, db_factory: Callable[[], str]) -> Iterator[Callable[..., str]]:
    """Start wabahook servers with settings for this test; all stop after it (and so before
    the test's databases are dropped)."""
    with ExitStack() as stack:

        def start(database_url: str, **settings: object) -> str:
            config = Config(database_url=database_url, data_dir=str(tmp_path), **settings)  # type: ignore[arg-type]
            return stack.enter_context(running_server(config))

        yield start


@pytest.fixture
def server(server_factory: Callable[..., str], database_url: str) -> str:
    """Base URL of a wabahook with default settings on this test's database."""
    return server_factory(database_url)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory for an embedded PostgreSQL, removed afterwards.

    Not under pytest's basetemp, which pytest keeps 0700: run as root, the server runs as
    another user, and `serve` only opens the data directory itself for it, never its parents.
    """
    directory = Path(tempfile.mkdtemp(prefix="wabahook-data-"))
    directory.chmod(0o755)  # the test's own directory: the server user may pass through
    data = directory / "data"
    data.mkdir()
    try:
        yield data
    finally:
        shutil.rmtree(directory, ignore_errors=True)
