"""The command line: parse options, build the one `Config`, hand it on.

Every `serve` option can also be set as `WABAHOOK_<NAME>` (`DATABASE_URL` for the
database); `--help` shows each variable's name. `config` prints the settings they make, and
`webhook` registers the URL with 360dialog (`app.dialog360`).
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import re
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from app import deliveries as delivery_store
from app import dialog360, dispatcher, logs, storage
from app.channels import ChannelSettings, ChannelsFileError, load_channels
from app.config import Config, describe_fields, env_name
from app.embedded import EmbeddedPostgres
from app.errors import WabahookError
from app.forwarding import Routing, routing

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# Fields every command that reads the database takes; `serve` takes them all.
_DATABASE_FIELDS = ("database_url", "data_dir")


def configure_logging(config: Config) -> None:
    logging.config.dictConfig(logs.dict_config(config.log_level, config.log_format))


def config_options(names: tuple[str, ...]) -> Callable[[F], F]:
    """One click option per Config field, with its description, default and variable name."""
    described = describe_fields()

    def decorate(command: F) -> F:
        for name in reversed(names):
            description, default, kind = described[name]
            default_text = "" if default is None else f" [default: {default}]"
            command = click.option(
                "--" + name.replace("_", "-"),
                name,
                type=kind,
                default=None,
                envvar=env_name(name),
                show_envvar=True,
                help=description + default_text,
            )(command)
        return command

    return decorate


def _build_config(options: dict[str, Any]) -> Config:
    try:
        return Config.from_mapping({k: v for k, v in options.items() if v is not None})
    except (msgspec.ValidationError, ValueError) as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="wabahook")
def main() -> None:
    """wabahook: receive WhatsApp Business webhooks from 360dialog and store them durably.

    A notification is answered 200 only once it is committed in PostgreSQL. With
    DATABASE_URL unset, an embedded PostgreSQL runs in the data directory.
    """


@main.command()
@config_options(Config.__struct_fields__)
def serve(**options: Any) -> None:
    """Serve POST /webhook[/<channel>], /healthz and /readyz with uvicorn."""
    import uvicorn  # imported here: the other commands start faster without it

    from app import server

    config = _build_config(options)
    configure_logging(config)
    channels = _load_channels(config)  # a clear error now, not a traceback per worker
    with _database(config, announce=True) as dsn:
        config = msgspec.structs.replace(config, database_url=dsn)
        config.export_to_environ()  # worker processes rebuild the same Config from it
        if config.fd is not None:
            server.prepare_inherited_socket(config.fd)
        uvicorn_config = server.uvicorn_config(config)
        descriptors = server.raise_descriptor_limit()
        server.start_metrics(config)
        logger.info(
            "serving with up to %d open files",
            descriptors,
            extra={
                "action": "serve_started",
                "open_files": descriptors,
                "settings": config.redacted(),
            },
        )
        uvicorn_server = uvicorn.Server(uvicorn_config)
        # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again with
        # the handler it found installed: make that handler end us through the `finally`
        # that stops the embedded PostgreSQL, not kill us before it.
        handing_on = routing(config, channels).any
        with (
            dispatcher.beside_server(config) if handing_on else nullcontext(),
            _signals_exit_cleanly(),
        ):
            if config.workers == 1:
                uvicorn_server.run()
            else:
                from uvicorn.supervisors import Multiprocess

                sock = uvicorn_config.bind_socket()
                Multiprocess(uvicorn_config, sockets=[sock]).run()
    logger.info("stopped", extra={"action": "serve_stopped"})
    if not uvicorn_server.started and config.workers == 1:
        sys.exit(3)


def _load_channels(config: Config) -> dict[str, ChannelSettings]:
    try:
        return load_channels(config.channels_file)
    except WabahookError as exc:
        raise click.ClickException(str(exc)) from exc


class _Stopped(Exception):
    """A stop signal arrived after uvicorn's graceful shutdown."""


@contextmanager
def _signals_exit_cleanly() -> Iterator[None]:
    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@main.command()
@config_options(_DATABASE_FIELDS)
def migrate(**options: Any) -> None:
    """Apply the database migrations that have not been applied yet."""
    config = _build_config(options)

    with _database(config) as dsn:
        applied = _run(_migrate(dsn))
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@main.command()
@config_options(_DATABASE_FIELDS)
@click.option("--channel", help="only events that arrived on this channel")
@click.option("--kind", type=click.Choice(["message", "status", "error", "other", "echo", "call"]))
@click.option(
    "--contact",
    help="only events naming this wa_id, business-scoped user id or group id (docs/protocol.md §6)",
)
@click.option("--since", help="received at or after: ISO time, or an age such as 30s, 15m, 2h, 7d")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option(
    "--format", "output", type=click.Choice(["table", "jsonl"]), default="table", show_default=True
)
@click.option(
    "--conflicts",
    is_flag=True,
    help="list the dedup conflicts instead: arrivals with a stored event's key but another "
    "payload, each with both payloads",
)
def events(
    channel: str | None,
    kind: str | None,
    contact: str | None,
    since: str | None,
    limit: int,
    output: str,
    conflicts: bool,
    **options: Any,
) -> None:
    """List stored events, oldest first (or the dedup conflicts, with --conflicts)."""
    config = _build_config(options)
    since_time = _parse_since(since) if since else None

    async def run(dsn: str) -> list[dict[str, Any]]:
        async with storage.connect(dsn) as connection:
            return await storage.select_events(
                connection, channel, kind, since_time, limit, contact, conflicts
            )

    with _database(config, migrate=True) as dsn:
        rows = _run(run(dsn))
    if conflicts:
        _print_conflicts(rows, output)
        _note_if_cut(rows, limit, "conflicts")
        return
    records = [
        {
            "event_id": row["id"],
            **_event_fields(row),
            "waba_id": row["waba_id"],
            "event_ts": row["event_ts"],
            "received_at": row["received_at"],
            "request_id": row["request_id"],
            "payload": _compact(row["payload"]),
        }
        for row in rows
    ]
    columns = ("received_at", "channel", "kind", "type", "id", "wa_id", "phone_number_id")
    _print(records, output, columns)
    _note_if_cut(rows, limit, "events")


def _event_fields(row: dict[str, Any]) -> dict[str, Any]:
    """What an event and a conflicting arrival are both listed with."""
    return {
        "channel": row["channel"],
        "kind": row["kind"],
        "type": row["type"],
        "id": row["message_id"],
        "wa_id": row["wa_id"],
        "user_id": row["user_id"],
        "group_id": row["group_id"],
        "phone_number_id": row["phone_number_id"],
    }


def _print_conflicts(rows: list[dict[str, Any]], output: str) -> None:
    records = [
        {
            "conflict_id": row["id"],
            "received_at": row["received_at"],
            **_event_fields(row),
            "request_id": row["request_id"],
            "seq": row["seq"],
            "payload": _compact(row["payload"]),
            "kept_event_id": row["kept_event_id"],
            "kept_request_id": row["kept_request_id"],
            "kept_received_at": row["kept_received_at"],
            "kept_payload": _compact(row["kept_payload"]),
        }
        for row in rows
    ]
    columns = ("received_at", "channel", "kind", "type", "id", "request_id", "kept_request_id")
    _print(records, output, columns)


@main.command()
@config_options(_DATABASE_FIELDS)
@click.option(
    "--outcome", type=click.Choice(["stored", "unknown", "quarantined", "too_many_events"])
)
@click.option("--channel", help="only bodies that arrived on this channel")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option(
    "--format", "output", type=click.Choice(["table", "jsonl"]), default="table", show_default=True
)
@click.option(
    "--body",
    "body_id",
    type=click.UUID,
    help="write this request's raw body to stdout, byte for byte",
)
def requests(
    outcome: str | None,
    channel: str | None,
    limit: int,
    output: str,
    body_id: uuid.UUID | None,
    **options: Any,
) -> None:
    """List every acknowledged body, or write one body's raw bytes (--body ID)."""
    config = _build_config(options)

    async def run(dsn: str) -> list[dict[str, Any]] | bytes | None:
        async with storage.connect(dsn) as connection:
            if body_id is not None:
                return await storage.select_request_body(connection, body_id)
            return await storage.select_requests(connection, outcome, channel, limit)

    with _database(config, migrate=True) as dsn:
        result = _run(run(dsn))
    if body_id is not None:
        if not isinstance(result, bytes):
            raise click.ClickException(f"no request {body_id}")
        sys.stdout.buffer.write(result)
        sys.stdout.buffer.flush()
        return
    assert isinstance(result, list)
    records = [{**row, "sha256": row["sha256"].hex()} for row in result]
    columns = ("id", "received_at", "channel", "outcome", "bytes", "events", "sha256")
    _print(records, output, columns)
    _note_if_cut(result, limit, "requests")


@main.command("config")
@config_options(Config.__struct_fields__)
@click.option(
    "--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def show_config(output: str, **options: Any) -> None:
    """Print the settings `serve` would run with (options, then environment, then defaults),
    every secret redacted."""
    settings = _build_config(options).redacted()
    if output == "json":
        sys.stdout.buffer.write(msgspec.json.encode(settings) + b"\n")
        sys.stdout.buffer.flush()
        return
    for name, value in settings.items():
        click.echo(f"{name} = {_setting_text(value)}")


def _setting_text(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, list | tuple):
        return ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value)
    return str(value)


# --- handing events on ----------------------------------------------------------------------

_DISPATCH_FIELDS = (
    *_DATABASE_FIELDS,
    "channels_file",
    "forward_url",
    "forward_mode",
    "forward_secret",
    "forward_app_secret",
    "handler",
    "forward_timeout_s",
    "forward_retries",
    "forward_concurrency",
    "dispatch_stall_s",
    "metrics",
    "metrics_listen",
    "metrics_interval_s",
    "log_format",
    "log_level",
)


@main.command()
@config_options(_DISPATCH_FIELDS)
def dispatch(**options: Any) -> None:
    """Hand stored events on, without serving HTTP: to scale receivers and dispatchers apart.

    Run as many as you like: one leads, the others stand by and take over if it dies or stalls.
    """
    from app.metrics_endpoint import start_listener

    config = _build_config(options)
    configure_logging(config)
    _routing_with_a_target(config)
    with _database(config, announce=True) as dsn:
        config = msgspec.structs.replace(config, database_url=dsn)
        if config.metrics and config.metrics_listen not in ("main", "off"):
            try:
                start_listener(config)
            except OSError as exc:  # serve on this host has the port: it serves these metrics
                logger.warning(
                    "no metrics listener: %s", exc, extra={"action": "metrics_not_listening"}
                )
        dispatcher.run(config)


def _routing_with_a_target(config: Config) -> Routing:
    """Which channels' events are handed on; a usage error if none is."""
    route = routing(config, _load_channels(config))
    if not route.any:
        raise click.UsageError(
            "nothing to hand on to: set WABAHOOK_FORWARD_URL, WABAHOOK_HANDLER or a channel's "
            "forward_url"
        )
    return route


@main.command()
@config_options(_DATABASE_FIELDS)
@click.option("--state", type=click.Choice(delivery_store.STATES))
@click.option("--channel", help="only deliveries of events that arrived on this channel")
@click.option("--since", help="events received at or after: ISO time, or an age (30s, 15m, 2h, 7d)")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option(
    "--format", "output", type=click.Choice(["table", "jsonl"]), default="table", show_default=True
)
def deliveries(
    state: str | None,
    channel: str | None,
    since: str | None,
    limit: int,
    output: str,
    **options: Any,
) -> None:
    """List hand-ons, oldest first: each event's state, attempts, last error and next attempt."""
    config = _build_config(options)
    since_time = _parse_since(since) if since else None

    async def run(dsn: str) -> list[dict[str, Any]]:
        async with storage.connect(dsn) as connection:
            return await delivery_store.select_deliveries(
                connection, state, channel, since_time, limit
            )

    with _database(config, migrate=True) as dsn:
        rows = _run(run(dsn))
    columns = (
        "id",
        "state",
        "attempts",
        "next_attempt_at",
        "event_id",
        "channel",
        "contact",
        "kind",
        "received_at",
        "last_error",
    )
    _print(rows, output, columns)
    _note_if_cut(rows, limit, "deliveries")


@main.command()
@config_options(_DATABASE_FIELDS)
@click.argument("ids", nargs=-1, type=click.IntRange(1))
@click.option("--channel", help="the dead deliveries of this channel")
@click.option("--since", help="of events received at or after: ISO time, or an age")
@click.option("--until", help="of events received before: ISO time, or an age")
@click.option("--all", "everything", is_flag=True, help="every dead delivery")
def redeliver(
    ids: tuple[int, ...],
    channel: str | None,
    since: str | None,
    until: str | None,
    everything: bool,
    **options: Any,
) -> None:
    """Queue dead deliveries again, by delivery id (see `deliveries --state dead`) or filter."""
    if not ids and not (channel or since or until or everything):
        raise click.UsageError("name delivery ids, or --channel, --since, --until or --all")
    if ids and (channel or since or until or everything):
        raise click.UsageError("name delivery ids or a filter, not both")
    config = _build_config(options)
    since_time = _parse_since(since) if since else None
    until_time = _parse_since(until, "--until") if until else None

    async def run(dsn: str) -> int:
        async with storage.connect(dsn) as connection:
            return await delivery_store.redeliver(
                connection, list(ids) or None, channel, since_time, until_time
            )

    with _database(config, migrate=True) as dsn:
        queued = _run(run(dsn))
    click.echo(f"{queued} dead deliveries queued again")


@main.command()
@config_options((*_DATABASE_FIELDS, "channels_file", "forward_url", "handler", "forward_mode"))
@click.option("--since", required=True, help="events received at or after: ISO time, or an age")
@click.option("--until", help="events received before: ISO time, or an age")
@click.option("--channel", help="only events that arrived on this channel")
@click.option("--kind", type=click.Choice(["message", "status", "error", "other", "echo", "call"]))
def replay(
    since: str, until: str | None, channel: str | None, kind: str | None, **options: Any
) -> None:
    """Hand stored events on again (after a bug downstream), each contact's in arrival order;
    only those of channels with a target, as the dispatcher routes them."""
    config = _build_config(options)
    routing = _routing_with_a_target(config)
    since_time = _parse_since(since)
    until_time = _parse_since(until, "--until") if until else None
    bodies = config.forward_mode == "bodies"

    async def run(dsn: str) -> int:
        async with storage.connect(dsn) as connection:
            return await delivery_store.replay(
                connection, since_time, until_time, channel, kind, bodies, routing
            )

    with _database(config, migrate=True) as dsn:
        queued = _run(run(dsn))
    click.echo(f"{queued} {'bodies' if bodies else 'events'} queued to be handed on again")


# --- webhook: 360dialog's configuration API -----------------------------------------------

# Flags of the webhook commands; the secrets below are read from the environment only.
_WEBHOOK_FIELDS = ("channels_file", "d360_base_url")
# A key or password given as a flag would be visible to every local user in `ps`.
_WEBHOOK_ENVIRONMENT = ("d360_api_key", "basic_auth", "auth_header")
_API_KEY_VARIABLE = env_name("d360_api_key")


@main.group()
def webhook() -> None:
    """Register the webhook URL with 360dialog, or read the registered one.

    The API key is the number's 360dialog key, read from D360_API_KEY only (never a flag,
    never printed). D360_BASE_URL replaces the API's address (the sandbox, tests).
    """


def _webhook_options(command: F) -> F:
    """What `webhook set` and `webhook get` share."""
    command = config_options(_WEBHOOK_FIELDS)(command)
    for option in reversed(
        (
            click.option(
                "--hosting",
                type=click.Choice(["cloud", "onprem"]),
                help="the number's hosting, which picks the API's address "
                "[default: the channel's `hosting`, else cloud]",
            ),
            click.option(
                "--channel", help="use this channel's table of the channels file (url, hosting)"
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=dialog360.TIMEOUT_S,
                show_default=True,
                help="seconds to wait for 360dialog's answer",
            ),
        )
    ):
        command = option(command)
    return command


def _webhook_config(options: dict[str, Any]) -> Config:
    """The flags' settings plus those read from the environment only."""
    values = dict(options)
    for name in _WEBHOOK_ENVIRONMENT:
        value = os.environ.get(env_name(name))
        if value is not None:
            values[name] = value
    return _build_config(values)


def _channel_settings(config: Config, channel: str | None) -> ChannelSettings:
    if channel is None:
        return ChannelSettings()
    if config.channels_file is None:
        raise click.UsageError(
            f"--channel reads the channels file: set {env_name('channels_file')} or --channels-file"
        )
    try:
        channels = load_channels(config.channels_file)
    except ChannelsFileError as exc:
        raise click.ClickException(str(exc)) from exc
    if channel not in channels:
        raise click.ClickException(f"no channel {channel!r} in {config.channels_file}")
    return channels[channel]


@contextmanager
def _api(
    config: Config, hosting: dialog360.Hosting, timeout: float
) -> Iterator[dialog360.ConfigurationClient]:
    """The configuration client; any of its failures is one line on stderr, exit status 1."""
    if not config.d360_api_key:
        raise click.UsageError(f"set {_API_KEY_VARIABLE} to the number's 360dialog API key")
    try:
        base = dialog360.base_url(hosting, config.d360_base_url)
        with dialog360.ConfigurationClient(config.d360_api_key, base, timeout=timeout) as api:
            yield api
    except dialog360.Dialog360Error as exc:
        raise click.ClickException(str(exc)) from exc


def _registered_headers(
    config: Config, own: ChannelSettings, basic_auth: str | None, header: str | None
) -> dict[str, str]:
    """The headers 360dialog must send: what the receiver will require of this channel. Each
    comes from its option, else the channel's table, else the global setting
    (`ChannelSettings.over`, as the receiver's checks take them); of several Basic pairs, the
    first is registered."""
    own = own.over(config)
    if basic_auth is None:
        basic_auth = own.basic_auth[0] if own.basic_auth else None
    explicit_header = header is not None
    if header is None:
        header = own.auth_header
    headers: dict[str, str] = {}
    if basic_auth:
        try:
            headers.update(dialog360.basic_auth_header(basic_auth))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--basic-auth") from None
    if header:
        try:
            extra = dialog360.static_header(header)
        except ValueError as exc:
            hint = "--header" if explicit_header else "the auth_header setting"
            raise click.BadParameter(str(exc), param_hint=hint) from None
        if any(name.lower() in {key.lower() for key in headers} for name in extra):
            raise click.UsageError("the Basic credentials and the header both set Authorization")
        headers.update(extra)
    return headers


def _show_webhook(verb: str, hosting: str, base: str, url: Any, headers: Any, answer: Any) -> None:
    click.echo(f"{verb} ({hosting}, {base})")
    click.echo(f"url: {url if url else '(none)'}")
    names = list(headers) if isinstance(headers, dict) else []
    shown = ", ".join(f"{name}: {dialog360.REDACTED}" for name in names)
    click.echo(f"headers: {shown or '(none)'}")
    answered = msgspec.json.encode(dialog360.redact_headers(answer)).decode()
    click.echo(f"360dialog answered: {answered}")


@webhook.command("set")
@click.option("--url", help="the public https URL 360dialog delivers to [default: the channel's]")
@click.option(
    "--basic-auth",
    "basic_auth_option",
    metavar="USER:PASS",
    help="register 'Authorization: Basic ...' [default: the channel's first pair, else "
    "WABAHOOK_BASIC_AUTH's]",
)
@click.option(
    "--header",
    metavar="NAME:VALUE",
    help="register this header [default: the channel's auth_header, else WABAHOOK_AUTH_HEADER]",
)
@_webhook_options
def webhook_set(
    url: str | None,
    basic_auth_option: str | None,
    header: str | None,
    hosting: dialog360.Hosting | None,
    channel: str | None,
    timeout: float,
    **options: Any,
) -> None:
    """Register the URL 360dialog delivers this number's notifications to, with the headers
    wabahook will require of them (360dialog sends them with every delivery).

    With --channel, the URL, hosting and credentials come from that channel's table of the
    channels file (falling back to the global settings); options given here win.
    """
    config = _webhook_config(options)
    own = _channel_settings(config, channel)
    target = url or own.url
    if not target:
        raise click.UsageError("give --url, or --channel with a url in its table")
    chosen: dialog360.Hosting = hosting or own.hosting or "cloud"
    headers = _registered_headers(config, own, basic_auth_option, header)
    try:
        dialog360.check_webhook_url(target)  # before anything is sent
    except dialog360.WebhookUrlRefused as exc:
        raise click.ClickException(f"refused before sending: {exc}") from exc
    with _api(config, chosen, timeout) as api:
        answer = api.set_webhook(target, headers)
    _show_webhook("registered with 360dialog", chosen, api.base, target, headers, answer)


@webhook.command("get")
@_webhook_options
def webhook_get(
    hosting: dialog360.Hosting | None, channel: str | None, timeout: float, **options: Any
) -> None:
    """Show the webhook URL 360dialog has registered for this number (header values
    redacted)."""
    config = _webhook_config(options)
    own = _channel_settings(config, channel)
    chosen: dialog360.Hosting = hosting or own.hosting or "cloud"
    with _api(config, chosen, timeout) as api:
        answer = api.get_webhook()
    fields = answer if isinstance(answer, dict) else {}
    registered = fields.get("url")
    _show_webhook(
        "registered at 360dialog", chosen, api.base, registered, fields.get("headers"), answer
    )
    if own.url is not None:
        verdict = (
            "matches"
            if registered == own.url
            else f"differs; `wabahook webhook set --channel {channel}` registers it"
        )
        click.echo(f"channel {channel} expects {own.url}: {verdict}")


@contextmanager
def _database(config: Config, announce: bool = False, migrate: bool = False) -> Iterator[str]:
    """The configured DSN; else the embedded server, reused if running, started (and stopped
    afterwards, whatever happens meanwhile) if not."""
    if config.database_url:
        yield config.database_url
        return
    data_dir = Path(config.data_dir).resolve()
    embedded = EmbeddedPostgres(data_dir)
    with embedded as dsn:
        if embedded.owns_server:
            if migrate:  # a data directory `serve` never used has no tables to list yet
                _run(_migrate(dsn))
            if announce:
                logger.info(
                    "embedded PostgreSQL running in %s",
                    data_dir,
                    extra={"action": "embedded_started", "dsn": dsn},
                )
        yield dsn


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a database command; a storage failure is a clear message, not a traceback."""
    try:
        return asyncio.run(work)
    except WabahookError as exc:
        raise click.ClickException(str(exc)) from exc


async def _migrate(dsn: str) -> list[str]:
    async with storage.connect(dsn) as connection:
        return await storage.migrate(connection)


_AGE = re.compile(r"(\d+)\s*([smhd])")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _parse_since(text: str, option: str = "--since") -> datetime:
    age = _AGE.fullmatch(text.strip())
    if age:
        amount, unit = age.groups()
        return datetime.now(UTC) - timedelta(**{_AGE_UNITS[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not a time or an age: {text!r}", param_hint=option) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _compact(payload: str) -> msgspec.Raw:
    """A stored payload on one line: the `json` column keeps the text as received, pretty
    printing included, and a JSONL record must not span lines. Only whitespace between
    tokens goes; numbers and strings keep their exact text (`requests --body` gives the raw
    bytes)."""
    return msgspec.Raw(msgspec.json.format(payload.encode(), indent=-1))


def _note_if_cut(rows: list[dict[str, Any]], limit: int, what: str) -> None:
    """On stderr, so the listing itself stays clean: a listing of exactly --limit rows may
    have been cut."""
    if len(rows) != limit:
        return
    more = "a larger --limit"
    if what != "requests":
        # Oldest first, and --since is "at or after": the last time shown continues the list.
        more += f", or --since {_cell(rows[-1]['received_at'])} to go on from the last one"
    click.echo(f"note: {limit} {what} listed, the --limit; there may be more: {more}", err=True)


def _print(records: list[dict[str, Any]], output: str, columns: tuple[str, ...]) -> None:
    if output == "jsonl":
        encoder = msgspec.json.Encoder()
        out = sys.stdout.buffer
        for record in records:
            out.write(encoder.encode(record) + b"\n")
        out.flush()
        return
    table = [[_cell(record[column]) for column in columns] for record in records]
    widths = [max([len(name), *(len(row[i]) for row in table)]) for i, name in enumerate(columns)]
    for row in [list(columns), *table]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    return str(value)


if __name__ == "__main__":
    main()
