"""What one hand-on sends and how its outcome is scheduled: signatures, Retry-After, the retry
schedule and its dead letter, the forwarding settings, and the handler loader."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, date, datetime, timedelta

import msgspec
import pytest
import standardwebhooks

from app import signing
from app.channels import ChannelSettings
from app.config import DEFAULT_RETRIES, Config
from app.dispatcher import (
    BUSY_RATE,
    BUSY_STEP_INTERVAL,
    JITTER,
    STEP_INTERVAL,
    Attempt,
    Dispatcher,
    step_interval,
)
from app.forwarding import Delivery, Event, Outcome, load_handler, retry_after_seconds, routing
from app.metrics import Metrics

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_standard_webhooks_signature_verifies_with_the_reference_implementation() -> None:
    body = b'{"id":1,"payload":{"text":"Gr\xc3\xbc\xc3\x9fe"}}'
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "dlv_42",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signing.standard_webhooks(
            signing.secret_key(SECRET), "dlv_42", timestamp, body
        ),
    }
    standardwebhooks.Webhook(SECRET).verify(body, headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(body + b" ", headers)


def test_hub_signature_is_metas_hex_hmac_of_the_body() -> None:
    body = b'{"object":"whatsapp_business_account"}'
    expected = hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    assert signing.hub_signature("app-secret", body) == f"sha256={expected}"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("s" * 40, "must start with whsec_"),
        ("whsec_not base64!", "whsec_ and base64"),
        ("whsec_" + base64.b64encode(b"k" * 23).decode(), "24 to 64 key bytes"),
    ],
)
def test_a_bad_signing_secret_is_refused_with_the_reason(secret: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config(forward_secret=secret)


def test_a_signing_secret_at_the_shortest_key_is_taken() -> None:
    Config(forward_secret="whsec_" + base64.b64encode(b"k" * 24).decode())


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("86400", 86400.0),
        ("86401", 86400.0),  # a day at most
        ("Fri, 27 Nov 2026 12:00:30 GMT", 30.0),
        ("Fri, 27 Nov 2026 11:59:00 GMT", 0.0),  # in the past: now
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


def test_forward_retries_come_from_a_comma_separated_variable() -> None:
    config = Config.from_environ({"WABAHOOK_FORWARD_RETRIES": "1, 2.5,60"})
    assert config.forward_retries == (1.0, 2.5, 60.0)
    assert Config().forward_retries == DEFAULT_RETRIES
    assert 20 * 3600 <= sum(DEFAULT_RETRIES) <= 28 * 3600  # about a day


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"forward_retries": (1.0, -1.0)}, "forward_retries are seconds >= 0"),
        ({"forward_retries": (float("nan"),)}, "forward_retries are seconds >= 0"),
        ({"forward_url": "http://a", "handler": "m:f"}, "exclude each other"),
        ({"handler": "no-colon"}, "package.module:function"),
        ({"handler": "m:f", "forward_mode": "bodies"}, "forward_mode must be events"),
        ({"forward_timeout_s": 0}, "forward_timeout_s must be positive"),
        ({"forward_concurrency": 0}, "forward_concurrency must be positive"),
    ],
)
def test_bad_forwarding_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config(**settings)  # type: ignore[arg-type]


def test_no_retries_means_the_first_failure_is_final() -> None:
    dispatcher = _dispatcher(Config(forward_retries=()))
    state, next_attempt, error = dispatcher.next_state(_attempt(0, Outcome(False, "HTTP 500")))
    assert (state, next_attempt, error) == ("dead", None, "HTTP 500")


def test_the_schedule_with_jitter_then_the_dead_letter() -> None:
    retries = (10.0, 100.0)
    dispatcher = _dispatcher(Config(forward_retries=retries))
    for attempts, delay in enumerate(retries):
        before = datetime.now(UTC)
        state, next_attempt, _ = dispatcher.next_state(_attempt(attempts, Outcome(False, "x")))
        assert state == "retrying" and next_attempt is not None
        low = before + timedelta(seconds=delay * (1 - JITTER))
        high = datetime.now(UTC) + timedelta(seconds=delay * (1 + JITTER))
        assert low <= next_attempt <= high
    assert dispatcher.next_state(_attempt(len(retries), Outcome(False, "x")))[0] == "dead"


def test_retry_after_replaces_the_schedule_and_success_ends_it() -> None:
    dispatcher = _dispatcher(Config(forward_retries=(1.0,)))
    before = datetime.now(UTC)
    state, next_attempt, _ = dispatcher.next_state(_attempt(0, Outcome(False, "HTTP 429", 600.0)))
    assert state == "retrying" and next_attempt is not None
    assert timedelta(seconds=599) <= next_attempt - before <= timedelta(seconds=601)
    assert dispatcher.next_state(_attempt(0, Outcome(True))) == ("delivered", None, None)


def test_routing_and_whether_a_dispatcher_runs() -> None:
    channels = {
        "crm": ChannelSettings(forward_url="http://crm"),
        "quiet": ChannelSettings(forward_url=""),
        "plain": ChannelSettings(),
    }
    assert routing(Config(forward_url="http://app"), channels) == (
        routing(Config(handler="tests.handlers:record"), channels)
    )
    route = routing(Config(), channels)
    assert (route.default, route.on, route.off) == (False, ("crm",), ("quiet",))
    assert routing(Config(), channels).any
    assert not routing(Config(), {"plain": ChannelSettings()}).any
    assert routing(Config(forward_url="http://app"), {}).any


def test_a_handler_must_be_an_importable_async_function() -> None:
    assert load_handler("tests.handlers:record").__name__ == "record"
    with pytest.raises(ValueError, match="is not an async function"):
        load_handler("tests.handlers:not_async")
    with pytest.raises(ValueError, match="No module named"):
        load_handler("tests.no_such_module:record")
    with pytest.raises(ValueError, match="has no attribute"):
        load_handler("tests.handlers:missing")


def test_the_envelope_splices_the_stored_payload_unchanged() -> None:
    stored = '{"from": "4915198765432",  "id": "wamid.1", "price": 1.10}'
    row = {
        "id": 9,
        "received_on": date(2026, 11, 27),
        "attempts": 0,
        "event_id": 5,
        "channel": "main",
        "kind": "message",
        "type": "text",
        "message_id": "wamid.1",
        "wa_id": "4915198765432",
        "user_id": None,
        "group_id": None,
        "phone_number_id": "190011223344556",
        "waba_id": None,
        "received_at": NOW,
        "event_ts": None,
        "request_id": uuid.UUID(int=1),
        "seq": 0,
        "payload": stored,
        "body": None,
    }
    delivery = Delivery.from_row(row)
    encoded = msgspec.json.encode(delivery.event)
    assert encoded.endswith(b'"payload":' + stored.encode() + b"}")  # 1.10 stays 1.10
    assert msgspec.json.decode(encoded)["received_at"] == "2026-11-27T12:00:00Z"
    assert delivery.webhook_id == "dlv_9"


def test_steps_lengthen_only_past_the_busy_rate() -> None:
    at_the_rate = int(BUSY_RATE)
    assert step_interval(at_the_rate, 1.0) == STEP_INTERVAL
    assert step_interval(at_the_rate + 1, 1.0) == BUSY_STEP_INTERVAL
    # Per second of the window, however long it ran.
    assert step_interval(2 * at_the_rate, 2.0) == STEP_INTERVAL
    assert step_interval(2 * at_the_rate + 1, 2.0) == BUSY_STEP_INTERVAL
    assert step_interval(0, 1.0) == STEP_INTERVAL
    assert step_interval(-5, 1.0) == STEP_INTERVAL  # the sequence set back: not busy


def _dispatcher(config: Config) -> Dispatcher:
    return Dispatcher(config, {}, "postgresql://unused", Metrics.disabled())


def _attempt(attempts: int, outcome: Outcome) -> Attempt:
    event = Event(
        id=1,
        channel="main",
        kind="message",
        type="text",
        message_id=None,
        wa_id=None,
        user_id=None,
        group_id=None,
        phone_number_id=None,
        waba_id=None,
        received_at=NOW,
        event_ts=None,
        request_id=uuid.UUID(int=1),
        payload=msgspec.Raw(b"{}"),
    )
    return Attempt(Delivery(1, NOW.date(), attempts, event, 0, None), outcome)
