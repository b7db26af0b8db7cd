"""Fixtures: a real PostgreSQL (DATABASE_URL, else embedded), a database per test cloned from a
migrated template, and real uvicorn servers on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import pytest

from app.config import EXPORT_VARIABLE, Config
from app.embedded import EmbeddedPostgres
from app.storage import migrate

# Tests must not depend on the shell they run in.
for _name in [name for name in os.environ if name.startswith("WABAHOOK_")]:
    del os.environ[_name]
_EXTERNAL_DSN = os.environ.pop("DATABASE_URL", None)


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The PostgreSQL server every test database lives on."""
    if _EXTERNAL_DSN:
        yield _EXTERNAL_DSN
        return
    # Not under pytest's basetemp: a concurrent pytest session resets its permissions, and the
    # server runs as another user when the tests run as root.
    data_dir = Path(tempfile.mkdtemp(prefix="wabahook-test-pg-"))
    try:
        with EmbeddedPostgres(data_dir) as dsn:
            yield dsn
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _admin(server_dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(server_dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def template_database(server_dsn: str) -> Iterator[str]:
    """A database migrated once per session; each test clones it."""
    name = f"wabahook_template_{os.getpid()}"

    async def create() -> None:
        await _admin(server_dsn, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
        connection = await asyncpg.connect(with_database(server_dsn, name))
        try:
            await migrate(connection)
        finally:
            await connection.close()

    asyncio.run(create())
    yield name
    asyncio.run(_admin(server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def db_factory(server_dsn: str, template_database: str) -> Iterator[Callable[[], str]]:
    """Make fresh migrated databases; all are dropped after the test."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(fresh_database(server_dsn, template_database))


@contextmanager
def fresh_database(server_dsn: str, template_database: str) -> Iterator[str]:
    name = f"wabahook_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_dsn, f"CREATE DATABASE {name} TEMPLATE {template_database}"))
    try:
        yield with_database(server_dsn, name)
    finally:
        asyncio.run(_admin(server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def database_url(db_factory: Callable[[], str]) -> str:
    return db_factory()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


def loopback_socket() -> socket.socket:
    """A listening socket: clients can connect (and queue) before the server accepts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock


@contextmanager
def running_server(config: Config) -> Iterator[str]:
    """A real uvicorn process (uvloop, httptools) serving wabahook on a pre-bound loopback port.

    The socket listens before the process starts, so clients queue in its backlog until the
    lifespan startup is done: no polling, no sleep. The process is stopped by its PID.
    """
    sock = loopback_socket()
    environment = {**os.environ, EXPORT_VARIABLE: msgspec.json.encode(config).decode()}
    script = (
        "import sys, uvicorn; uvicorn.run('app.asgi:create_app', factory=True, "
        f"fd={sock.fileno()}, loop='uvloop', http='httptools', lifespan='on', "
        "access_log=False, log_level='warning', backlog=4096)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], pass_fds=[sock.fileno()], env=environment,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done.
        assert process.returncode in (0, -signal.SIGTERM), output.decode(errors="replace")


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


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll a condition on the system under test (not a fixed sleep), bounded by `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
