"""Retention: daily partitions are created ahead and dropped whole once expired.

Dropping a partition removes a day of requests and events at once, without the row
deletes and the bloat a DELETE of old rows would leave. Dedup keys live in a table of their own
(`wabahook_event_keys`), for `config.REDELIVERY_WINDOW_DAYS`: a flush takes over a key older
than that itself, and this run prunes them, in slices that never hold a lock for long.
Retention is at least the window, so the event a key names outlives the key. Dedup conflicts,
rare and in one plain table, are deleted by age in the same run. Events a dispatcher never handed on
before their day expired are counted and logged first: they are lost to the receiver.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from asyncpg import Pool

from app.config import REDELIVERY_WINDOW_DAYS
from app.errors import WabahookError
from app.metrics import Metrics
from app.sql import queries
from app.storage import wrap_exceptions

logger = logging.getLogger(__name__)

DAYS_AHEAD = 3  # partitions made in advance, so a missed run never sends a day to the default
PRUNE_SLICE = 50_000  # stale dedup keys deleted by one statement
INTERVAL = 3600.0  # seconds between runs


@dataclass(frozen=True, slots=True)
class Maintained:
    created: int  # partitions
    dropped: int  # partitions
    undelivered: int  # events in the dropped partitions that were never handed on


async def maintain(pool: Pool, retention_days: int, today: date | None = None) -> Maintained:
    """Create the coming days' partitions, drop the expired ones and delete the expired dedup
    conflicts."""
    today = today or datetime.now(UTC).date()
    oldest_kept = today - timedelta(days=retention_days)
    with wrap_exceptions():
        async with pool.acquire() as connection:
            async with connection.transaction():
                # Never queue ingestion behind this DDL for long: give up and retry next time.
                await connection.execute(queries["limit_lock_wait"])
                row = await connection.fetchrow(
                    queries["maintain_partitions"],
                    today,
                    today + timedelta(days=DAYS_AHEAD),
                    oldest_kept,
                )
            if row is None:  # another process holds the maintenance lock and does the work
                return Maintained(0, 0, 0)
            # Transactions of their own: the partition DDL's locks, which hold up ingestion,
            # are released before these deletes, however many rows they have to remove.
            conflicts_deleted: int = await connection.fetchval(
                queries["delete_expired_conflicts"], oldest_kept
            )
            stale = today - timedelta(days=REDELIVERY_WINDOW_DAYS)
            while (
                await connection.fetchval(queries["prune_event_keys"], stale, PRUNE_SLICE)
                == PRUNE_SLICE
            ):
                pass
    created, dropped, undelivered = row["created"], row["dropped"], row["undelivered"]
    if undelivered:
        logger.error(
            "%d events expired before they were handed on",
            undelivered,
            extra={"action": "retention_undelivered", "events": undelivered},
        )
    if created or dropped or conflicts_deleted:
        logger.info(
            "partitions maintained",
            extra={
                "action": "partitions_maintained",
                "created": created,
                "dropped": dropped,
                "conflicts_deleted": conflicts_deleted,
            },
        )
    return Maintained(created, dropped, undelivered)


async def run_periodically(pool: Pool, retention_days: int, metrics: Metrics) -> None:
    """Maintain now and then every `INTERVAL`; a failed run is retried at the next one."""
    while True:
        try:
            maintained = await maintain(pool, retention_days)
            metrics.inc("dispatch_expired_total", amount=maintained.undelivered)
        except WabahookError as exc:
            logger.warning(
                "partition maintenance failed: %s", exc, extra={"action": "partitions_failed"}
            )
        await asyncio.sleep(INTERVAL)
