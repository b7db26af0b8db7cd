"""serve's dispatcher lowers its own PostgreSQL backend's CPU priority, and nothing else's."""

from __future__ import annotations

import os

import asyncpg
import pytest

from app.cpu_priority import LOWEST_NICENESS, lowest_for_backend

pytestmark = pytest.mark.anyio


def niceness(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


async def test_the_sessions_own_backend_on_this_machine_gets_the_lowest_niceness(
    db: asyncpg.Connection, database_url: str, embedded_server: bool
) -> None:
    if not embedded_server:
        pytest.skip("the embedded server runs on this machine; DATABASE_URL's may not")
    other = await asyncpg.connect(database_url)
    try:
        before = niceness(other.get_server_pid())
        if before == LOWEST_NICENESS:
            pytest.skip("the test server already runs at the lowest niceness")
        assert niceness(db.get_server_pid()) == before

        assert await lowest_for_backend(db) is True

        assert niceness(db.get_server_pid()) == LOWEST_NICENESS
        assert niceness(other.get_server_pid()) == before  # another session's is left alone
    finally:
        await other.close()


async def test_a_title_that_does_not_name_the_session_leaves_the_backend_alone(
    db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = db.get_server_pid()
    before = niceness(pid) if os.path.exists(f"/proc/{pid}") else None
    monkeypatch.setattr(
        "app.cpu_priority.queries",
        {
            "session_identity": "SELECT NULL::text AS client_addr, NULL::int AS client_port, "
            "'someone_else' AS user, current_database() AS database"
        },
    )

    assert await lowest_for_backend(db) is False

    if before is not None:
        assert niceness(pid) == before
