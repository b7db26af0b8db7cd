"""An embedded PostgreSQL (the app's own `EmbeddedPostgres`) for the length of a run."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.embedded import PGDATA_NAME, EmbeddedPostgres


def postmaster_pid(data_dir: Path) -> int:
    """The PID in the postmaster.pid of the server for `data_dir` (left behind by a kill -9)."""
    return int((data_dir / PGDATA_NAME / "postmaster.pid").read_text().split()[0])


@dataclass(frozen=True)
class RunningPostgres:
    dsn: str
    data_dir: Path

    @property
    def postmaster_pid(self) -> int:
        return postmaster_pid(self.data_dir)


@contextmanager
def temporary_postgres(prefix: str = "wabahook-pg-") -> Iterator[RunningPostgres]:
    """An embedded PostgreSQL in a new directory under the system's temporary directory,
    stopped and removed afterwards.

    Not under pytest's basetemp: a concurrent pytest session resets its permissions, and the
    server runs as another user when this runs as root.
    """
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with EmbeddedPostgres(data_dir) as dsn:
            yield RunningPostgres(dsn, data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
