"""serve's dispatcher runs on CPU time the HTTP workers leave, and so does its PostgreSQL backend
when that runs on this machine (the embedded server, or one beside the service): on a busy
machine acknowledging comes first, and handing on catches up when the load eases (nothing waits
in memory)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from asyncpg import Connection

from app.sql import queries

LOWEST_NICENESS = 19


def lowest_for_this_process() -> None:
    """This process runs only on CPU time nothing else wants (SCHED_IDLE)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux: the lowest niceness instead
        os.nice(LOWEST_NICENESS)


async def lowest_for_backend(connection: Connection) -> bool:
    """Give the connection's PostgreSQL backend the lowest niceness if it is a process of this
    machine; whether it now has it.

    Niceness, not SCHED_IDLE: the backend takes locks the flushes need too (pages of the events
    index, the WAL), and must never be starved while it holds one. The process is recognised by
    its title, which names the session's login user, database and client address and port: the
    pid alone could name another process when PostgreSQL runs in a container of its own.
    """
    pid = connection.get_server_pid()
    session = await connection.fetchrow(queries["session_identity"])
    if session["client_addr"] is None:
        client = "[local]"
    elif ipaddress.ip_address(session["client_addr"]).is_loopback:
        client = f"({session['client_port']})"  # after the address, or its name (log_hostname)
    else:  # another host, or a container's network: not a process of this machine
        return False
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        _, named, rest = title.partition(f" {session['user']} {session['database']} ")
        if not named or not rest.split(" ", 1)[0].endswith(client):
            return False
        os.setpriority(os.PRIO_PROCESS, pid, LOWEST_NICENESS)
    except (OSError, UnicodeDecodeError):  # not Linux, no such process, not ours to change
        return False
    return True
