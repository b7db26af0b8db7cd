"""The normaliser against the corpus, plus property tests for hostile input.

`_spec_walk` below is the spec's "Normalisation: exactly what becomes an event" written
as plainly as possible over `json.loads`. It checks the corpus itself (so a wrong
expectation fails here, not as a normaliser bug) and tells the other tests which JSON
element each event came from.
"""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.normalise import normalise
from tests.corpus import (
    BSUID,
    BSUID_DE,
    CASES,
    CLOUD_STATUS,
    CLOUD_TEXT,
    DE,
    GROUP_ID,
    ONPREM_TEXT,
    Case,
    Expected,
    cloud_text,
    onprem_text,
)

OUTCOMES = {"stored", "unknown", "quarantined"}
ARRAYS = ("messages", "statuses", "errors", "contacts")
# docs/protocol.md §6: the arrays walked in a value, and the kind of their elements' events.
CHAT = {"messages": "message", "statuses": "status", "errors": "error"}
ELEMENT_FIELDS = {
    "calls": {"calls": "call", "statuses": "call", "errors": "error"},
    "smb_message_echoes": {"message_echoes": "echo", "errors": "error"},
}
KINDS = {"message", "status", "error", "other", "echo", "call"}
STORED = [c for c in CASES if c.outcome == "stored"]


def _ids(cases: list[Case] | tuple[Case, ...]) -> list[str]:
    return [c.name for c in cases]


# --- the spec, spelled out over json.loads ----------------------------------------------------


class _Unusable(Exception):
    """Rule 1 or rule 3 of the spec says quarantine."""


@dataclass
class _Source:
    expected: Expected
    element: Any  # the JSON the event's payload must hold
    waba_id: str | None
    entry_time: Any


def _strict_loads(raw: bytes | str) -> Any:
    def reject(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return json.loads(text, parse_constant=reject)


def _leaf(value: Any) -> str | None:
    """The string an id/type/code leaf becomes; the corpus only uses unambiguous leaves."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise AssertionError(f"corpus uses a leaf with no agreed string form: {value!r}")


def _objects(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise _Unusable
    return value


def _expected(kind: str, key: str, el: dict[str, Any], pnid: str | None) -> Expected:
    """The event of one element `el` of the array `key`, rule by rule."""
    if kind == "error":
        return Expected("error", _leaf(el.get("code")), None, None, pnid)
    if key in ("messages", "statuses", "message_echoes") and "errors" in el:
        _objects(el["errors"])  # errors nested in an element belong to it, but are checked
    group_id = el.get("group_id")
    if key == "messages":
        type_, wa_id, user_id = el.get("type"), el.get("from"), el.get("from_user_id")
    elif key == "message_echoes":
        type_, wa_id, user_id = el.get("type"), el.get("to"), el.get("to_user_id")
    elif key == "statuses":
        type_, wa_id = el.get("status"), el.get("recipient_id")
        if wa_id is None and isinstance(el.get("message"), dict):
            wa_id = el["message"].get("recipient_id")
        user_id = el.get("recipient_user_id")
        group_id = el.get("recipient_id") if el.get("recipient_type") == "group" else None
    else:  # calls: the user is the caller, or the callee of a call the business made
        side = "to" if el.get("direction") == "BUSINESS_INITIATED" else "from"
        type_, wa_id, user_id = el.get("event"), el.get(side), el.get(f"{side}_user_id")
        group_id = None
    ids = (_leaf(el.get("id")), _leaf(wa_id), pnid, _leaf(user_id), _leaf(group_id))
    return Expected(kind, _leaf(type_), *ids)


def _flat(
    obj: dict[str, Any], arrays: dict[str, str], pnid: str | None, waba: str | None
) -> list[_Source]:
    sources = []
    for key, value in obj.items():
        if key == "contacts":
            _objects(value)  # contacts describe senders, they are not events
        elif key in arrays:
            for el in _objects(value):
                sources.append(_Source(_expected(arrays[key], key, el, pnid), el, waba, None))
    return sources


def _spec_walk(body: bytes) -> tuple[str, str, list[_Source]]:
    """(format, outcome, sources) for a body, following the spec rule by rule."""
    try:
        doc = _strict_loads(body)
    except (UnicodeDecodeError, ValueError):
        return "quarantined", "quarantined", []
    if not isinstance(doc, dict):
        return "quarantined", "quarantined", []
    if doc.get("object") == "whatsapp_business_account":
        fmt = "cloud"
    elif "object" not in doc and "entry" not in doc and any(k in doc for k in ARRAYS):
        fmt = "onprem"
    else:
        return "unknown", "unknown", []
    try:
        if fmt == "onprem":
            return fmt, "stored", _flat(doc, CHAT, None, None)
        sources: list[_Source] = []
        for entry in _objects(doc.get("entry")):
            waba = _leaf(entry.get("id"))
            for change in _objects(entry.get("changes")):
                value = change.get("value")
                if not isinstance(value, dict):
                    raise _Unusable
                metadata = value.get("metadata")
                pnid = (
                    _leaf(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
                )
                field = change.get("field")
                walked = ELEMENT_FIELDS.get(field, {}) if isinstance(field, str) else {}
                if field == "messages":
                    sources.extend(_flat(value, CHAT, pnid, waba))
                elif any(key in value for key in walked):
                    sources.extend(_flat(value, walked, pnid, waba))
                else:
                    exp = Expected("other", _leaf(field), None, None, pnid)
                    sources.append(_Source(exp, value, waba, entry.get("time")))
        return fmt, "stored", sources
    except _Unusable:
        return fmt, "quarantined", []


def _unix(value: Any) -> datetime | None:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    return None


def _expected_ts(src: _Source) -> datetime | None:
    if src.expected.kind == "other":
        return _unix(src.entry_time)
    return _unix(src.element.get("timestamp"))


def _event_rows(result: Any) -> tuple[tuple[Any, ...], ...]:
    return tuple(
        (e.kind, e.type, e.message_id, e.wa_id, e.phone_number_id, e.user_id, e.group_id)
        for e in result.events
    )


# --- the corpus itself ----------------------------------------------------------------------


def test_case_names_are_unique() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


def test_corpus_covers_every_format_and_outcome() -> None:
    pairs = {(c.format, c.outcome) for c in CASES}
    assert {
        ("cloud", "stored"),
        ("onprem", "stored"),
        ("unknown", "unknown"),
        ("quarantined", "quarantined"),
        ("cloud", "quarantined"),
        ("onprem", "quarantined"),
    } <= pairs


def test_cases_share_no_event_scoped_by_a_business_number() -> None:
    # Keys with a phone_number_id ignore the channel (docs/protocol.md §7), and the end-to-end
    # test posts every case to one database: two cases sharing such a key would be one event.
    owner: dict[tuple[Any, ...], str] = {}
    for case in STORED:
        for e in set(case.events):
            if (
                e.kind in ("message", "status", "echo", "call")
                and e.message_id
                and e.phone_number_id
            ):
                key = (e.kind, e.message_id, e.type, e.phone_number_id)
                assert owner.setdefault(key, case.name) == case.name, key


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_corpus_agrees_with_the_spec(case: Case) -> None:
    fmt, outcome, sources = _spec_walk(case.body)
    assert (fmt, outcome) == (case.format, case.outcome)
    assert tuple(s.expected for s in sources) == case.events


def test_helper_bodies() -> None:
    for body, kind in ((CLOUD_TEXT, "message"), (ONPREM_TEXT, "message"), (CLOUD_STATUS, "status")):
        _, outcome, sources = _spec_walk(body)
        assert outcome == "stored"
        assert [s.expected.kind for s in sources] == [kind]
    _, _, sources = _spec_walk(cloud_text("wamid.LOAD1", "190000000000001"))
    assert [astuple(s.expected) for s in sources] == [
        ("message", "text", "wamid.LOAD1", "4915198765432", "190000000000001", None, None)
    ]
    _, _, sources = _spec_walk(onprem_text("ABGGLOAD1"))
    assert [astuple(s.expected) for s in sources] == [
        ("message", "text", "ABGGLOAD1", "4915198765432", None, None, None)
    ]


# --- the normaliser against the corpus --------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_normalise_outcome_and_events(case: Case) -> None:
    result = normalise(case.body)
    assert result.outcome == case.outcome
    assert _event_rows(result) == tuple(astuple(e) for e in case.events)
    assert [e.seq for e in result.events] == list(range(len(case.events)))


@pytest.mark.parametrize("case", STORED, ids=_ids(STORED))
def test_normalise_payload_is_the_source_element(case: Case) -> None:
    result = normalise(case.body)
    _, _, sources = _spec_walk(case.body)
    assert len(result.events) == len(sources)
    for event, src in zip(result.events, sources, strict=True):
        assert isinstance(event.payload, str)
        parsed = _strict_loads(event.payload)
        assert parsed == src.element
        if event.kind in ("message", "status"):
            assert parsed["id"] == src.element["id"]


@pytest.mark.parametrize("case", STORED, ids=_ids(STORED))
def test_normalise_payload_is_verbatim(case: Case) -> None:
    # "the event's own JSON exactly as received": a slice of the body, escapes and all.
    result = normalise(case.body)
    for event in result.events:
        assert event.payload.encode() in case.body


@pytest.mark.parametrize("case", STORED, ids=_ids(STORED))
def test_normalise_waba_id_and_event_ts(case: Case) -> None:
    result = normalise(case.body)
    _, _, sources = _spec_walk(case.body)
    for event, src in zip(result.events, sources, strict=True):
        assert event.waba_id == src.waba_id
        if src.expected.kind == "error":
            continue  # errors carry no time of their own; arrival time is not ours to check
        expected = _expected_ts(src)
        if expected is None:
            assert event.event_ts is None
        else:
            assert event.event_ts is not None
            assert event.event_ts.utcoffset() == timedelta(0)
            assert event.event_ts == expected


def test_normalise_builders_carry_their_ids() -> None:
    result = normalise(cloud_text("wamid.LOAD42", "190000000000042"))
    assert _event_rows(result) == (
        ("message", "text", "wamid.LOAD42", "4915198765432", "190000000000042", None, None),
    )
    result = normalise(onprem_text("ABGGLOAD42"))
    assert _event_rows(result) == (
        ("message", "text", "ABGGLOAD42", "4915198765432", None, None, None),
    )


def test_non_ascii_escaping_does_not_change_events() -> None:
    for case in STORED:
        if case.format != "cloud" or len(case.body) > 100_000:
            continue
        raw_utf8 = json.dumps(_strict_loads(case.body), ensure_ascii=False).encode()
        assert _event_rows(normalise(raw_utf8)) == _event_rows(normalise(case.body)), case.name


# --- properties --------------------------------------------------------------------------------

_BOUNDED = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_KEYS = st.sampled_from(
    [
        "object",
        "entry",
        "changes",
        "field",
        "value",
        "metadata",
        "phone_number_id",
        "id",
        "time",
        "from",
        "type",
        "status",
        "timestamp",
        "recipient_id",
        "message",
        "code",
        "from_user_id",
        "recipient_user_id",
        "recipient_type",
        "group_id",
        "to",
        "to_user_id",
        "direction",
        "event",
        "calls",
        "message_echoes",
        *ARRAYS,
    ]
) | st.text(max_size=6)
_STRINGS = st.sampled_from(
    [
        "whatsapp_business_account",
        "messages",
        "text",
        "read",
        "1780000000",
        "",
        "\u00fc\U0001f44b",
        "group",
        "BUSINESS_INITIATED",
        "calls",
        "smb_message_echoes",
    ]
) | st.text(max_size=12)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _STRINGS
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=25,
)
# Shapes that get past format detection, so the walk itself is exercised.
_DOCS = (
    _JSON
    | st.dictionaries(_KEYS, _JSON, max_size=5)
    | st.builds(lambda e: {"object": "whatsapp_business_account", "entry": e}, _JSON)
    | st.builds(
        lambda f, v: {
            "object": "whatsapp_business_account",
            "entry": [{"id": "104455667788990", "changes": [{"field": f, "value": v}]}],
        },
        st.sampled_from(["messages", "account_update", "calls", "smb_message_echoes"]),
        _JSON,
    )
    | st.builds(lambda k, v: {k: v}, st.sampled_from(ARRAYS), st.lists(_JSON, max_size=4))
)


def _check_invariants(body: bytes) -> None:
    result = normalise(body)
    assert result.outcome in OUTCOMES
    if result.outcome != "stored":
        assert list(result.events) == []
    assert [e.seq for e in result.events] == list(range(len(result.events)))
    for event in result.events:
        assert event.kind in KINDS
        json.loads(event.payload)


@_BOUNDED
@given(doc=_DOCS, ascii_only=st.booleans())
def test_normalise_never_raises_on_json(doc: Any, ascii_only: bool) -> None:
    _check_invariants(json.dumps(doc, ensure_ascii=ascii_only).encode())


_SEEDS = [c.body for c in CASES if len(c.body) < 4000]


@_BOUNDED
@given(
    raw=st.binary(max_size=512)
    | st.builds(
        lambda seed, at, cut, junk: seed[:at] + junk + seed[at + cut :],
        st.sampled_from(_SEEDS),
        st.integers(0, 4000),
        st.integers(0, 8),
        st.binary(max_size=8),
    )
)
def test_normalise_never_raises_on_bytes(raw: bytes) -> None:
    _check_invariants(raw)


_CLOUD_WITH_MESSAGES = [
    c
    for c in STORED
    if c.format == "cloud" and len(c.body) < 20_000 and any(e.kind == "message" for e in c.events)
]
# Extra values never use the four container names as keys, so they stay leaves to the spec.
_EXTRA = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5).map(lambda s: "k_" + s), children, max_size=3)
    ),
    max_leaves=10,
)


def _view(result: Any) -> list[tuple[Any, ...]]:
    return [
        (e.seq, e.kind, e.type, e.message_id, e.contact, e.phone_number_id, e.waba_id, e.event_ts)
        for e in result.events
    ]


@_BOUNDED
@given(case=st.sampled_from(_CLOUD_WITH_MESSAGES), data=st.data(), ascii_only=st.booleans())
def test_extra_fields_in_messages_do_not_change_events(
    case: Case, data: st.DataObject, ascii_only: bool
) -> None:
    doc = json.loads(case.body)
    for entry in doc["entry"]:
        for change in entry["changes"]:
            if change.get("field") != "messages":
                continue
            messages = change["value"].get("messages", [])
            for i, message in enumerate(messages):
                extras = data.draw(
                    st.dictionaries(st.text(max_size=8).map(lambda s: "x_" + s), _EXTRA, max_size=4)
                )
                items = list(message.items())
                at = data.draw(st.integers(0, len(items)))
                items[at:at] = extras.items()
                messages[i] = dict(items)
    mutated = json.dumps(doc, ensure_ascii=ascii_only).encode()
    before = normalise(case.body)
    after = normalise(mutated)
    assert after.outcome == before.outcome == "stored"
    assert _view(after) == _view(before)
    assert _event_rows(after) == tuple(astuple(e) for e in case.events)


def test_a_repeated_key_keeps_its_last_occurrence_like_json_parsers_do() -> None:
    body = (
        b'{"messages":[{"id":"wamid.first","type":"text"}],'
        b'"statuses":[{"id":"wamid.s","status":"sent"}],'
        b'"messages":[{"id":"wamid.last","type":"text"}]}'
    )
    result = normalise(body)
    assert result.outcome == "stored"
    # The last value, at the position where the key first appeared, as json.loads reads it.
    assert [(e.kind, e.message_id) for e in result.events] == [
        ("message", "wamid.last"),
        ("status", "wamid.s"),
    ]
    assert list(json.loads(body)) == ["messages", "statuses"]
    assert json.loads(body)["messages"][0]["id"] == "wamid.last"


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
def test_nesting_deeper_than_the_decoder_follows_is_quarantined(depth: int) -> None:
    body = b'{"messages":[{"id":"x","type":' + b"[" * depth + b"]" * depth + b"}]}"
    assert normalise(body).outcome == ("stored" if depth == 100 else "quarantined")


@pytest.mark.parametrize(("count", "outcome"), [(3, "stored"), (4, "too_many_events")])
def test_events_per_body_at_and_past_the_limit(count: int, outcome: str) -> None:
    statuses = ",".join(f'{{"id":"wamid.{i}","status":"sent"}}' for i in range(count))
    result = normalise(f'{{"statuses":[{statuses}]}}'.encode(), max_events=3)
    assert (result.outcome, len(result.events)) == (outcome, count if outcome == "stored" else 0)


def test_the_event_limit_counts_other_fields_and_arrays_together() -> None:
    body = (
        b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":['
        b'{"field":"account_update","value":{}},'
        b'{"field":"messages","value":{"statuses":[{"id":"a","status":"sent"},'
        b'{"id":"b","status":"sent"}]}}]}]}'
    )
    assert normalise(body, max_events=3).outcome == "stored"
    assert normalise(body, max_events=2).outcome == "too_many_events"


def test_the_event_limit_counts_calls_and_echoes_element_by_element() -> None:
    body = (
        b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":['
        b'{"field":"calls","value":{"calls":[{"id":"wacid.1","event":"connect"}],'
        b'"statuses":[{"id":"wacid.1","status":"RINGING"}]}},'
        b'{"field":"smb_message_echoes","value":{"message_echoes":[{"id":"wamid.e"}]}}]}]}'
    )
    assert [e.kind for e in normalise(body, max_events=3).events] == ["call", "call", "echo"]
    assert normalise(body, max_events=2).outcome == "too_many_events"


@pytest.mark.parametrize("field", [["calls"], {"calls": 1}, None, 7])
def test_a_field_of_another_type_is_one_other_event(field: Any) -> None:
    # `field` is a leaf: never a reason to quarantine, and never a lookup that could raise.
    value = {"calls": [{"id": "wacid.1", "event": "connect"}]}
    change = {"field": field, "value": value}
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": [change]}]})
    result = normalise(body.encode())
    assert result.outcome == "stored"
    assert [(e.kind, e.message_id) for e in result.events] == [("other", None)]


def test_an_echo_value_with_chat_arrays_walks_only_its_own() -> None:
    # `messages` and `statuses` mean nothing in an smb_message_echoes change: ignored, unchecked.
    value = {
        "messages": "not walked",
        "statuses": [{"id": "wamid.s", "status": "sent"}],
        "message_echoes": [{"id": "wamid.e", "type": "text", "to": "49151"}],
    }
    change = {"field": "smb_message_echoes", "value": value}
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": [change]}]})
    result = normalise(body.encode())
    assert result.outcome == "stored"
    assert [(e.kind, e.message_id, e.contact) for e in result.events] == [
        ("echo", "wamid.e", "49151")
    ]


def test_the_contact_of_each_new_shape() -> None:
    # The corpus cases above, as contacts: the group of a group event, else the user.
    by_name = {case.name: normalise(case.body).events for case in CASES}
    assert [e.contact for e in by_name["cloud-username-user-without-from"]] == [BSUID]
    assert [e.contact for e in by_name["cloud-group-message-from-username-user"]] == [GROUP_ID]
    assert [e.contact for e in by_name["cloud-status-group"]] == [GROUP_ID]
    assert [e.contact for e in by_name["cloud-status-to-bsuid"]] == [BSUID_DE]
    assert {e.contact for e in by_name["cloud-calls-business-initiated-to-username-user"]} == {
        BSUID,
        None,  # the call's error names nobody
    }
    assert [e.contact for e in by_name["cloud-message-echoes-batch"]] == [DE, BSUID]
