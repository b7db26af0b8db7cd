"""The `wabahook` command line, run as a real process against a real server and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from click.testing import CliRunner

from app.cli import main
from app.config import SECRET_FIELDS, Config, env_name, field_names
from app.embedded import EmbeddedPostgres
from tests.corpus import CASES, CLOUD_STATUS, CLOUD_TEXT, ONPREM_TEXT, Case
from tests.support.cli import run_wabahook
from tests.support.databases import fetch, fresh_database
from tests.support.environment import scrubbed_environment
from tests.support.servers import running_server

EVENT_KEYS = ("channel", "kind", "type", "id", "wa_id", "phone_number_id")
EVENT_COLUMNS = "received_at  channel  kind  type  id  wa_id  phone_number_id"
# Not UTF-8, with a NUL byte: quarantined, and the bytes must come back exactly.
RAW_BODY = b'\xff\xfe{"object":\x00"whatsapp_business_account"}\x80\r\n'


def _case(name: str) -> Case:
    return next(case for case in CASES if case.name == name)


UNKNOWN = next(case for case in CASES if case.outcome == "unknown")
# (channel, body, case describing the body) in the order they are posted.
POSTED: list[tuple[str, bytes, Case | None]] = [
    ("acme-de", CLOUD_TEXT, _case("cloud-text")),
    ("acme-op", ONPREM_TEXT, _case("onprem-text")),
    ("acme-de", CLOUD_STATUS, _case("cloud-status-read")),
    ("acme-de", RAW_BODY, None),
    ("acme-op", UNKNOWN.body, UNKNOWN),
]


def _expected_events(channel: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    return [
        {
            "channel": ch,
            "kind": e.kind,
            "type": e.type,
            "id": e.message_id,
            "wa_id": e.wa_id,
            "phone_number_id": e.phone_number_id,
        }
        for ch, _, case in POSTED
        if case is not None
        for e in case.events
        if channel in (None, ch) and kind in (None, e.kind)
    ]


def ok(*args: str) -> bytes:
    result = run_wabahook(*args)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def jsonl(*args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok(*args, "--format", "jsonl").splitlines()]


@dataclass(frozen=True)
class Stored:
    database_url: str
    before: datetime
    after: datetime

    def events(self, *args: str) -> list[dict[str, Any]]:
        return jsonl("events", "--database-url", self.database_url, *args)

    def requests(self, *args: str) -> list[dict[str, Any]]:
        return jsonl("requests", "--database-url", self.database_url, *args)


@pytest.fixture(scope="module")
def stored(
    server_dsn: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stored]:
    """A server that was sent POSTED, one body after another; its database for the CLI."""
    with fresh_database(server_dsn, template_database) as url:
        config = Config(database_url=url, data_dir=str(tmp_path_factory.mktemp("cli")))
        with running_server(config) as base_url:
            before = datetime.now(UTC)
            with httpx.Client(base_url=base_url, timeout=60) as client:
                for channel, body, _ in POSTED:
                    response = client.post(f"/webhook/{channel}", content=body)
                    assert (response.status_code, response.text) == (200, "ok\n")
            after = datetime.now(UTC)
            yield Stored(url, before, after)


# --- help ---------------------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])

    assert result.exit_code == 0, result.output
    for command in ("serve", "migrate", "events", "requests", "config", "webhook"):
        assert f"  {command}  " in result.output


def test_serve_help_shows_every_variable() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])

    assert result.exit_code == 0, result.output
    for field in field_names():
        assert "--" + field.replace("_", "-") in result.output
        assert env_name(field) in result.output, f"{env_name(field)} missing from serve --help"


@pytest.mark.parametrize("command", ["migrate", "events", "requests"])
def test_database_commands_show_their_variables(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])

    assert result.exit_code == 0, result.output
    assert "DATABASE_URL" in result.output
    assert "WABAHOOK_DATA_DIR" in result.output


# --- events -------------------------------------------------------------------------------


def test_events_jsonl_lists_every_event(stored: Stored) -> None:
    events = stored.events()

    assert [{key: event[key] for key in EVENT_KEYS} for event in events] == _expected_events()
    for event in events:
        received = datetime.fromisoformat(event["received_at"])
        assert stored.before - timedelta(seconds=1) <= received <= stored.after
        assert isinstance(event["payload"], dict)
    stored_ids = {r["id"] for r in stored.requests("--outcome", "stored")}
    assert {event["request_id"] for event in events} == stored_ids


@pytest.mark.parametrize(
    ("args", "channel", "kind"),
    [
        (("--channel", "acme-op"), "acme-op", None),
        (("--channel", "acme-de"), "acme-de", None),
        (("--channel", "nobody"), "nobody", None),
        (("--kind", "status"), None, "status"),
        (("--kind", "message", "--channel", "acme-de"), "acme-de", "message"),
    ],
    ids=["channel-op", "channel-de", "channel-none", "kind", "kind-and-channel"],
)
def test_events_filters(
    stored: Stored, args: tuple[str, ...], channel: str | None, kind: str | None
) -> None:
    events = stored.events(*args)

    assert [{key: e[key] for key in EVENT_KEYS} for e in events] == _expected_events(channel, kind)


def test_events_since(stored: Stored) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    just_before = (stored.before - timedelta(seconds=1)).isoformat()

    assert len(stored.events("--since", "1h")) == len(_expected_events())
    assert len(stored.events("--since", just_before)) == len(_expected_events())
    assert stored.events("--since", future) == []


def test_events_since_rejects_nonsense(stored: Stored) -> None:
    result = run_wabahook("events", "--database-url", stored.database_url, "--since", "yesterday")

    assert result.returncode == 2
    assert b"not a time or an age" in result.stderr


def test_events_limit_keeps_the_oldest(stored: Stored) -> None:
    events = stored.events("--limit", "2")

    assert [{key: e[key] for key in EVENT_KEYS} for e in events] == _expected_events()[:2]


def test_events_table(stored: Stored) -> None:
    lines = ok("events", "--database-url", stored.database_url).decode().splitlines()

    assert lines[0].split() == EVENT_COLUMNS.split()
    rows = [line.split() for line in lines[1:]]
    expected = _expected_events()
    assert len(rows) == len(expected)
    for row, event in zip(rows, expected, strict=True):
        datetime.fromisoformat(row[0])
        assert row[1:] == [event[key] or "-" for key in EVENT_KEYS]


def _notice(*args: str) -> tuple[list[dict[str, Any]], str]:
    """The JSONL records of a listing, and what it said on stderr."""
    result = run_wabahook(*args, "--format", "jsonl")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr.decode()


def test_events_at_exactly_the_limit_say_there_may_be_more(stored: Stored) -> None:
    count = len(_expected_events())
    url = ("--database-url", stored.database_url)

    cut, note = _notice("events", *url, "--limit", str(count))
    whole, quiet = _notice("events", *url, "--limit", str(count + 1))

    assert len(cut) == len(whole) == count
    prefix = f"note: {count} events listed, the --limit; there may be more: a larger --limit, "
    assert note.startswith(prefix + "or --since ")
    assert note.count("\n") == 1
    assert quiet == ""
    # The --since it suggests goes on from the last event shown.
    since = note.removeprefix(prefix + "or --since ").split()[0]
    after = stored.events("--since", since)
    assert cut[-1]["event_id"] in [event["event_id"] for event in after]


def test_requests_at_exactly_the_limit_say_there_may_be_more(stored: Stored) -> None:
    url = ("--database-url", stored.database_url)

    cut, note = _notice("requests", *url, "--limit", str(len(POSTED)))
    whole, quiet = _notice("requests", *url, "--limit", str(len(POSTED) + 1))

    assert len(cut) == len(whole) == len(POSTED)
    assert note == (
        f"note: {len(POSTED)} requests listed, the --limit; there may be more: a larger --limit\n"
    )
    assert quiet == ""


def _pretty(body: bytes) -> bytes:
    return json.dumps(json.loads(body), indent=2, ensure_ascii=False).encode()


def _elements(body: bytes) -> list[Any]:
    """The messages, statuses and errors of a Cloud body: what its events' payloads are."""
    return [
        item
        for entry in json.loads(body)["entry"]
        for change in entry["changes"]
        for key in ("messages", "statuses", "errors")
        for item in change["value"].get(key, [])
    ]


def test_events_jsonl_is_one_line_per_event_for_pretty_printed_bodies(
    server_factory: Callable[..., str], database_url: str
) -> None:
    bodies = [_pretty(CLOUD_TEXT), _pretty(CLOUD_STATUS)]
    base_url = server_factory(database_url)
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for body in bodies:
            assert client.post("/webhook/pretty", content=body).status_code == 200
    stored = asyncio.run(fetch(database_url, "SELECT payload::text AS p FROM wabahook_events"))
    assert stored and all("\n" in row["p"] for row in stored), "payloads kept as received"

    lines = ok("events", "--database-url", database_url, "--format", "jsonl").splitlines()

    expected = [item for body in bodies for item in _elements(body)]
    assert len(lines) == len(expected) == len(stored)
    payloads = [json.loads(line)["payload"] for line in lines]
    canonical = sorted(json.dumps(p, sort_keys=True) for p in payloads)
    assert canonical == sorted(json.dumps(p, sort_keys=True) for p in expected)
    # The raw bytes stay available as they arrived.
    [first, second] = jsonl("requests", "--database-url", database_url)
    assert ok("requests", "--database-url", database_url, "--body", first["id"]) == bodies[0]
    assert ok("requests", "--database-url", database_url, "--body", second["id"]) == bodies[1]


# --- requests -----------------------------------------------------------------------------


def test_requests_lists_every_body_with_its_outcome(stored: Stored) -> None:
    requests = stored.requests()

    listed = [(r["channel"], r["outcome"], r["bytes"], r["sha256"], r["events"]) for r in requests]
    assert listed == [
        (
            channel,
            case.outcome if case else "quarantined",
            len(body),
            hashlib.sha256(body).hexdigest(),
            len(case.events) if case else 0,
        )
        for channel, body, case in POSTED
    ]
    assert len({r["id"] for r in requests}) == len(POSTED)


def test_requests_quarantined(stored: Stored) -> None:
    [request] = stored.requests("--outcome", "quarantined")

    assert request["channel"] == "acme-de"
    assert request["outcome"] == "quarantined"
    assert request["bytes"] == len(RAW_BODY)
    assert request["sha256"] == hashlib.sha256(RAW_BODY).hexdigest()
    assert request["events"] == 0
    uuid.UUID(request["id"])
    assert stored.before - timedelta(seconds=1) <= datetime.fromisoformat(request["received_at"])


def test_requests_filters_and_table(stored: Stored) -> None:
    [unknown] = stored.requests("--outcome", "unknown", "--channel", "acme-op")
    assert unknown["sha256"] == hashlib.sha256(UNKNOWN.body).hexdigest()
    assert len(stored.requests("--limit", "1")) == 1

    lines = ok("requests", "--database-url", stored.database_url, "--channel", "acme-op").decode()
    header, *rows = lines.splitlines()
    assert header.split() == [
        "id",
        "received_at",
        "channel",
        "outcome",
        "bytes",
        "events",
        "sha256",
    ]
    assert len(rows) == 2
    assert unknown["id"] in lines


def test_requests_body_writes_the_raw_bytes(stored: Stored) -> None:
    [quarantined] = stored.requests("--outcome", "quarantined")

    body = ok("requests", "--database-url", stored.database_url, "--body", quarantined["id"])

    assert body == RAW_BODY


def test_requests_body_gives_back_every_posted_body(stored: Stored) -> None:
    bodies = [
        ok("requests", "--database-url", stored.database_url, "--body", request["id"])
        for request in stored.requests()
    ]

    assert bodies == [body for _, body, _ in POSTED]


def test_requests_body_of_an_unknown_id_fails(stored: Stored) -> None:
    missing = str(uuid.uuid4())

    result = run_wabahook("requests", "--database-url", stored.database_url, "--body", missing)

    assert result.returncode != 0
    assert result.stdout == b""
    assert f"no request {missing}".encode() in result.stderr
    assert b"Traceback" not in result.stderr


def test_requests_body_rejects_a_malformed_id(stored: Stored) -> None:
    result = run_wabahook("requests", "--database-url", stored.database_url, "--body", "42")

    assert result.returncode == 2
    assert b"not a valid UUID" in result.stderr


# --- config -------------------------------------------------------------------------------

# One value per secret setting, each a string that must never be printed.
SECRETS = {
    "database_url": "postgresql://wabahook:db-pass-4411@db.internal/wabahook",
    "basic_auth": "360dialog:basic-pass-9902,ops:basic-pass-9903",
    "auth_header": "X-Webhook-Token: header-token-5521",
    "app_secret": "app-secret-7781,app-secret-7782",
    "verify_token": "verify-token-3319",
    "d360_api_key": "d360-key-6621",
    "forward_secret": "whsec_Zm9yd2FyZC1zZWNyZXQtMjIzNC1mb3J3YXJkLXNlY3JldA==",
    "forward_app_secret": "forward-app-secret-8812",
}
SECRET_STRINGS = (
    "db-pass-4411",
    "basic-pass-9902",
    "basic-pass-9903",
    "header-token-5521",
    "app-secret-7781",
    "app-secret-7782",
    "verify-token-3319",
    "d360-key-6621",
    "Zm9yd2FyZC1zZWNyZXQtMjIzNC1mb3J3YXJkLXNlY3JldA",
    "forward-app-secret-8812",
)


def _config(*args: str) -> bytes:
    env = {
        name: value
        for name, value in scrubbed_environment().items()
        if not name.startswith("D360_")
    }
    env.update({env_name(name): value for name, value in SECRETS.items()})
    env.update({"WABAHOOK_MAX_EVENTS": "77", "D360_BASE_URL": "https://waba-sandbox.360dialog.io"})
    result = run_wabahook("config", "--port", "8443", *args, env=env)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    for secret in SECRET_STRINGS:
        assert secret.encode() not in result.stdout + result.stderr, secret
    return result.stdout


def test_the_test_sets_every_secret_setting() -> None:
    assert set(SECRETS) == SECRET_FIELDS


def test_config_prints_every_setting_with_secrets_redacted() -> None:
    lines = _config().decode().splitlines()

    settings = dict(line.split(" = ", 1) for line in lines)
    assert list(settings) == list(field_names())
    assert {name: settings[name] for name in SECRET_FIELDS} == dict.fromkeys(
        SECRET_FIELDS, "<redacted>"
    )
    assert settings["port"] == "8443"  # a flag
    assert settings["max_events"] == "77"  # the environment
    assert settings["host"] == "127.0.0.1"  # a default
    assert settings["d360_base_url"] == "https://waba-sandbox.360dialog.io"
    assert settings["ssl_certfile"] == "(unset)"


def test_config_json_is_the_redacted_config() -> None:
    settings = json.loads(_config("--format", "json"))

    expected = Config.from_mapping(
        {
            **SECRETS,
            "port": 8443,
            "max_events": 77,
            "d360_base_url": "https://waba-sandbox.360dialog.io",
            "metrics_listen": "main",  # what the test environment sets for every command
        }
    ).redacted()
    assert settings == json.loads(msgspec.json.encode(expected))  # tuples become lists


# --- migrate ------------------------------------------------------------------------------


def test_migrate_on_a_migrated_database(stored: Stored) -> None:
    assert ok("migrate", "--database-url", stored.database_url) == b"schema is up to date\n"


# --- the embedded default -----------------------------------------------------------------


def test_commands_without_database_url_run_the_embedded_server(data_dir: Path) -> None:
    assert ok("migrate", "--data-dir", str(data_dir)).startswith(b"applied: 0001_")
    assert EmbeddedPostgres.running_dsn(data_dir) is None
    assert ok("events", "--data-dir", str(data_dir)).decode().split() == EVENT_COLUMNS.split()
    assert EmbeddedPostgres.running_dsn(data_dir) is None
    assert (data_dir / "pgdata" / "PG_VERSION").is_file()


def test_events_on_a_new_data_dir_prints_an_empty_table(data_dir: Path) -> None:
    result = run_wabahook("events", "--data-dir", str(data_dir))

    # Not an assertion: a server left running must fail this test, not count as the bug.
    if EmbeddedPostgres.running_dsn(data_dir) is not None:
        raise RuntimeError(f"the embedded server for {data_dir} was left running")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.decode().split() == EVENT_COLUMNS.split()
