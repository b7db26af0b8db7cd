"""`Config`: defaults, the environment mapping, validation and the hand-over to workers."""

from __future__ import annotations

import os
import re

import msgspec
import pytest

from app.config import (
    ENV_PREFIX,
    EXPORT_VARIABLE,
    Config,
    MiB,
    describe_fields,
    env_name,
    field_names,
)

# The contract-5 limits as the README's settings table states them.
README_DEFAULTS = {
    "max_body": 4 * MiB,
    "batch_rows": 4000,
    "batch_bytes": 16 * MiB,
    "flush_ms": 10.0,
    "flush_slots": 2,
    "pool_size": 4,
    "buffer_rows": 100_000,
    "buffer_bytes": 256 * MiB,
    "backpressure_ms": 1000.0,
    "ack_deadline_ms": 3500.0,
    "retry_after_s": 10,
    "timeout_keep_alive": 30.0,
    "limit_concurrency": None,
}


def test_defaults() -> None:
    config = Config()

    assert {name: getattr(config, name) for name in README_DEFAULTS} == README_DEFAULTS
    assert config.database_url is None
    assert config.data_dir == ".wabahook"
    assert (config.host, config.port, config.workers) == ("127.0.0.1", 8000, 1)
    assert (config.ssl_certfile, config.ssl_keyfile) == (None, None)
    assert config.log_level == "info"


def test_config_is_frozen_and_rejects_unknown_settings() -> None:
    config = Config()

    with pytest.raises(AttributeError):
        config.port = 9000  # type: ignore[misc]
    with pytest.raises(TypeError):
        Config(bogus=1)  # type: ignore[call-arg]
    with pytest.raises(msgspec.ValidationError, match="bogus"):
        Config.from_mapping({"bogus": "1"})


def test_from_environ_of_nothing_is_the_defaults() -> None:
    assert Config.from_environ({}) == Config()


def test_from_environ_coerces_strings() -> None:
    config = Config.from_environ(
        {
            "DATABASE_URL": "postgresql://app@db.internal/wabahook",
            "WABAHOOK_DATA_DIR": "/var/lib/wabahook",
            "WABAHOOK_HOST": "0.0.0.0",
            "WABAHOOK_PORT": "8080",
            "WABAHOOK_WORKERS": "3",
            "WABAHOOK_SSL_CERTFILE": "/etc/tls/chain.pem",
            "WABAHOOK_SSL_KEYFILE": "/etc/tls/key.pem",
            "WABAHOOK_MAX_BODY": "1048576",
            "WABAHOOK_BATCH_ROWS": "500",
            "WABAHOOK_BATCH_BYTES": "2097152",
            "WABAHOOK_FLUSH_MS": "2.5",
            "WABAHOOK_FLUSH_SLOTS": "3",
            "WABAHOOK_POOL_SIZE": "8",
            "WABAHOOK_BUFFER_ROWS": "1000",
            "WABAHOOK_BUFFER_BYTES": "8388608",
            "WABAHOOK_BACKPRESSURE_MS": "0",
            "WABAHOOK_ACK_DEADLINE_MS": "4000",
            "WABAHOOK_RETRY_AFTER_S": "30",
            "WABAHOOK_TIMEOUT_KEEP_ALIVE": "75",
            "WABAHOOK_LIMIT_CONCURRENCY": "256",
            "WABAHOOK_LOG_LEVEL": "debug",
        }
    )

    assert config == Config(
        database_url="postgresql://app@db.internal/wabahook",
        data_dir="/var/lib/wabahook",
        host="0.0.0.0",
        port=8080,
        workers=3,
        ssl_certfile="/etc/tls/chain.pem",
        ssl_keyfile="/etc/tls/key.pem",
        max_body=1048576,
        batch_rows=500,
        batch_bytes=2097152,
        flush_ms=2.5,
        flush_slots=3,
        pool_size=8,
        buffer_rows=1000,
        buffer_bytes=8388608,
        backpressure_ms=0.0,
        ack_deadline_ms=4000.0,
        retry_after_s=30,
        timeout_keep_alive=75.0,
        limit_concurrency=256,
        log_level="debug",
    )
    assert type(config.port) is int
    assert type(config.flush_ms) is float
    assert type(config.ack_deadline_ms) is float
    assert type(config.limit_concurrency) is int


def test_from_environ_ignores_other_variables() -> None:
    config = Config.from_environ(
        {"WABAHOOK_PORT": "9000", "PORT": "1", "WABAHOOK_DATABASE_URL": "x", "PGHOST": "y"}
    )

    assert config == Config(port=9000)


def test_nullable_settings_can_be_set_to_null() -> None:
    config = Config.from_environ({"WABAHOOK_LIMIT_CONCURRENCY": "null"})

    assert config.limit_concurrency is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("WABAHOOK_PORT", "-1", "port must be positive"),
        ("WABAHOOK_PORT", "0", "port must be positive"),
        ("WABAHOOK_WORKERS", "0", "workers must be positive"),
        ("WABAHOOK_MAX_BODY", "-4096", "max_body must be positive"),
        ("WABAHOOK_BATCH_ROWS", "0", "batch_rows must be positive"),
        ("WABAHOOK_BATCH_BYTES", "0", "batch_bytes must be positive"),
        ("WABAHOOK_FLUSH_SLOTS", "0", "flush_slots must be positive"),
        ("WABAHOOK_POOL_SIZE", "0", "pool_size must be positive"),
        ("WABAHOOK_RETENTION_DAYS", "7", "retention_days must be at least 8"),
        ("WABAHOOK_POOL_SIZE", "1", "pool_size must be at least flush_slots"),
        ("WABAHOOK_BUFFER_ROWS", "0", "buffer_rows must be positive"),
        ("WABAHOOK_BUFFER_BYTES", "-1", "buffer_bytes must be positive"),
        ("WABAHOOK_FLUSH_MS", "0", "flush_ms"),
        ("WABAHOOK_FLUSH_MS", "-10", "flush_ms"),
        ("WABAHOOK_ACK_DEADLINE_MS", "0", "ack_deadline_ms"),
        ("WABAHOOK_BACKPRESSURE_MS", "-1", "backpressure_ms"),
        ("WABAHOOK_PORT", "http", "Expected `int`"),
        ("WABAHOOK_PORT", "80.5", "Expected `int`"),
        ("WABAHOOK_BATCH_ROWS", "4k", "Expected `int`"),
        ("WABAHOOK_FLUSH_MS", "ten", "Expected `float`"),
        ("WABAHOOK_LIMIT_CONCURRENCY", "many", "Expected `int | null`"),
        ("WABAHOOK_LOG_LEVEL", "verbose", "Invalid enum value 'verbose'"),
        ("WABAHOOK_LOG_LEVEL", "INFO", "Invalid enum value 'INFO'"),
    ],
)
def test_invalid_values_raise(variable: str, value: str, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(message)):
        Config.from_environ({variable: value})


@pytest.mark.parametrize(
    "settings",
    [{"port": -1}, {"workers": 0}, {"flush_ms": 0.0}, {"pool_size": 1, "flush_slots": 2}],
    ids=repr,
)
def test_invalid_values_raise_when_built_directly(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Config(**settings)  # type: ignore[arg-type]


def test_negative_retry_after_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        Config.from_environ({"WABAHOOK_RETRY_AFTER_S": "-5"})


def test_nan_milliseconds_are_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        Config.from_environ({"WABAHOOK_FLUSH_MS": "nan"})


def test_exported_config_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXPORT_VARIABLE, raising=False)  # restored (removed) after the test
    config = Config(
        database_url="postgresql://u@/db?host=/tmp/sock",
        port=9001,
        flush_ms=2.5,
        limit_concurrency=64,
        ssl_certfile="/etc/tls/chain.pem",
        log_level="warning",
    )

    config.export_to_environ()

    assert EXPORT_VARIABLE in os.environ
    assert Config.from_environ(dict(os.environ)) == config
    assert Config.from_environ() == config


def test_exported_config_wins_over_single_variables() -> None:
    exported = Config(port=9001, pool_size=6)
    environ = {
        EXPORT_VARIABLE: msgspec.json.encode(exported).decode(),
        "WABAHOOK_PORT": "9999",
        "DATABASE_URL": "postgresql://elsewhere/db",
    }

    assert Config.from_environ(environ) == exported


def test_from_environ_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXPORT_VARIABLE, raising=False)
    monkeypatch.setenv("WABAHOOK_BATCH_ROWS", "123")
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-env/db")

    config = Config.from_environ()

    assert (config.batch_rows, config.database_url) == (123, "postgresql://from-env/db")


def test_every_field_is_described_with_its_default_and_kind() -> None:
    described = describe_fields()
    defaults = Config()

    assert tuple(described) == field_names()
    for name, (description, default, kind) in described.items():
        assert description.strip(), f"{name} has no description"
        assert default == getattr(defaults, name)
        value = getattr(defaults, name)
        if value is not None and kind is not str:
            assert type(value) is kind, name
    assert described["port"][2] is int
    assert described["flush_ms"][2] is float
    assert described["limit_concurrency"][2] is int
    assert described["log_level"][2] is str


def test_every_field_has_an_environment_variable() -> None:
    names = {field: env_name(field) for field in field_names()}

    assert names.pop("database_url") == "DATABASE_URL"
    assert names.pop("d360_api_key") == "D360_API_KEY"
    assert names.pop("d360_base_url") == "D360_BASE_URL"
    for field, variable in names.items():
        assert variable == ENV_PREFIX + field.upper()
        assert re.fullmatch(r"WABAHOOK_[A-Z0-9_]+", variable)
    assert len(set(names.values())) == len(names)
    assert EXPORT_VARIABLE not in names.values()


def test_list_settings_split_on_commas_from_the_environment() -> None:
    config = Config.from_environ(
        {"WABAHOOK_BASIC_AUTH": "360dialog:old, 360dialog:new,", "WABAHOOK_APP_SECRET": "s1"}
    )
    assert config.basic_auth == ["360dialog:old", "360dialog:new"]
    assert config.app_secret == ["s1"]


def test_redacted_settings_show_no_secret() -> None:
    config = Config(
        database_url="postgresql://u:pw@db/x",
        basic_auth=["u:pw"],
        auth_header="X-Token: pw",
        app_secret=["pw"],
        verify_token="pw",
        d360_api_key="pw",
        port=8123,
    )
    shown = config.redacted()
    assert "pw" not in repr(shown)
    assert shown["port"] == 8123
    assert shown["basic_auth"] == "<redacted>"
    assert Config().redacted()["basic_auth"] is None  # unset is shown as unset


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("basic_auth", ["no-colon"], "user:password"),
        ("basic_auth", [":password"], "user:password"),
        ("auth_header", "X-Token", "Name: value"),
        ("auth_header", "X-Token:  ", "Name: value"),
    ],
)
def test_malformed_credentials_settings_are_refused(
    setting: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Config(**{setting: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["main", "off", "127.0.0.1:9464", "0.0.0.0:0", "[::1]:9464"])
def test_metrics_listen_accepts(value: str) -> None:
    assert Config(metrics_listen=value).metrics_listen == value


@pytest.mark.parametrize("value", ["9464", ":9464", "host:", "host:http", "host:65536", ""])
def test_metrics_listen_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="metrics_listen"):
        Config(metrics_listen=value)
