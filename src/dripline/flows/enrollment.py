"""Checks an enrollment's values against the flow's templates before anything is sent.

The server's enrollment validation (`server/api.py`) and the CLI call these: a value that
would land in a template text parameter and break Meta's whitespace rule
(`dripline.flows.params`) is refused with one line naming the field, instead of every
template send of that conversation failing with 132018 later.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from dripline.errors import InputError
from dripline.flows.flow import YamlFlow
from dripline.flows.model import TemplateSpec
from dripline.flows.params import field_value_problems

__all__ = [
    "check_template_values",
    "template_params",
    "template_specs",
    "template_value_problem",
]


def template_specs(flow: YamlFlow) -> Iterator[TemplateSpec]:
    """Every template the flow can send: steps', reminders', fallbacks'."""
    spec = flow.spec
    if spec.fallback is not None:
        yield spec.fallback
    for step in spec.steps:
        for template in (
            step.template,
            step.reminder.template if step.reminder is not None else None,
            step.fallback,
        ):
            if template is not None:
                yield template


def template_params(flow: YamlFlow) -> list[str]:
    """Every template parameter string (body, named, header, buttons), for the
    placeholders an enrollment must supply (`server/enrollment.required_fields`)."""
    return [p for t in template_specs(flow) for p in t.all_params()]


def _first_problem(
    flow: YamlFlow, fields: Mapping[str, str], name: str | None
) -> tuple[str, str] | None:
    values: dict[str, object] = {**flow.spec.defaults, **fields}
    if name:
        values["name"] = name
    texts = [p for t in template_specs(flow) for p in t.text_params()]
    problems = field_value_problems(texts, values)
    if not problems:
        return None
    key, why = problems[0]
    label = "name" if key == "name" and name else f"fields.{key}"
    if key not in fields and not (key == "name" and name):
        label = f"defaults.{key}"  # the flow's own default breaks the rule
    return label, why


def template_value_problem(
    flow: YamlFlow, fields: Mapping[str, str], name: str | None = None
) -> tuple[str, str] | None:
    """(field label, message) for the first value that breaks Meta's template parameter
    rule, e.g. ("fields.city", "fields.city has a line break at character 5; ..."); None
    when all are fine. The label is `name` or `fields.<key>`, as the enrollment API
    names them. Every text parameter counts: body (positional or named), header text
    and URL button suffix."""
    found = _first_problem(flow, fields, name)
    return None if found is None else (found[0], f"{found[0]} {found[1]}")


def check_template_values(
    flow: object, fields: Mapping[str, str], name: str | None, *, where: str = ""
) -> None:
    """Raise InputError naming the field (`{where}fields.city`) when a value would break
    Meta's template parameter rule; nothing for flows without templates in YAML."""
    if not isinstance(flow, YamlFlow):
        return
    found = _first_problem(flow, fields, name)
    if found is not None:
        raise InputError(found[1], where=f"{where}{found[0]}")
