"""The benchmark's traffic: valid bodies of both formats, fresh ids, intended redeliveries only."""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict

import pytest

from app.normalise import normalise
from bench.bodies import (
    NUMBERS,
    LargeStream,
    Mix,
    Request,
    cloud_text,
    single_event_templates,
    template_key,
)
from bench.budget import Sent, acknowledged_events, event_keys
from bench.wrk import lua_script, lua_string

BODIES = 20_000


@pytest.fixture(scope="module")
def stream() -> list[Request]:
    return list(itertools.islice(Mix(seed=7, run="c0ffee"), BODIES))


def test_every_body_is_stored_with_events(stream: list[Request]) -> None:
    for request in stream:
        result = normalise(request.body)
        assert result.outcome == "stored", request.kind
        assert result.events, request.kind


def test_both_formats_and_every_kind_occur(stream: list[Request]) -> None:
    cloud = {n.channel for n in NUMBERS if n.cloud}
    formats = Counter("cloud" if r.channel in cloud else "onprem" for r in stream)
    assert 0.05 < formats["onprem"] / BODIES < 0.2
    assert all(
        r.body.startswith(b'{"object":"whatsapp_business_account"')
        for r in stream
        if r.channel in cloud
    )
    types = Counter(e.type for r in stream for e in normalise(r.body).events)
    for expected in (
        "text",
        "image",
        "audio",
        "interactive",
        "reaction",
        "sent",
        "delivered",
        "read",
        "message_template_status_update",
    ):
        assert types[expected], expected
    kinds = Counter(r.kind for r in stream)
    assert kinds["cloud:status-batch"] > 0 and kinds["error"] > 0
    multi_entry = [r for r in stream if r.body.count(b'"changes"') > 1]
    assert multi_entry


def test_ids_are_unique_apart_from_redeliveries(stream: list[Request]) -> None:
    seen: set[tuple[object, ...]] = set()
    by_index = {r.index: r for r in stream}
    redeliveries = 0
    for request in stream:
        keys = event_keys(request.channel, request.body)
        if request.redelivery_of is not None:
            redeliveries += 1
            original = by_index[request.redelivery_of]
            assert (request.body, request.channel) == (original.body, original.channel)
            assert seen.issuperset(keys)
        else:
            assert len(set(keys)) == len(keys)
            assert seen.isdisjoint(keys), request.kind
            seen.update(keys)
    assert 0.01 < redeliveries / BODIES < 0.03


def test_statuses_follow_inbound_in_order(stream: list[Request]) -> None:
    progress: dict[str, list[str]] = defaultdict(list)
    inbound = statuses = 0
    for request in stream:
        if request.redelivery_of is not None:
            continue
        events = normalise(request.body).events
        statuses += any(e.kind == "status" for e in events)
        inbound += any(e.kind == "message" for e in events)
        for event in events:
            if event.kind == "status":
                assert event.message_id is not None
                progress[event.message_id].append(event.type or "")
    for states in progress.values():
        assert states == ["sent", "delivered", "read"][: len(states)]
    # 360dialog's sizing rule: a sent, delivered and read callback per outbound message.
    assert 2.5 < statuses / inbound < 3.5


def test_a_few_bodies_are_hundreds_of_kb(stream: list[Request]) -> None:
    large = [r for r in stream if len(r.body) > 100_000]
    assert 0 < len(large) < BODIES / 100
    assert all(len(r.body) < 500_000 for r in large)


def test_stream_is_deterministic_and_runs_differ() -> None:
    first = [r.body for r in itertools.islice(Mix(seed=3, run="aaaaaa"), 500)]
    again = [r.body for r in itertools.islice(Mix(seed=3, run="aaaaaa"), 500)]
    other = [r.body for r in itertools.islice(Mix(seed=3, run="bbbbbb"), 500)]
    assert first == again
    assert not set(first) & set(other)


def test_acknowledged_events_count_only_200s() -> None:
    mix = Mix(seed=5, run="abcdef")
    requests = list(itertools.islice(mix, 300))
    sent = [Sent("mix", r.index, 200 if r.index % 10 else 503, 1.0) for r in requests]
    expected = acknowledged_events(sent, mix, LargeStream("abcdef", 2048))
    keys = {k for r in requests if r.index % 10 for k in event_keys(r.channel, r.body)}
    assert expected == keys


def test_large_stream_bodies() -> None:
    large = LargeStream("abcdef", size=3_000_000)
    first, second = large.body(0), large.body(1)
    assert len(first.body) == len(second.body) == 3_000_000
    assert event_keys(first.channel, first.body) != event_keys(second.channel, second.body)
    assert normalise(first.body).outcome == "stored"


def test_templates_render_the_same_bodies_wrk_sends() -> None:
    template = cloud_text(1024)
    key = template_key("abcde", thread=3, slot=0, counter=41)
    assert re.fullmatch(r"[0-9a-f]{20}", key)
    body = template.render([key])
    assert len(body) == template.size == 1024
    (event,) = normalise(body).events
    assert event.kind == "message" and event.message_id is not None and key in event.message_id
    for single in single_event_templates():
        assert len(normalise(single.render([key])).events) == 1, single.name
    script = lua_script([template], port=8123, run="abcde", interval_ms=0.0)
    assert "Content-Length: 1024" in script and "/webhook/cloud-de" in script


def test_lua_string_escapes_every_byte() -> None:
    data = bytes(range(256)) + '"\\ü'.encode()
    literal = lua_string(data)
    assert literal.isascii() and "\n" not in literal

    def unescape(match: re.Match[str]) -> str:
        token = match.group(1)
        return chr(int(token)) if token.isdigit() else token

    decoded = re.sub(r"\\(\d{3}|.)", unescape, literal[1:-1])
    assert decoded.encode("latin-1") == data
