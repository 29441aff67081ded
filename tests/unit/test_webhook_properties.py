"""Property tests: any webhook body either parses into storable events or is rejected
as InputError (recorded on the inbox row), never another exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dripline.errors import InputError
from dripline.flows import load_flows
from dripline.inbox import inbound_event, plan_inbound, status_update
from dripline.store import STATUS_RANK
from dripline.whatsapp.webhooks import parse_webhook

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


def shaped(statuses: Any, messages: Any) -> dict[str, Any]:
    value = {"metadata": {"phone_number_id": "1"}, "statuses": statuses, "messages": messages}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"changes": [{"field": "messages", "value": value}]}],
    }


status_items = st.fixed_dictionaries(
    {
        "id": st.text(max_size=200),
        "status": st.sampled_from(["sent", "delivered", "read", "failed", "played", "deleted"]),
        "timestamp": st.integers(min_value=-(2**40), max_value=2**40).map(str),
        "recipient_id": st.text(max_size=20),
    },
    optional={
        "biz_opaque_callback_data": st.text(max_size=30),
        "errors": st.lists(
            st.fixed_dictionaries(
                {"code": st.integers(min_value=-(2**40), max_value=2**40)},
                optional={"title": st.text(max_size=50)},
            ),
            max_size=2,
        ),
    },
)
message_items = st.fixed_dictionaries(
    {
        "from": st.text(max_size=20) | st.integers(0, 10**15).map(str),
        "id": st.text(max_size=200),
        "timestamp": st.integers(min_value=-(2**40), max_value=2**40).map(str),
        "type": st.text(max_size=30),
    },
    optional={"text": st.fixed_dictionaries({"body": st.text(max_size=50)})},
)


def check_events(raw: bytes) -> None:
    try:
        batch = parse_webhook(raw)
    except InputError:
        return
    for s in batch.statuses:
        u = status_update(s, NOW)
        if u is not None:
            assert u.status in STATUS_RANK and 0 < len(u.wamid) <= 128 and "\x00" not in u.wamid
            assert u.message_id is None or 0 < u.message_id < 2**63
            assert u.error_code is None or abs(u.error_code) < 2**31
            assert u.at.tzinfo is not None
    for m in batch.messages:
        e = inbound_event(m, 1, NOW)
        if e is not None:
            assert e.phone[1:].isdigit() and len(e.phone) <= 16
            assert len(e.wamid) <= 128 and "\x00" not in e.wamid and len(e.kind) <= 16
            assert e.text is None or "\x00" not in e.text


@settings(max_examples=300)
@given(json_values)
def test_any_json_parses_or_is_an_input_error(value: Any) -> None:
    check_events(json.dumps(value).encode())


@settings(max_examples=300)
@given(st.lists(status_items, max_size=4), st.lists(message_items, max_size=4))
def test_well_shaped_bodies_give_storable_events(statuses: Any, messages: Any) -> None:
    check_events(json.dumps(shaped(statuses, messages)).encode())


@settings(max_examples=100)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_an_input_error(raw: bytes) -> None:
    check_events(raw)


@settings(max_examples=100)
@given(st.lists(message_items, max_size=6))
def test_inbound_from_unknown_numbers_is_recorded_never_raises(messages: Any) -> None:
    try:
        batch = parse_webhook(json.dumps(shaped([], messages)))
    except InputError:
        return
    events = [e for m in batch.messages if (e := inbound_event(m, 1, NOW)) is not None]
    plan = plan_inbound(events, {}, set(), load_flows(None), ("STOP",), NOW)
    assert len(plan.inserts) == len(events) and not plan.changes
    assert all(i.conversation_id is None for i in plan.inserts)


# --- tolerance: one corrupted item never costs the delivery its other items ----------

ids = st.text(min_size=1, max_size=12)
good_status = st.fixed_dictionaries(
    {
        "id": ids,
        "status": st.sampled_from(["sent", "delivered", "read", "failed", "played"]),
        "timestamp": st.integers(0, 2**33).map(str),
        "recipient_id": st.integers(10**6, 10**15).map(str),
    },
    optional={
        "errors": st.lists(st.fixed_dictionaries({"code": st.integers(0, 10**7)}), max_size=2)
    },
)
good_message = st.fixed_dictionaries(
    {
        "from": st.integers(10**6, 10**15).map(str),
        "id": ids,
        "timestamp": st.integers(0, 2**33).map(str),
        "type": st.sampled_from(["text", "button", "interactive", "image", "reaction"]),
    },
    optional={"text": st.fixed_dictionaries({"body": st.text(max_size=20)})},
)
junk = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.lists(st.none()))


@st.composite
def corrupted(draw: st.DrawFn, item: dict[str, Any]) -> Any:
    """`item` broken one way: not an object, no usable id, or a field of the wrong type."""
    how = draw(st.sampled_from(["replace", "drop_id", "bad_id", "bad_field", "extra"]))
    if how == "replace":
        return draw(junk)
    broken = dict(item)
    if how == "drop_id":
        del broken["id"]
    elif how == "bad_id":
        broken["id"] = draw(st.one_of(st.none(), st.booleans(), st.just(""), st.lists(ids)))
    elif how == "bad_field":
        key = draw(st.sampled_from(["status", "timestamp", "errors", "text", "from", "type"]))
        broken[key] = draw(junk | st.dictionaries(st.text(max_size=3), junk, max_size=2))
    else:
        broken[draw(st.text(max_size=6))] = draw(json_values)
    return broken


@settings(max_examples=200)
@given(st.lists(good_status, max_size=5), st.lists(good_message, max_size=5), st.data())
def test_corrupting_one_item_leaves_the_others_parsed(
    statuses: list[dict[str, Any]], messages: list[dict[str, Any]], data: st.DataObject
) -> None:
    items = [("statuses", i) for i in range(len(statuses))]
    items += [("messages", i) for i in range(len(messages))]
    if not items:
        return
    kind, n = data.draw(st.sampled_from(items))
    target = statuses if kind == "statuses" else messages
    broken = [*target]
    broken[n] = data.draw(corrupted(target[n]))
    body = shaped(*(([broken, messages]) if kind == "statuses" else ([statuses, broken])))
    want_statuses = [s["id"] for i, s in enumerate(statuses) if (kind, i) != ("statuses", n)]
    want_messages = [m["id"] for i, m in enumerate(messages) if (kind, i) != ("messages", n)]
    try:
        batch = parse_webhook(json.dumps(body))
    except InputError:
        # Only when the broken item was the delivery's only item.
        assert not want_statuses and not want_messages
        return
    got_statuses = [s.id for s in batch.statuses]
    got_messages = [m.id for m in batch.messages]
    # Every intact item is there, in order; the broken one is either parsed or rejected.
    assert _subsequence(want_statuses, got_statuses)
    assert _subsequence(want_messages, got_messages)
    extra = len(got_statuses) + len(got_messages) - len(want_statuses) - len(want_messages)
    assert extra in (0, 1)
    assert extra == 1 or batch.rejected  # a dropped item is always explained


def _subsequence(want: list[str], got: list[str]) -> bool:
    it = iter(got)
    return all(any(g == w for g in it) for w in want)
