"""Meta's Cloud API rules as the fake (and a simulator) apply them: pure, time passed in."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dripline.fake.payloads import Inbound, inbound_contacts, inbound_message, status_item
from dripline.fake.rules import (
    WINDOW_S,
    StatusTimings,
    WindowBook,
    api_error,
    callback_data_echoed,
    conversation_for,
    decide_send,
    is_undeliverable,
    pricing_for,
    status_sequence,
    throughput_level_for,
    value_error,
    wa_id_for,
    window_open,
)
from dripline.fake.templates import (
    TemplateParams,
    TemplateRegistry,
    TemplateSpec,
    parse_template_spec,
    template_params,
)
from dripline.fake.webhooks import reply_for


@pytest.mark.parametrize(
    ("number", "wa_id"),
    [
        ("+1 (555) 123-4567", "15551234567"),
        # Brazil: mobiles outside area codes 11-28 drop the ninth digit.
        ("+55 31 98765-4321", "553187654321"),
        ("+55 61 99876-5432", "556198765432"),
        ("+55 11 98765-4321", "5511987654321"),
        ("+55 16 99231-8222", "5516992318222"),
        ("+55 31 8765-4321", "553187654321"),  # already without it
        ("+55 31 3333-4444", "553133334444"),  # a landline
        # Mexico: the ID has the 1 after 52.
        ("+52 55 1234 5678", "5215512345678"),
        ("+52 1 55 1234 5678", "5215512345678"),
        # Argentina: the ID has the 9 after 54.
        ("+54 11 1234-5678", "5491112345678"),
        ("+54 9 11 1234-5678", "5491112345678"),
    ],
)
def test_wa_id_for_a_number(number: str, wa_id: str) -> None:
    assert wa_id_for(number) == wa_id


def test_brazil_rule_can_drop_everywhere_or_nowhere() -> None:
    assert wa_id_for("5511987654321", "all") == "551187654321"
    assert wa_id_for("5531987654321", "none") == "5531987654321"


@given(st.text(alphabet="0123456789", min_size=5, max_size=15))
def test_wa_id_is_stable_and_digits_only(number: str) -> None:
    once = wa_id_for(number)
    assert once.isdigit()
    assert wa_id_for(once) == once  # an ID maps to itself


def test_window_is_open_for_24_hours_after_the_user_writes() -> None:
    assert not window_open(None, 100.0)
    assert window_open(100.0, 100.0)
    assert window_open(100.0, 100.0 + WINDOW_S - 0.001)
    assert not window_open(100.0, 100.0 + WINDOW_S)
    assert not window_open(100.0, 99.0)  # not before they wrote


def test_window_book_is_per_business_number_and_user() -> None:
    book = WindowBook()
    book.user_wrote("A", "u", 10.0)
    assert book.is_open("A", "u", 20.0)
    assert not book.is_open("B", "u", 20.0)
    assert not book.is_open("A", "v", 20.0)
    book.user_wrote("A", "u", 5.0)  # an older message never shortens the window
    assert book.last_inbound("A", "u") == 10.0
    book.user_wrote("A", "u", WINDOW_S)  # a new message resets the timer
    assert book.is_open("A", "u", WINDOW_S + 11.0)
    book.clear()
    assert book.last_inbound("A", "u") is None


@pytest.mark.parametrize(
    ("kind", "in_window", "mode", "undeliverable", "refuse", "later"),
    [
        ("text", False, "async", False, None, 131047),
        ("text", False, "sync", False, 131047, None),
        ("text", False, "off", False, None, None),
        ("image", False, "async", False, None, 131047),
        ("interactive", False, "sync", False, 131047, None),
        ("text", True, "sync", False, None, None),
        ("template", False, "sync", False, None, None),
        ("template", False, "async", True, None, 131026),
        ("text", True, "async", True, None, 131026),
        ("text", False, "async", True, None, 131047),
    ],
)
def test_decide_send(
    kind: str,
    in_window: bool,
    mode: str,
    undeliverable: bool,
    refuse: int | None,
    later: int | None,
) -> None:
    decision = decide_send(
        message_type=kind,
        window_is_open=in_window,
        window_mode=mode,  # type: ignore[arg-type]
        undeliverable=undeliverable,
    )
    assert (decision.refuse and decision.refuse.code) == refuse
    assert (decision.fail_later and decision.fail_later.code) == later


def test_undeliverable_numbers_are_a_stable_fraction_apart_from_repliers() -> None:
    users = [f"1555{i:07d}" for i in range(20000)]
    picked = [u for u in users if is_undeliverable(u, 0.1)]
    assert picked == [u for u in users if is_undeliverable(u, 0.1)]
    assert 0.08 < len(picked) / len(users) < 0.12
    assert not any(is_undeliverable(u, 0.0) for u in users[:100])
    stoppers = {u for u in users if reply_for(u, 0.0, 0.1, "yes") == "STOP"}
    overlap = len(stoppers & set(picked)) / len(stoppers)
    assert 0.05 < overlap < 0.15  # independent choices, not the same users


def test_errors_carry_metas_codes_titles_and_http_statuses() -> None:
    assert (api_error(132001).http_status, api_error(132000).http_status) == (404, 400)
    assert api_error(131047).http_status == 400
    body = api_error(131047).graph_body("trace")["error"]
    assert body["message"] == "(#131047) Re-engagement message"
    assert body["type"] == "OAuthException"
    assert body["error_data"]["messaging_product"] == "whatsapp"
    assert "24 hours" in body["error_data"]["details"]
    hook = api_error(131026).webhook_error()
    assert hook["title"] == hook["message"] == "Message undeliverable"
    assert set(hook) == {"code", "title", "message", "error_data", "href"}
    assert value_error()["code"] == 130429


def test_status_sequences() -> None:
    timings = StatusTimings(0.1, 0.2, 0.3)
    failed = status_sequence(api_error(131047), timings, 1.0, random.Random(1))
    assert [(e.status, e.error and e.error.code) for e in failed] == [("failed", 131047)]
    read = status_sequence(None, timings, 1.0, random.Random(1))
    assert [(e.status, e.delay_s) for e in read] == [
        ("sent", 0.1),
        ("delivered", 0.2),
        ("read", 0.3),
    ]
    unread = status_sequence(None, timings, 0.0, random.Random(1))
    assert [e.status for e in unread] == ["sent", "delivered"]
    rng_a, rng_b = random.Random(9), random.Random(9)
    runs_a = [len(status_sequence(None, timings, 0.5, rng_a)) for _ in range(50)]
    assert runs_a == [len(status_sequence(None, timings, 0.5, rng_b)) for _ in range(50)]
    assert set(runs_a) == {2, 3}


def test_callback_data_is_echoed_on_sent_delivered_read_only() -> None:
    assert [callback_data_echoed(s) for s in ("sent", "delivered", "read", "failed")] == [
        True,
        True,
        True,
        False,
    ]
    item = status_item(
        wamid="w",
        status="failed",
        timestamp=1,
        recipient_id="551187654321",
        callback_data="c",
        error=api_error(131026),
    )
    assert "biz_opaque_callback_data" not in item
    assert item["errors"][0]["code"] == 131026
    assert item["recipient_id"] == "551187654321"


def test_pricing_for_service_and_template_messages() -> None:
    assert pricing_for("sent", "text", "utility", True) == {
        "billable": False,
        "pricing_model": "PMP",
        "type": "free_customer_service",
        "category": "service",
    }
    assert (pricing_for("delivered", "template", "utility", False) or {})["type"] == "regular"
    free = pricing_for("sent", "template", "utility", True) or {}
    assert free["type"] == "free_customer_service"
    assert (pricing_for("sent", "template", "marketing", True) or {})["billable"] is True
    assert pricing_for("read", "text", "utility", True) is None


def test_conversation_object_only_before_v24() -> None:
    pricing = pricing_for("sent", "text", "utility", True)
    sent = conversation_for(pricing, "sent", "wamid.ABC", 1000.0, 23)
    assert sent == {
        "id": "CONVwamid.ABC",
        "origin": {"type": "service"},
        "expiration_timestamp": str(1000 + 24 * 3600),
    }
    assert "expiration_timestamp" not in (conversation_for(pricing, "delivered", "w", 0, 23) or {})
    assert conversation_for(pricing, "sent", "w", 0, 24) is None
    assert conversation_for(None, "read", "w", 0, 23) is None


def test_throughput_level() -> None:
    assert [throughput_level_for(r) for r in (80, 20, 1000, 0)] == [
        "STANDARD",
        "STANDARD",
        "HIGH",
        "HIGH",
    ]


def test_template_params_are_counted_per_component() -> None:
    template = {
        "name": "t",
        "components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"link": "x"}}]},
            {"type": "body", "parameters": [{"type": "text", "text": "a"}] * 2},
            {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{}]},
            {"type": "button", "sub_type": "url", "index": "1", "parameters": [{}]},
        ],
    }
    assert template_params(template) == TemplateParams(body=2, header=1, buttons=2)
    assert template_params({"name": "t"}) == TemplateParams()
    assert isinstance(template_params({"components": {}}), str)
    assert isinstance(template_params({"components": [{"type": "footer"}]}), str)
    assert isinstance(template_params({"components": [{"type": "button"}]}), str)


def test_registry_answers_132001_and_132000() -> None:
    registry = TemplateRegistry([TemplateSpec("welcome", "en_US", body=2, buttons=1)])
    missing = registry.check("nope", "en_US", TemplateParams())
    assert missing is not None and missing.code == 132001
    assert missing.details == "template name (nope) does not exist in en_US"
    other_language = registry.check("welcome", "pt_BR", TemplateParams(body=2, buttons=1))
    assert other_language is not None and other_language.code == 132001
    body = registry.check("welcome", "en_US", TemplateParams(body=1, buttons=1))
    assert body is not None and body.code == 132000
    assert body.details.startswith("body: number of localizable_params (1)")
    buttons = registry.check("welcome", "en_US", TemplateParams(body=2))
    assert buttons is not None and buttons.code == 132000
    assert registry.check("welcome", "en_US", TemplateParams(body=2, buttons=1)) is None


def test_template_spec_syntax() -> None:
    assert parse_template_spec("welcome") == TemplateSpec("welcome", "en_US")
    assert parse_template_spec("welcome@pt_BR:2:1:3") == TemplateSpec(
        "welcome", "pt_BR", body=2, header=1, buttons=3
    )
    for bad in ("", "@en", "w:x", "w:1:2:3:4"):
        with pytest.raises(ValueError):
            parse_template_spec(bad)


BUSINESS = "15550783881"


@pytest.mark.parametrize(
    ("inbound", "expected"),
    [
        (Inbound("text", "Hi"), {"type": "text", "text": {"body": "Hi"}}),
        (
            Inbound("text", "Yes", reply_to="wamid.Q"),
            {
                "type": "text",
                "text": {"body": "Yes"},
                "context": {"from": BUSINESS, "id": "wamid.Q"},
            },
        ),
        (
            Inbound("button", "Stop promotions", payload="STOP", reply_to="wamid.T"),
            {
                "type": "button",
                "button": {"payload": "STOP", "text": "Stop promotions"},
                "context": {"from": BUSINESS, "id": "wamid.T"},
            },
        ),
        (
            Inbound("button_reply", "Yes", reply_id="yes-1", reply_to="wamid.Q"),
            {
                "type": "interactive",
                "interactive": {
                    "type": "button_reply",
                    "button_reply": {"id": "yes-1", "title": "Yes"},
                },
                "context": {"from": BUSINESS, "id": "wamid.Q"},
            },
        ),
        (
            Inbound("list_reply", "Pro", reply_id="pro", description="Paid", reply_to="wamid.Q"),
            {
                "type": "interactive",
                "interactive": {
                    "type": "list_reply",
                    "list_reply": {"id": "pro", "title": "Pro", "description": "Paid"},
                },
                "context": {"from": BUSINESS, "id": "wamid.Q"},
            },
        ),
        (
            Inbound("reaction", emoji="👍", reply_to="wamid.Q"),
            {"type": "reaction", "reaction": {"message_id": "wamid.Q", "emoji": "👍"}},
        ),
        (
            Inbound("reaction", reply_to="wamid.Q"),  # removed: no emoji
            {"type": "reaction", "reaction": {"message_id": "wamid.Q"}},
        ),
        (
            Inbound("system", new_wa_id="12195555358"),
            {
                "type": "system",
                "system": {
                    "body": "User Fake User changed from 16505551234 to 12195555358",
                    "wa_id": "12195555358",
                    "type": "user_changed_number",
                },
            },
        ),
    ],
)
def test_inbound_message_shapes(inbound: Inbound, expected: dict[str, object]) -> None:
    assert inbound.problem() is None
    item = inbound_message(
        inbound,
        wa_id="16505551234",
        message_id="wamid.IN1",
        timestamp=1750000000,
        business_number=BUSINESS,
    )
    assert item == {"from": "16505551234", "id": "wamid.IN1", "timestamp": "1750000000", **expected}


def test_media_and_unsupported_shapes() -> None:
    kwargs = {"wa_id": "1", "message_id": "m", "timestamp": 1, "business_number": BUSINESS}
    image = inbound_message(Inbound("image", "Taj Mahal"), **kwargs)  # type: ignore[arg-type]
    assert image["type"] == "image"
    assert image["image"]["caption"] == "Taj Mahal"
    assert {"mime_type", "sha256", "id"} <= set(image["image"])
    audio = inbound_message(Inbound("audio", "no captions on audio"), **kwargs)  # type: ignore[arg-type]
    assert "caption" not in audio["audio"]
    unsupported = inbound_message(Inbound("unsupported"), **kwargs)  # type: ignore[arg-type]
    assert unsupported["unsupported"] == {"type": "edit"}
    assert unsupported["errors"][0]["code"] == 131051


def test_inbound_problems_and_contacts() -> None:
    assert Inbound("fax").problem() is not None
    assert Inbound("button", "Yes").problem() is not None  # a tap needs the message tapped
    assert Inbound("reaction", emoji="x").problem() is not None
    assert Inbound("system").problem() is not None
    items = [
        {"from": "1", "type": "text"},
        {"from": "1", "type": "reaction"},
        {"from": "2", "type": "system"},
    ]
    assert inbound_contacts(items) == [{"profile": {"name": "Fake User"}, "wa_id": "1"}]
