"""The dispatcher: hands every stored event on, in order per contact, at the receiver's pace.

The events table is the outbox. The leading dispatcher reads it past a cursor, in (xid, id)
order and only below the horizon every earlier transaction has ended at, and makes a delivery
row for each event of a channel with a target (`move_events`). Each contact (the channel and
`normalise.contact_of`) has at most one delivery with `next_attempt_at` set, its head: the
dispatcher claims due heads, makes one attempt each (`Forwarder`), and records the outcome,
which makes the contact's next delivery its head once this one is delivered or dead
(`finish_deliveries`). So a contact's events go out one at a time and in order, while a failing
contact only holds up itself.

Many dispatchers may run (`serve`'s, `wabahook dispatch` on other hosts); one leads, by a
session advisory lock on the one connection it does all its work on, and the others stand by. A
leader that dies loses the lock with its connection. One that stalls (stopped, wedged) stops
writing its heartbeat; a standing-by dispatcher then ends its session, so whatever it does
after waking fails. Either way the next leader starts from what is committed: attempts in
flight at the change are made again (at least once), nothing is skipped.

Memory is bounded by `forward_concurrency` deliveries in flight and one batch of event ids
being moved, whatever the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import uvloop
from asyncpg import Connection

from app import cpu_priority, logs, storage
from app.channels import ChannelSettings, load_channels
from app.config import Config
from app.errors import WabahookError
from app.forwarding import Delivery, Forwarder, Outcome, routing
from app.metrics import Metrics
from app.sql import queries
from app.storage import wrap_exceptions

logger = logging.getLogger(__name__)

NOTIFY_CHANNELS = ("wabahook_events", "wabahook_deliveries")  # new events; redeliver, replay
MOVE_BATCH = 1000  # events read past the cursor in one step
POLL_INTERVAL = 0.5  # s: the longest a leader waits without a notification (retries fall due)
STEP_INTERVAL = 0.01  # s: the shortest time from one step to the next
BUSY_STEP_INTERVAL = 0.1  # s: the same while events arrive faster than BUSY_RATE
BUSY_RATE = 2000.0  # events/s arriving
RATE_WINDOW = 1.0  # s over which the arrival rate is measured
STANDBY_INTERVAL = 1.0  # s between a standing-by dispatcher's tries to lead
LAG_INTERVAL = 2.0  # s between two measurements of the lag
RECONNECT_DELAY = 1.0  # s after a lost database connection
JITTER = 0.2  # each retry delay is spread by this fraction either way
STOP_GRACE = 3.0  # s a stopping dispatcher gives attempts in flight, and their recording
STOP_TIMEOUT = 10.0  # s serve's dispatcher process gets to stop before it is killed


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery: Delivery
    outcome: Outcome


class Dispatcher:
    def __init__(
        self,
        config: Config,
        channels: dict[str, ChannelSettings],
        dsn: str,
        metrics: Metrics,
        low_priority: bool = False,
    ) -> None:
        self._config = config
        self._low_priority = low_priority  # of its PostgreSQL backend (serve's dispatcher)
        self._channels = channels
        self._dsn = dsn
        self._metrics = metrics
        self._routing = routing(config, channels)
        self._identity = f"{socket.gethostname()}:{os.getpid()}"
        self._wake = asyncio.Event()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._finished: list[Attempt] = []
        self._position: tuple[Any, int, Any] = ("0", 0, None)  # (xid, event id, request id)
        self._stopping = False
        self._saturated = False  # the last claim filled every free slot
        self.leading = False
        self.lag_s = 0.0
        metrics.gauge("dispatch_leader", lambda: 1 if self.leading else 0)
        metrics.gauge("dispatch_in_flight", lambda: len(self._in_flight))
        metrics.gauge("dispatch_lag_seconds", lambda: self.lag_s if self.leading else 0)

    async def run(self) -> None:
        """Lead when possible, stand by otherwise; until cancelled."""
        try:
            await self._run()
        finally:  # attempts cut short here are made again by the next leader
            await self._abandon_in_flight()

    def stop(self) -> None:
        """Stop after the current step; attempts in flight get `STOP_GRACE` to finish, and
        what finished is recorded (fewer attempts are made twice after a graceful stop)."""
        self._stopping = True
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                with wrap_exceptions():
                    async with self._connection() as connection:
                        while not await connection.fetchval(queries["try_lead_dispatch"]):
                            await self._take_over_if_stalled(connection)
                            if await self._stopped_within(STANDBY_INTERVAL):
                                return
                        await self._lead(connection)
            except WabahookError as exc:  # the connection, or PostgreSQL refusing a statement
                if self.leading:
                    logger.warning(
                        "dispatcher lost its lead: %s", exc, extra={"action": "dispatch_lost_lead"}
                    )
                else:
                    logger.warning(
                        "dispatcher cannot reach PostgreSQL: %s",
                        exc,
                        extra={"action": "dispatch_unavailable"},
                    )
                self.leading = False
                await self._abandon_in_flight()
                await asyncio.sleep(RECONNECT_DELAY)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        connection = await asyncpg.connect(
            self._dsn,
            timeout=5.0,
            server_settings={
                "application_name": "wabahook-dispatch",
                # Progress is safe to lose: an attempt whose record is lost is made again.
                "synchronous_commit": "off",
                # The step's statements plan partitioned tables: planned once, not per step.
                "plan_cache_mode": "force_generic_plan",
                # Every statement of a step reaches its rows through an index; a plan made while
                # the deliveries table is small would otherwise scan it whole at every step.
                "enable_seqscan": "off",
            },
        )
        try:
            if self._low_priority:
                await cpu_priority.lowest_for_backend(connection)
            yield connection
        finally:
            connection.terminate()

    async def _take_over_if_stalled(self, connection: Connection) -> None:
        row = await connection.fetchrow(queries["dispatch_leader_pid"])
        silent_s = None if row is None else row["silent_s"]
        if silent_s is None or silent_s < self._config.dispatch_stall_s:
            return
        logger.warning(
            "taking over from a dispatcher silent for %.0f s",
            silent_s,
            extra={"action": "dispatch_takeover", "backend_pid": row["pid"]},
        )
        await connection.fetchval(queries["terminate_backend"], row["pid"])

    async def _lead(self, connection: Connection) -> None:
        cursor = await connection.fetchrow(queries["open_dispatch_cursor"], self._identity)
        self._position = (cursor["xid"], cursor["event_id"], cursor["request_id"])
        self.leading = True
        logger.info("dispatcher leads", extra={"action": "dispatch_leading"})
        for channel in NOTIFY_CHANNELS:
            await connection.add_listener(channel, self._notified)
        async with Forwarder(self._config, self._channels) as forwarder:
            await self._steps(connection, forwarder)
            await self._wind_down(connection)

    async def _steps(self, connection: Connection, forwarder: Forwarder) -> None:
        loop = asyncio.get_running_loop()
        lag_due = 0.0
        interval = STEP_INTERVAL
        # The arrival rate, from the ids drawn: what the dispatcher reads past its cursor would
        # not do, as it reads nothing while its attempts are saturated.
        rate_since, drawn = loop.time(), await connection.fetchval(queries["event_ids_drawn"])
        while not self._stopping:
            self._wake.clear()
            stepped = loop.time()
            read = await self._step(connection, forwarder)
            if loop.time() >= lag_due:
                self.lag_s = await connection.fetchval(queries["dispatch_lag"])
                lag_due = loop.time() + LAG_INTERVAL
            if read is not None and read < MOVE_BATCH and not self._finished:
                await self._stopped_within(POLL_INTERVAL)
            # Under a steady stream, steps come at most every `interval`: each then carries
            # more events, and PostgreSQL, which ingestion shares, does less per event. Under
            # a heavy one (ingestion at full speed), fewer and larger steps still.
            if loop.time() - rate_since >= RATE_WINDOW:
                before, drawn = drawn, await connection.fetchval(queries["event_ids_drawn"])
                interval = step_interval(drawn - before, loop.time() - rate_since)
                rate_since = loop.time()
            await asyncio.sleep(stepped + interval - loop.time())

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for a wake-up (new events, a finished attempt, a stop);
        whether the dispatcher is stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        return self._stopping

    async def _wind_down(self, connection: Connection) -> None:
        """Let the attempts in flight finish for a little while, then record every finished
        one: after a graceful stop, fewer attempts are made twice."""
        running = [task for task in self._in_flight.values() if not task.done()]
        if running:
            await asyncio.wait(running, timeout=STOP_GRACE)
        finished, self._finished = self._finished, []
        if not finished:
            return
        with contextlib.suppress(WabahookError, TimeoutError):  # unrecorded: made again
            async with asyncio.timeout(STOP_GRACE):
                with wrap_exceptions():
                    async with connection.transaction():
                        await connection.execute(queries["lock_deliveries"])
                        await connection.execute(
                            queries["finish_deliveries"], *self._recorded(finished)
                        )

    async def _step(self, connection: Connection, forwarder: Forwarder) -> int | None:
        """Record the finished attempts, move new events into deliveries while there is room
        for them, start attempts for the due heads; how many events were read past the
        cursor (None: none was tried, the attempts have enough to do)."""
        finished, self._finished = self._finished, []
        read: int | None = None
        async with connection.transaction():
            await connection.execute(queries["lock_deliveries"])
            if finished:
                await connection.execute(queries["finish_deliveries"], *self._recorded(finished))
            if self._saturated:
                # More is due than can be in flight: events wait in their table, where they
                # cost nothing, until the attempts catch up (the backlog is never copied).
                await connection.execute(queries["dispatch_heartbeat"])
            else:
                moved = await connection.fetchrow(
                    queries["move_events"],
                    *self._position,
                    MOVE_BATCH,
                    forwarder.one_per_body,
                    self._routing.default,
                    list(self._routing.on),
                    list(self._routing.off),
                )
                self._position = (moved["xid"], moved["event_id"], moved["request_id"])
                read = moved["read"]
        for attempt in finished:  # recorded: no longer kept from claims
            del self._in_flight[attempt.delivery.id]
        free = self._config.forward_concurrency - len(self._in_flight)
        rows = []
        if free > 0:
            rows = await connection.fetch(
                queries["claim_deliveries"], list(self._in_flight), free, forwarder.needs_body
            )
            for row in rows:
                self._start(forwarder, Delivery.from_row(row))
        self._saturated = len(rows) == free
        return read

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    def _start(self, forwarder: Forwarder, delivery: Delivery) -> None:
        task = asyncio.get_running_loop().create_task(self._attempt(forwarder, delivery))
        self._in_flight[delivery.id] = task

    async def _attempt(self, forwarder: Forwarder, delivery: Delivery) -> None:
        outcome = await forwarder.deliver(delivery)
        self._count(delivery, outcome)
        # Stays in `_in_flight` until its outcome is recorded, so no claim takes it again.
        self._finished.append(Attempt(delivery, outcome))
        self._wake.set()

    def _count(self, delivery: Delivery, outcome: Outcome) -> None:
        if outcome.ok:
            self._metrics.inc("dispatch_delivered_total")
            age = datetime.now(UTC) - delivery.event.received_at
            self._metrics.observe("dispatch_handoff_seconds", age.total_seconds())
            return
        self._metrics.inc("dispatch_failed_total")
        if self._dead(delivery):
            self._metrics.inc("dispatch_dead_total")
            logger.warning(
                "event %d dead-lettered after %d attempts: %s",
                delivery.event.id,
                delivery.attempts + 1,
                outcome.error,
                extra={"action": "dispatch_dead", "delivery": delivery.id},
            )
        else:
            logger.debug(
                "hand-on failed: %s",
                outcome.error,
                extra={"action": "dispatch_failed", "delivery": delivery.id},
            )

    def _dead(self, delivery: Delivery) -> bool:
        return delivery.attempts + 1 > len(self._config.forward_retries)

    async def _abandon_in_flight(self) -> None:
        """Cancel what is in flight: a new leader makes those attempts again."""
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight.clear()
        self._finished.clear()

    def next_state(self, attempt: Attempt) -> tuple[str, datetime | None, str | None]:
        """(state, next attempt, error) after an attempt."""
        if attempt.outcome.ok:
            return "delivered", None, None
        if self._dead(attempt.delivery):
            return "dead", None, attempt.outcome.error
        delay = attempt.outcome.retry_after_s
        if delay is None:
            delay = self._config.forward_retries[attempt.delivery.attempts]
            delay *= random.uniform(1 - JITTER, 1 + JITTER)
        return "retrying", datetime.now(UTC) + timedelta(seconds=delay), attempt.outcome.error

    def _recorded(self, finished: list[Attempt]) -> tuple[list[Any], ...]:
        """finish_deliveries' parameters: ids, their days, states, next attempts, errors."""
        states = [self.next_state(attempt) for attempt in finished]
        return (
            [attempt.delivery.id for attempt in finished],
            [attempt.delivery.received_on for attempt in finished],
            [state for state, _, _ in states],
            [next_attempt for _, next_attempt, _ in states],
            [error for _, _, error in states],
        )


def step_interval(arrived: int, seconds: float) -> float:
    """The shortest time between steps after `arrived` events in `seconds`: longer while
    more than `BUSY_RATE` events/s arrive."""
    return BUSY_STEP_INTERVAL if arrived > BUSY_RATE * seconds else STEP_INTERVAL


async def dispatch(config: Config, stop: asyncio.Event, low_priority: bool = False) -> None:
    """One dispatcher with its metrics, on `config.database_url`, until `stop` is set;
    `low_priority`: its PostgreSQL backend too, if on this machine."""
    from app.service import publishing  # the service imports this module's neighbours

    channels = load_channels(config.channels_file)
    assert config.database_url is not None, "the caller resolves the database"
    with wrap_exceptions():
        connection = await asyncpg.connect(config.database_url)
        try:
            await storage.migrate(connection)
        finally:
            await connection.close()
    metrics = Metrics() if config.metrics else Metrics.disabled()
    dispatcher = Dispatcher(config, channels, config.database_url, metrics, low_priority)
    async with publishing(config, metrics):
        running = asyncio.ensure_future(dispatcher.run())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not running.done():
            dispatcher.stop()
            with contextlib.suppress(TimeoutError):  # wait_for cancels it when time is up
                await asyncio.wait_for(running, 2 * STOP_GRACE)
        if not running.cancelled():
            running.result()  # what ended it, if not the stop


def run(config: Config, parent: int | None = None) -> None:
    """Run `dispatch` on uvloop until SIGTERM or SIGINT; with `parent`, until SIGTERM or until
    that process is gone (serve's dispatcher: a Ctrl-C reaches the whole process group, and
    serve stops it once its workers have stopped; if serve dies, so does it)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        watching: list[asyncio.Task[None]] = []
        if parent is None:
            loop.add_signal_handler(signal.SIGINT, stop.set)
        else:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            watching.append(loop.create_task(_stop_when_orphaned(stop, parent)))
        await dispatch(config, stop, low_priority=parent is not None)
        for watch in watching:
            watch.cancel()

    uvloop.run(main())


async def _stop_when_orphaned(stop: asyncio.Event, parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(STANDBY_INTERVAL)
    stop.set()


@contextlib.contextmanager
def beside_server(config: Config) -> Iterator[None]:
    """`serve`'s dispatcher: one process of its own next to the HTTP workers, restarted if it
    dies, stopped at exit. It runs at the lowest CPU priority, and so does its PostgreSQL
    backend when on this machine (`cpu_priority`)."""
    stopping = threading.Event()
    starting = threading.Lock()  # no child is started once stopping is set
    current: list[subprocess.Popen[bytes]] = []

    def supervise() -> None:
        while True:
            with starting:
                if stopping.is_set():
                    return
                argv = [sys.executable, "-m", "app.dispatcher", str(os.getpid())]
                child = subprocess.Popen(argv)
                current[:] = [child]
            status = child.wait()
            if not stopping.is_set():
                logger.error(
                    "dispatcher process ended with %d; starting another",
                    status,
                    extra={"action": "dispatch_restarted", "status": status},
                )
                stopping.wait(RECONNECT_DELAY)

    supervisor = threading.Thread(target=supervise, name="dispatcher", daemon=True)
    supervisor.start()
    try:
        yield
    finally:
        with starting:
            stopping.set()
        for child in current:
            child.terminate()
            try:
                child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        supervisor.join(STOP_TIMEOUT)


if __name__ == "__main__":  # serve's dispatcher process: settings exported by serve
    cpu_priority.lowest_for_this_process()
    settings = Config.from_environ()
    logging.config.dictConfig(logs.dict_config(settings.log_level, settings.log_format))
    # serve names itself: had it died before this line, getppid() would name another process.
    run(settings, parent=int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid())
