"""wabahook under uvicorn: uvicorn's settings built in one place, for `serve` and the tests.

uvloop and httptools for speed, wrapped in `LimitedHttpToolsProtocol` for the limits httptools
lacks; no access log (no per-request log line), no proxy-headers rewriting (about 5% of a
request, and nothing here reads the client address), no WebSocket protocol (nothing here
serves one, so an upgrade is refused as a client error).
"""

from __future__ import annotations

import logging
import resource
import socket

import uvicorn

from app import logs, metrics
from app.config import Config
from app.http_protocol import HeadLimits, protocol_factory
from app.metrics_endpoint import metrics_directory, start_listener

logger = logging.getLogger(__name__)


def uvicorn_config(config: Config) -> uvicorn.Config:
    """uvicorn's settings for `config`; workers rebuild `config` from the environment."""
    limits = HeadLimits(config.header_timeout_s, config.max_header_bytes, config.max_headers)
    return uvicorn.Config(
        "app.asgi:create_app",
        factory=True,
        host=config.host,
        port=config.port,
        fd=config.fd,
        workers=config.workers,
        loop="uvloop",
        http=protocol_factory(limits),
        ws="none",
        lifespan="on",
        ssl_certfile=config.ssl_certfile,
        ssl_keyfile=config.ssl_keyfile,
        timeout_keep_alive=config.timeout_keep_alive,
        limit_concurrency=config.limit_concurrency,
        backlog=4096,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        # Applied in this process and again in every worker uvicorn starts.
        log_config=logs.dict_config(config.log_level, config.log_format),
    )


def start_metrics(config: Config) -> None:
    """Forget what an earlier run's workers published (totals start again with the service),
    and open the separate /metrics listener when there is one."""
    if config.metrics:
        metrics.clear(metrics_directory(config))
    if config.metrics_listen not in ("main", "off"):
        start_listener(config)


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the limit in force.

    Every connection holds a descriptor. Many systems start processes at a soft limit of
    1024, which a few hundred slow clients exhaust long before the machine would.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # not allowed here: keep what we have
            pass
    return soft


def prepare_inherited_socket(fd: int) -> None:
    """Set TCP_NODELAY on an inherited listening socket, for the connections it accepts.

    uvicorn wraps an inherited descriptor as a Unix socket, so the event loop never sets
    TCP_NODELAY on what it accepts; on Linux they inherit it from the listener. Without it, a
    response written in two parts waits for the client's delayed ACK (about 40 ms).
    """
    listener = socket.socket(fileno=fd)
    try:
        if listener.family in (socket.AF_INET, socket.AF_INET6):
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    finally:
        listener.detach()  # the descriptor stays open for uvicorn
