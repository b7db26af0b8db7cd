"""EmbeddedPostgres against real servers: start, reuse, restart and recovery after kill -9."""

from __future__ import annotations

import asyncio
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from app.embedded import EmbeddedPostgres
from tests.support.databases import execute, fetch
from tests.support.environment import scrubbed_environment
from tests.support.postgres import postmaster_pid
from tests.support.processes import kill_group, start_group
from tests.support.waiting import wait_until_blocking

REPO = Path(__file__).resolve().parents[2]


def query(dsn: str, statement: str) -> list[Any]:
    """The first column of the statement's rows."""
    return [row[0] for row in asyncio.run(fetch(dsn, statement))]


def is_alive(pid: int) -> bool:
    """A running process, not a zombie (whose cmdline is empty)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except FileNotFoundError:
        return False


def socket_dir(dsn: str) -> Path:
    return Path(parse_qs(urlsplit(dsn).query)["host"][0])


@pytest.fixture
def servers() -> Iterator[list[EmbeddedPostgres]]:
    """Every EmbeddedPostgres a test appends is stopped afterwards, even on failure."""
    started: list[EmbeddedPostgres] = []
    yield started
    for server in reversed(started):
        server.stop()


def test_start_connect_and_running_dsn(data_dir: Path, servers: list[EmbeddedPostgres]) -> None:
    assert EmbeddedPostgres.running_dsn(data_dir) is None
    server = EmbeddedPostgres(data_dir)
    servers.append(server)
    dsn = server.start()

    assert dsn.startswith("postgresql://postgres@/postgres?host=/")
    assert EmbeddedPostgres.running_dsn(data_dir) == dsn
    settings = query(
        dsn,
        "select array[current_user, coalesce(inet_server_addr()::text, 'unix'),"
        " current_setting('listen_addresses'), current_setting('fsync'),"
        " current_setting('synchronous_commit'), current_setting('max_connections'),"
        " current_setting('shared_buffers'), current_setting('server_encoding')]",
    )[0]
    assert settings == ["postgres", "unix", "", "on", "on", "200", "128MB", "UTF8"]
    assert (data_dir / "postgres.log").read_text().count("ready to accept connections") == 1

    server.stop()
    assert EmbeddedPostgres.running_dsn(data_dir) is None
    server.stop()  # idempotent


def test_restart_keeps_data(data_dir: Path, servers: list[EmbeddedPostgres]) -> None:
    first = EmbeddedPostgres(data_dir)
    servers.append(first)
    with first as dsn:
        asyncio.run(
            execute(dsn, "create table kept (v text)", "insert into kept values ('before')")
        )
    assert EmbeddedPostgres.running_dsn(data_dir) is None

    second = EmbeddedPostgres(data_dir)
    servers.append(second)
    assert query(second.start(), "select v from kept") == ["before"]


def test_second_instance_reuses_running_server(
    data_dir: Path, servers: list[EmbeddedPostgres]
) -> None:
    owner = EmbeddedPostgres(data_dir)
    servers.append(owner)
    dsn = owner.start()

    guest = EmbeddedPostgres(data_dir)
    servers.append(guest)
    assert guest.start() == dsn
    assert not guest.owns_server
    guest.stop()  # leaves the owner's server running
    assert query(dsn, "select 1") == [1]
    assert EmbeddedPostgres.running_dsn(data_dir) == dsn
    assert (data_dir / "postgres.log").read_text().count("ready to accept connections") == 1


def kill9_after_child_starts(data_dir: Path, body: str) -> list[str]:
    """Run body in a child Python that started postgres on data_dir, then SIGKILL its group.

    body has `dsn` and must print one line when ready and then block. Returns that line's
    words; the child's process group (its postgres included) is killed however this ends.
    """
    prelude = "import asyncio, sys\nfrom pathlib import Path\nimport asyncpg\n"
    prelude += "from app.embedded import EmbeddedPostgres\n"
    prelude += "dsn = EmbeddedPostgres(Path(sys.argv[1])).start()\n"
    child = start_group(
        [sys.executable, "-c", prelude + textwrap.dedent(body), str(data_dir)],
        env=scrubbed_environment({"PYTHONPATH": str(REPO)}),
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        readable, _, _ = select.select([child.stdout], [], [], 20.0)
        assert readable, "child did not get ready in time"
        line = child.stdout.readline().split()
        assert line, child.communicate()[1]
        postmaster = postmaster_pid(data_dir)
    finally:
        kill_group(child)
        child.communicate()
    # The postmaster dies with the group (a zombie at most; SIGKILL lands asynchronously) and
    # leaves its pid file behind.
    wait_until_blocking(lambda: not is_alive(postmaster), 10.0, "the postmaster to die")
    assert (data_dir / "pgdata" / "postmaster.pid").exists()
    return line


def test_recovers_after_kill9_of_process_group(
    data_dir: Path, servers: list[EmbeddedPostgres]
) -> None:
    child_dsn, *_ = kill9_after_child_starts(
        data_dir,
        """
        async def write():
            connection = await asyncpg.connect(dsn)
            await connection.execute("create table survived (v text)")
            await connection.execute("insert into survived values ('committed')")
            await connection.close()

        asyncio.run(write())
        print(dsn, flush=True)
        sys.stdin.readline()  # hold the server until killed
        """,
    )

    server = EmbeddedPostgres(data_dir)
    servers.append(server)
    dsn = server.start()
    assert server.owns_server
    assert dsn == child_dsn
    assert query(dsn, "select v from survived") == ["committed"]
    assert "not properly shut down" in (data_dir / "postgres.log").read_text()


def test_kill9_leaving_a_busy_backend_behind(
    data_dir: Path, servers: list[EmbeddedPostgres]
) -> None:
    # Backends setsid(), so the group kill misses them; one spinning in PL/pgSQL never checks
    # for postmaster death and must be killed by start().
    _, spinning = kill9_after_child_starts(
        data_dir,
        """
        async def spin():
            worker = await asyncpg.connect(dsn)
            listener = await asyncpg.connect(dsn)
            started = asyncio.Event()
            await listener.add_listener("spinning", lambda *_: started.set())
            looping = asyncio.ensure_future(worker.execute(
                "DO $$ BEGIN PERFORM pg_notify('spinning', ''); COMMIT; LOOP END LOOP; END $$"
            ))
            await started.wait()
            print(dsn, worker.get_server_pid(), flush=True)
            await looping

        asyncio.run(spin())
        """,
    )
    backend = int(spinning)
    try:
        assert is_alive(backend)
        server = EmbeddedPostgres(data_dir)
        servers.append(server)
        assert query(server.start(timeout=20.0), "select 1") == [1]
        assert not is_alive(backend)
    finally:
        if is_alive(backend) and os.readlink(f"/proc/{backend}/cwd") == str(data_dir / "pgdata"):
            os.kill(backend, signal.SIGKILL)


def test_stale_pid_file_naming_a_live_foreign_process(
    data_dir: Path, servers: list[EmbeddedPostgres]
) -> None:
    with EmbeddedPostgres(data_dir):
        pass
    pgdata = data_dir / "pgdata"
    # pid 1 is alive and not a postgres: PostgreSQL alone would refuse to start.
    (pgdata / "postmaster.pid").write_text(f"1\n{pgdata}\n0\n5432\n{pgdata}\n\n0 0\nready\n")
    assert EmbeddedPostgres.running_dsn(data_dir) is None

    server = EmbeddedPostgres(data_dir)
    servers.append(server)
    assert query(server.start(), "select 1") == [1]


def test_long_data_dir_uses_short_socket_dir(
    data_dir: Path, servers: list[EmbeddedPostgres]
) -> None:
    data_dir = data_dir / ("d" * 60) / ("e" * 60)
    server = EmbeddedPostgres(data_dir)
    servers.append(server)
    dsn = server.start()
    sockets = socket_dir(dsn)
    try:
        assert sockets.parent == Path("/tmp")
        assert sockets.name.startswith("wabahook-pg-")
        assert query(dsn, "select 1") == [1]
        assert EmbeddedPostgres.running_dsn(data_dir) == dsn
    finally:
        server.stop()
        shutil.rmtree(sockets, ignore_errors=True)


def test_failed_start_raises_with_log_tail(data_dir: Path, servers: list[EmbeddedPostgres]) -> None:
    with EmbeddedPostgres(data_dir):
        pass
    with (data_dir / "pgdata" / "postgresql.auto.conf").open("a") as conf:
        conf.write("this is not a setting\n")

    server = EmbeddedPostgres(data_dir)
    servers.append(server)
    with pytest.raises(RuntimeError, match="syntax error"):
        server.start(timeout=20.0)
    assert not server.owns_server
    assert EmbeddedPostgres.running_dsn(data_dir) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_as_root_a_data_dir_the_server_user_cannot_reach_is_refused_untouched() -> None:
    closed = Path(tempfile.mkdtemp(prefix="wabahook-closed-"))  # 0700: others may not pass
    try:
        with pytest.raises(RuntimeError, match=rf"chmod o\+x {re.escape(str(closed))}"):
            EmbeddedPostgres(closed / "data").start()
        assert stat.S_IMODE(closed.stat().st_mode) == 0o700  # its permissions are not ours
    finally:
        shutil.rmtree(closed)
