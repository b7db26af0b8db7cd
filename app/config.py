"""The one settings object every entry point builds, and the only reader of the environment.

Each field is a limit or a knob with its unit in its description; `wabahook --help` shows the
same text, and every field can be set as `WABAHOOK_<NAME>` (`DATABASE_URL` for the database).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from app import credentials, signing

ENV_PREFIX = "WABAHOOK_"
# A serve process hands its resolved settings to worker processes in this one variable.
EXPORT_VARIABLE = "WABAHOOK_CONFIG_JSON"

MiB = 1024 * 1024
HANDLER = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
# Days back a redelivery is still recognised: 360dialog retries for up to 7 days. Dedup keys
# (`store_batch` in queries.sql) count this long, retention prunes them after it and keeps
# events at least this long; tests/unit/test_sql.py checks the query against this constant.
REDELIVERY_WINDOW_DAYS = 8
# Seconds before each retry of a failed hand-on: about 24 hours from the first attempt to the
# last of 12, quick at first for blips, then hourly and longer for outages.
DEFAULT_RETRIES = (1.0, 5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0)


def _doc(text: str) -> Any:
    return msgspec.Meta(description=text)


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every setting of wabahook. Build it directly (tests) or with `from_environ()`."""

    database_url: Annotated[
        str | None, _doc("PostgreSQL DSN; unset runs an embedded PostgreSQL in DATA_DIR")
    ] = None
    data_dir: Annotated[str, _doc("directory for the embedded PostgreSQL and the spool")] = (
        ".wabahook"
    )
    host: Annotated[str, _doc("address to listen on")] = "127.0.0.1"
    port: Annotated[int, _doc("TCP port to listen on")] = 8000
    fd: Annotated[
        int | None,
        _doc(
            "listen on this inherited, already bound socket file descriptor instead of "
            "host and port (systemd socket activation, test harnesses)"
        ),
    ] = None
    workers: Annotated[int, _doc("uvicorn worker processes")] = 1
    ssl_certfile: Annotated[str | None, _doc("TLS certificate chain (PEM) to serve HTTPS")] = None
    ssl_keyfile: Annotated[str | None, _doc("TLS private key (PEM)")] = None
    max_body: Annotated[int, _doc("largest accepted body, bytes; larger gets 413")] = 4 * MiB
    batch_rows: Annotated[
        int, _doc("most rows in one batch (a request and each of its events), rows")
    ] = 4000
    batch_bytes: Annotated[int, _doc("most body bytes in one batch, bytes")] = 16 * MiB
    flush_ms: Annotated[
        float,
        _doc(
            "longest a buffered row waits for its flush to start, ms; an idle flusher "
            "starts at once, so this bounds the wait only while every flush slot is busy"
        ),
    ] = 10.0
    flush_slots: Annotated[
        int, _doc("flushes running at once when none is late; batches grow while they run")
    ] = 2
    pool_size: Annotated[
        int,
        _doc(
            "PostgreSQL connections per worker process (flushes beyond the slots "
            "start only for late rows)"
        ),
    ] = 4
    buffer_rows: Annotated[
        int, _doc("rows (requests and their events) buffered before new requests wait, rows")
    ] = 100_000
    buffer_bytes: Annotated[
        int, _doc("body bytes buffered awaiting a flush before new requests wait, bytes")
    ] = 256 * MiB
    backpressure_ms: Annotated[
        float, _doc("how long a request waits for buffer room before 503, ms")
    ] = 1000.0
    ack_deadline_ms: Annotated[
        float,
        _doc(
            "longest a request waits for its batch to become durable before 503, ms "
            "(360dialog gives up after 5000)"
        ),
    ] = 3500.0
    flush_timeout_ms: Annotated[
        float, _doc("a flush not committed by then goes to the spool instead, ms")
    ] = 1000.0
    spool_max_bytes: Annotated[
        int,
        _doc(
            "local spool for batches PostgreSQL did not take, bytes per worker; past it "
            "requests get 503; 0 turns the spool off (flushes are retried instead)"
        ),
    ] = 1024 * MiB
    shutdown_timeout_s: Annotated[
        float, _doc("at shutdown, how long buffered batches get to become durable, s")
    ] = 10.0
    retention_days: Annotated[
        int,
        _doc(
            "days requests and events are kept (whole daily partitions are dropped); "
            "at least 8, the redelivery window dedup covers"
        ),
    ] = 30
    retry_after_s: Annotated[int, _doc("Retry-After sent with 503, seconds")] = 10
    timeout_keep_alive: Annotated[int, _doc("idle keep-alive connection timeout, s")] = 30
    body_timeout_s: Annotated[
        float, _doc("longest a client may take to send a whole body before 408, s")
    ] = 30.0
    channel_bytes_per_s: Annotated[
        float,
        _doc(
            "body bytes one channel may store per second, per worker process; a body past "
            "the budget gets 503 + Retry-After; 0 turns the budget off"
        ),
    ] = 16.0 * MiB
    channel_burst_bytes: Annotated[
        int, _doc("body bytes a channel may store at once above its rate, bytes (>= max_body)")
    ] = 64 * MiB
    header_timeout_s: Annotated[
        float,
        _doc(
            "longest a request head may take to arrive, from the connection's start or the "
            "request's first byte, s; then the connection is closed"
        ),
    ] = 10.0
    max_header_bytes: Annotated[
        int, _doc("largest request target plus header names and values, bytes; larger gets 431")
    ] = 32 * 1024
    max_headers: Annotated[int, _doc("most header lines in a request; more get 431 and close")] = (
        100
    )
    max_events: Annotated[
        int,
        _doc(
            "most events extracted from one body; a body with more is stored raw as "
            "'too_many_events', with no events, and answered 200"
        ),
    ] = 1000
    limit_concurrency: Annotated[
        int | None, _doc("most concurrent connections before uvicorn answers 503")
    ] = None
    basic_auth: Annotated[
        list[str] | None,
        _doc(
            "Basic credentials every webhook request must carry: user:password pairs, "
            "comma-separated, any of which is accepted (rotation without downtime)"
        ),
    ] = None
    auth_header: Annotated[
        str | None, _doc("a static header every webhook request must carry: 'Name: value'")
    ] = None
    app_secret: Annotated[
        list[str] | None,
        _doc(
            "Meta app secrets, comma-separated: webhook bodies must carry a matching "
            "X-Hub-Signature-256 (HMAC-SHA256 of the raw body)"
        ),
    ] = None
    verify_token: Annotated[
        str | None, _doc("answers Meta's hub.challenge verification GET when the token matches")
    ] = None
    channels_file: Annotated[
        str | None,
        _doc("TOML file of per-channel credentials and URLs (see app/channels.py, README)"),
    ] = None
    d360_api_key: Annotated[
        str | None, _doc("360dialog API key (D360-API-KEY) for `wabahook webhook`")
    ] = None
    d360_base_url: Annotated[
        str | None,
        _doc(
            "360dialog API base URL; unset: https://waba-v2.360dialog.io (Cloud) or "
            "https://waba.360dialog.io (On-Premise)"
        ),
    ] = None
    forward_url: Annotated[
        str | None,
        _doc(
            "hand every stored event on to this URL (POST); a channel's own forward_url in "
            "the channels file replaces it"
        ),
    ] = None
    forward_mode: Annotated[
        Literal["events", "bodies", "items"],
        _doc(
            "events: one POST per event in a JSON envelope; bodies: each stored body byte "
            "for byte, as 360dialog sent it; items: one body per event, of the format it "
            "arrived in, holding just that item"
        ),
    ] = "events"
    forward_secret: Annotated[
        str | None,
        _doc("Standard Webhooks signing secret (whsec_...): signs every forwarded request"),
    ] = None
    forward_app_secret: Annotated[
        str | None,
        _doc("Meta app secret: forwarded requests also carry X-Hub-Signature-256, as Meta's do"),
    ] = None
    handler: Annotated[
        str | None,
        _doc("package.module:function, an async function called with each event, instead of HTTP"),
    ] = None
    forward_timeout_s: Annotated[
        float, _doc("longest one hand-on may take; later counts as a failure, s")
    ] = 10.0
    forward_retries: Annotated[
        tuple[float, ...],
        _doc(
            "seconds before each retry of a failed hand-on, comma-separated (each +-20% "
            "jitter); after the last the event is dead-lettered"
        ),
    ] = DEFAULT_RETRIES
    forward_concurrency: Annotated[
        int, _doc("hand-ons in flight at once (each of another contact), per dispatcher")
    ] = 64
    dispatch_stall_s: Annotated[
        float,
        _doc("a leading dispatcher silent this long is taken over by a standing-by one, s"),
    ] = 30.0
    metrics: Annotated[bool, _doc("count metrics (off only to measure what counting costs)")] = True
    metrics_listen: Annotated[
        str,
        _doc(
            "host:port of a separate listener serving GET /metrics, run by serve; 'main' "
            "serves /metrics on the webhook port instead; 'off' serves none"
        ),
    ] = "127.0.0.1:9464"
    metrics_interval_s: Annotated[
        float, _doc("how often each worker publishes its metrics for a scrape, s")
    ] = 1.0
    log_format: Annotated[
        Literal["auto", "json", "text"],
        _doc("log lines: JSON, key=value text, or auto (text on a terminal, else JSON)"),
    ] = "auto"
    log_level: Annotated[
        Literal["critical", "error", "warning", "info", "debug"], _doc("log level")
    ] = "info"

    def __post_init__(self) -> None:
        positive = (
            "port",
            "workers",
            "max_body",
            "batch_rows",
            "batch_bytes",
            "flush_slots",
            "pool_size",
            "buffer_rows",
            "buffer_bytes",
            "retry_after_s",
            "flush_ms",
            "ack_deadline_ms",
            "flush_timeout_ms",
            "timeout_keep_alive",
            "body_timeout_s",
            "header_timeout_s",
            "max_header_bytes",
            "max_headers",
            "max_events",
            "metrics_interval_s",
            "forward_timeout_s",
            "forward_concurrency",
            "dispatch_stall_s",
        )
        not_negative = (
            "backpressure_ms",
            "spool_max_bytes",
            "shutdown_timeout_s",
            "channel_bytes_per_s",
            "channel_burst_bytes",
        )
        for name in positive + not_negative:
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (value == 0 and name in positive):
                raise ValueError(f"{name} must be {'positive' if name in positive else '>= 0'}")
        if self.retention_days < REDELIVERY_WINDOW_DAYS:
            raise ValueError(
                f"retention_days must be at least {REDELIVERY_WINDOW_DAYS} (the redelivery window)"
            )
        if self.port > 65535:
            raise ValueError("port must be at most 65535")
        if self.fd is not None and self.fd < 0:
            raise ValueError("fd must be >= 0")
        if self.limit_concurrency is not None and self.limit_concurrency <= 0:
            raise ValueError("limit_concurrency must be positive")
        if self.channel_bytes_per_s and self.channel_burst_bytes < self.max_body:
            raise ValueError("channel_burst_bytes must be at least max_body")
        for pair in self.basic_auth or []:
            credentials.basic_pair(pair)
        if self.auth_header is not None:
            credentials.header(self.auth_header)
        if self.metrics_listen not in ("main", "off"):
            host, _, port = self.metrics_listen.rpartition(":")
            if not host or not port.isdigit() or int(port) > 65535:
                raise ValueError("metrics_listen is host:port, 'main' or 'off'")
        if self.pool_size < self.flush_slots:
            raise ValueError("pool_size must be at least flush_slots")
        if self.forward_url is not None and self.handler is not None:
            raise ValueError("forward_url and handler exclude each other: pick one target")
        if any(not math.isfinite(delay) or delay < 0 for delay in self.forward_retries):
            raise ValueError("forward_retries are seconds >= 0")
        if self.forward_secret is not None:
            signing.secret_key(self.forward_secret)  # says what is wrong with it
        if self.handler is not None and not HANDLER.fullmatch(self.handler):
            raise ValueError("handler is package.module:function")
        if self.handler is not None and self.forward_mode != "events":
            raise ValueError("a handler is called with events: forward_mode must be events")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Settings from `WABAHOOK_*` and `DATABASE_URL` (or an exported serve config)."""
        env = os.environ if environ is None else environ
        if EXPORT_VARIABLE in env:
            return msgspec.json.decode(env[EXPORT_VARIABLE], type=cls)
        return cls.from_mapping(
            {name: env[env_name(name)] for name in field_names() if env_name(name) in env}
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Config:
        """Validate and coerce: strings from the environment become numbers, and lists
        (comma-separated)."""
        values = {
            name: _split(value) if name in _LIST_FIELDS and isinstance(value, str) else value
            for name, value in values.items()
        }
        return msgspec.convert(values, type=cls, strict=False)

    def redacted(self) -> dict[str, Any]:
        """Every setting, with secrets replaced: what may be printed or logged."""
        return {
            name: ("<redacted>" if name in SECRET_FIELDS and value is not None else value)
            for name, value in msgspec.structs.asdict(self).items()
        }

    def export_to_environ(self) -> None:
        """Hand these exact settings to worker processes started after this call."""
        os.environ[EXPORT_VARIABLE] = msgspec.json.encode(self).decode()


_LIST_FIELDS = frozenset({"basic_auth", "app_secret", "forward_retries"})


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def field_names() -> tuple[str, ...]:
    return Config.__struct_fields__


# Settings whose names follow the convention of what they configure, not WABAHOOK_*.
_OWN_NAMES = {
    "database_url": "DATABASE_URL",
    "d360_api_key": "D360_API_KEY",
    "d360_base_url": "D360_BASE_URL",
}
# Settings never shown: `wabahook config` and logs print them redacted.
SECRET_FIELDS = frozenset(
    {
        "database_url",
        "basic_auth",
        "auth_header",
        "app_secret",
        "verify_token",
        "d360_api_key",
        "forward_secret",
        "forward_app_secret",
    }
)


def env_name(field: str) -> str:
    return _OWN_NAMES.get(field) or ENV_PREFIX + field.upper()


def describe_fields() -> dict[str, tuple[str, Any, type]]:
    """field -> (description, default, int/float/str), for the CLI's options."""
    info = msgspec.inspect.type_info(Config)
    assert isinstance(info, msgspec.inspect.StructType)
    result: dict[str, tuple[str, Any, type]] = {}
    for field in info.fields:
        meta = field.type
        assert isinstance(meta, msgspec.inspect.Metadata) and meta.extra_json_schema
        kinds = (
            meta.type.types if isinstance(meta.type, msgspec.inspect.UnionType) else (meta.type,)
        )
        kind: type = str
        if any(isinstance(k, msgspec.inspect.IntType) for k in kinds):
            kind = int
        elif any(isinstance(k, msgspec.inspect.FloatType) for k in kinds):
            kind = float
        result[field.name] = (meta.extra_json_schema["description"], field.default, kind)
    return result
