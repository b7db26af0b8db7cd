"""What operators do with deliveries (`wabahook deliveries`, `redeliver`, `replay`).

Redeliver and replay write deliveries like the dispatcher does: under the same lock, giving
each contact they touch a head if it has none, and waking the dispatcher when they commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from asyncpg import Connection, Record

from app.forwarding import Routing
from app.sql import queries
from app.storage import wrap_exceptions

STATES = ("pending", "retrying", "delivered", "dead")


async def select_deliveries(
    connection: Connection,
    state: str | None,
    channel: str | None,
    since: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    with wrap_exceptions():
        rows = await connection.fetch(queries["select_deliveries"], state, channel, since, limit)
    return [dict(row) for row in rows]


async def redeliver(
    connection: Connection,
    ids: list[int] | None,
    channel: str | None,
    since: datetime | None,
    until: datetime | None,
) -> int:
    """Dead deliveries back to pending (by id, or by filter); how many."""
    return await _queue(connection, queries["redeliver_dead"], ids, channel, since, until)


async def replay(
    connection: Connection,
    since: datetime,
    until: datetime | None,
    channel: str | None,
    kind: str | None,
    bodies: bool,
    routing: Routing,
) -> int:
    """New deliveries for the stored events in the window, of channels with a target; how
    many."""
    return await _queue(
        connection,
        queries["replay_events"],
        since,
        until,
        channel,
        kind,
        bodies,
        routing.default,
        list(routing.on),
        list(routing.off),
    )


async def _queue(connection: Connection, query: str, *arguments: Any) -> int:
    with wrap_exceptions():
        async with connection.transaction():
            await connection.execute(queries["lock_deliveries"])
            rows: list[Record] = await connection.fetch(query, *arguments)
            contacts = {(row["channel"], row["contact"]) for row in rows if row["contact"]}
            await connection.execute(
                queries["promote_heads"],
                [channel for channel, _ in contacts],
                [contact for _, contact in contacts],
            )
            await connection.execute(queries["notify_deliveries"])
    return len(rows)
