"""Templates as Meta defines them: header, buttons, named parameters, whitespace rules."""

from __future__ import annotations

import pytest

from dripline.errors import InputError
from dripline.flows import (
    FlowFileError,
    TemplateButton,
    TemplateHeader,
    TemplateMessage,
    parse_flow_text,
    template_params,
    template_value_problem,
)
from dripline.flows.params import sanitize, value_problem
from dripline.whatsapp.payloads import template_payload, text_payload
from tests.unit.test_flows_transitions import Conv, flow


def problem(text: str) -> str:
    with pytest.raises(FlowFileError) as info:
        parse_flow_text(text, "flows/t.yaml", "t")
    return str(info.value)


FULL = flow(
    """
steps:
  - template:
      name: order_update
      language: en_US
      named_params: {first_name: "{name}", plan: "{plan}"}
      header: {text: "{plan}", parameter_name: plan_name}
      buttons:
        - {index: 0, payload: "yes-{plan}"}
        - {index: 1, url_suffix: "{token}"}
"""
)


def test_a_full_template_renders_every_parameter() -> None:
    conv = Conv(fields={"plan": "Pro", "token": "abc"})
    assert FULL.message(conv, "question") == TemplateMessage(
        name="order_update",
        language="en_US",
        named_body_params=(("first_name", "Ana"), ("plan", "Pro")),
        header=TemplateHeader("text", "Pro", parameter_name="plan_name"),
        buttons=(TemplateButton(0, "quick_reply", "yes-Pro"), TemplateButton(1, "url", "abc")),
    )


def test_the_payload_follows_metas_components() -> None:
    msg = TemplateMessage(
        "order_update",
        "en_US",
        named_body_params=(("first_name", "Ana"),),
        header=TemplateHeader("document", "https://x.test/a.pdf", filename="a.pdf"),
        buttons=(TemplateButton(0, "quick_reply", "yes"), TemplateButton(2, "url", "abc")),
    )
    payload = template_payload("+15551234567", msg, callback_data="9")
    assert payload["biz_opaque_callback_data"] == "9"
    assert payload["template"]["components"] == [
        {
            "type": "header",
            "parameters": [
                {
                    "type": "document",
                    "document": {"link": "https://x.test/a.pdf", "filename": "a.pdf"},
                }
            ],
        },
        {
            "type": "body",
            "parameters": [{"type": "text", "parameter_name": "first_name", "text": "Ana"}],
        },
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": "0",
            "parameters": [{"type": "payload", "payload": "yes"}],
        },
        {
            "type": "button",
            "sub_type": "url",
            "index": "2",
            "parameters": [{"type": "text", "text": "abc"}],
        },
    ]


def test_positional_and_media_headers() -> None:
    msg = TemplateMessage("t", "en", ("a", "b"), header=TemplateHeader("image", "https://i/x.png"))
    components = template_payload("1", msg)["template"]["components"]
    assert components[0] == {
        "type": "header",
        "parameters": [{"type": "image", "image": {"link": "https://i/x.png"}}],
    }
    assert components[1]["parameters"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    ]
    assert "components" not in template_payload("1", TemplateMessage("t", "en"))["template"]


def test_callback_data_over_512_characters_is_refused() -> None:
    with pytest.raises(InputError, match="callback_data"):
        text_payload("1", "hi", callback_data="x" * 513)


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ("a b", False),
        ("a    b", False),
        ("a     b", True),
        ("a\nb", True),
        ("a\tb", True),
        ("a\r", True),
    ],
)
def test_metas_whitespace_rule(value: str, bad: bool) -> None:
    assert (value_problem(value) is not None) == bad
    assert value_problem(sanitize(value)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'steps:\n  - template: {name: w, body_params: ["a\\tb"]}\n',
            "flows/t.yaml:2: steps[0].template.body_params: body parameter 1 has a tab",
        ),
        (
            'steps:\n  - template: {name: w, header: {text: "{x}     !"}}\n',
            "steps[0].template.header: the header text has 5 consecutive spaces",
        ),
        (
            'steps:\n  - template: {name: w, body_params: ["a"], named_params: {b: "c"}}\n',
            "not both",
        ),
        (
            'steps:\n  - template: {name: w, header: {image: "x.png"}}\n',
            "must be a link",
        ),
        (
            "steps:\n  - template: {name: w, buttons: [{index: 0}]}\n",
            "give exactly one of payload",
        ),
        (
            'steps:\n  - template: {name: w, buttons: [{index: 1, url_suffix: "a\\tb"}]}\n',
            "button 1 url_suffix has a tab",
        ),
        (
            'defaults: {city: "a\\nb"}\nsteps:\n  - template: {name: w, body_params: ["{city}"]}\n',
            "defaults.city: the default has a line break",
        ),
    ],
)
def test_flows_check_reports_parameters_meta_would_refuse(text: str, expected: str) -> None:
    assert expected in problem(text)


def test_enrollment_values_are_checked_naming_the_field() -> None:
    assert template_value_problem(FULL, {"plan": "Pro", "token": "t"}) is None
    label, message = template_value_problem(FULL, {"plan": "Pro\nMax", "token": "t"}) or ("", "")
    assert label == "fields.plan"
    assert message.startswith("fields.plan has a line break at character 4")
    assert "\n" not in message
    assert template_value_problem(FULL, {"plan": "P"}, name="A\tna") == (
        "name",
        "name has a tab at character 2; WhatsApp refuses line breaks, tabs and more than "
        "4 consecutive spaces in template parameters (132018)",
    )
    # A URL button's suffix is sent as a `text` parameter, so the rule applies to it;
    # a quick-reply payload is a `payload` parameter, for which Meta states no rule.
    assert template_value_problem(FULL, {"plan": "P", "token": "a\nb"}) == (
        "fields.token",
        "fields.token has a line break at character 2; WhatsApp refuses line breaks, tabs "
        "and more than 4 consecutive spaces in template parameters (132018)",
    )


PAYLOAD_ONLY = flow(
    """
steps:
  - template:
      name: order_update
      buttons: [{index: 0, payload: "{choice}"}]
"""
)


@pytest.mark.parametrize(
    ("template", "fields", "name", "label"),
    [
        # every text parameter, each with a value Meta refuses
        ('{name: w, body_params: ["{city}"]}', {"city": "a\nb"}, None, "fields.city"),
        ('{name: w, named_params: {c: "{city}"}}', {"city": "a\tb"}, None, "fields.city"),
        ('{name: w, header: {text: "{city}"}}', {"city": "a     b"}, None, "fields.city"),
        ('{name: w, body_params: ["x"], buttons: [{index: 0, url_suffix: "{t}"}]}',
         {"t": "a\r\nb"}, None, "fields.t"),
        ('{name: w, body_params: ["Hi {name}"]}', {}, "Ana\nMaria", "name"),
        # fine: at most 4 spaces, and values that land nowhere
        ('{name: w, body_params: ["{city}"]}', {"city": "a    b"}, None, None),
        ('{name: w, body_params: ["x"]}', {"city": "a\nb"}, None, None),
        ('{name: w, header: {image: "https://x.test/{img}.png"}}', {"img": "a b"}, None, None),
    ],
)  # fmt: skip
def test_every_text_parameter_is_checked_at_enrollment(
    template: str, fields: dict[str, str], name: str | None, label: str | None
) -> None:
    f = flow(f"steps:\n  - template: {template}\n")
    found = template_value_problem(f, fields, name)
    assert (found[0] if found else None) == label


def test_a_quick_reply_payload_is_not_held_to_the_text_rule() -> None:
    assert template_value_problem(PAYLOAD_ONLY, {"choice": "a\nb"}) is None


def test_send_time_cleans_values_that_slipped_through() -> None:
    msg = FULL.message(Conv(fields={"plan": "a\n\tb      c", "token": "t"}), "question")
    assert isinstance(msg, TemplateMessage)
    assert msg.named_body_params[1] == ("plan", "a  b    c")
    assert msg.header is not None and msg.header.value == "a  b    c"


def test_template_params_lists_every_placeholder_source() -> None:
    assert sorted(template_params(FULL)) == sorted(
        ["{name}", "{plan}", "{plan}", "yes-{plan}", "{token}"]
    )
