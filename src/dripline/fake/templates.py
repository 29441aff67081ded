"""Approved templates as the Cloud API sees them: name, language, parameter counts.

A template message names a template and a language; the API answers 132001 when that
template does not exist (or is not approved) in that language, and 132000 when the
request's parameter count differs from the template's ([EC] in `rules`; templates
overview "parameter formats"). Pure: no I/O.

The default registry holds the templates of the flows dripline ships (`flows/` and
`dripline/flows/builtin/`), as an operator would have them approved in WhatsApp
Manager; a test keeps it in step with those flows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dripline.fake.rules import ApiError, api_error

__all__ = [
    "DEFAULT_TEMPLATES",
    "TemplateParams",
    "TemplateRegistry",
    "TemplateSpec",
    "parse_template_spec",
    "template_params",
]


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """An approved template in one language, with its variable parameter counts."""

    name: str
    language: str = "en_US"
    body: int = 0
    header: int = 0
    buttons: int = 0  # button parameters in all (a URL suffix or quick-reply payload each)
    category: str = "utility"  # utility | marketing | authentication


@dataclass(frozen=True, slots=True)
class TemplateParams:
    """The parameter counts a send request carried, per component."""

    body: int = 0
    header: int = 0
    buttons: int = 0


DEFAULT_TEMPLATES = (
    # flows/free-trial.yaml: the flow-wide fallback and two step fallbacks.
    TemplateSpec("trial_checkin", "en_US", body=1),
    TemplateSpec("trial_welcome", "en_US", body=2),
    # Choice steps' own templates carry one quick-reply button per option (yes, no).
    TemplateSpec("trial_setup", "en_US", body=1, buttons=2),
    TemplateSpec("trial_ending", "en_US", body=2, buttons=2),
    # dripline/flows/builtin/demo.yaml: one per step.
    TemplateSpec("demo_hello", "en_US", body=1),
    TemplateSpec("demo_middle", "en_US"),
    TemplateSpec("demo_bye", "en_US", body=1),
)


def template_params(template: Mapping[str, Any]) -> TemplateParams | str:
    """Count a request's `template.components` parameters, or say what is malformed.

    Components follow the Messages API: `{"type": "header"|"body"|"button",
    "parameters": [...]}`, buttons also with `sub_type` and `index`.
    """
    components = template.get("components", [])
    if not isinstance(components, list):
        return "template['components'] must be an array"
    counts = {"header": 0, "body": 0, "button": 0}
    for i, component in enumerate(components):
        if not isinstance(component, dict):
            return f"template['components'][{i}] must be an object"
        kind = str(component.get("type", "")).lower()
        if kind not in counts:
            return f"template['components'][{i}]['type'] must be header, body or button"
        parameters = component.get("parameters", [])
        if not isinstance(parameters, list):
            return f"template['components'][{i}]['parameters'] must be an array"
        if kind == "button" and ("sub_type" not in component or "index" not in component):
            return f"template['components'][{i}]: a button needs sub_type and index"
        counts[kind] += len(parameters)
    return TemplateParams(body=counts["body"], header=counts["header"], buttons=counts["button"])


def _mismatch(part: str, got: int, want: int) -> ApiError:
    # Meta's details for a body mismatch read "body: number of localizable_params (1)
    # does not match the expected number of params (2)" (as reported by integrators).
    return api_error(
        132000,
        f"{part}: number of localizable_params ({got}) does not match the expected "
        f"number of params ({want})",
    )


class TemplateRegistry:
    """The approved templates of one WhatsApp Business Account, by (name, language)."""

    __slots__ = ("_specs",)

    def __init__(self, specs: Iterable[TemplateSpec] = ()) -> None:
        self._specs: dict[tuple[str, str], TemplateSpec] = {}
        for spec in specs:
            self.add(spec)

    @classmethod
    def default(cls) -> TemplateRegistry:
        """The templates of dripline's shipped flows."""
        return cls(DEFAULT_TEMPLATES)

    def add(self, spec: TemplateSpec) -> None:
        self._specs[(spec.name, spec.language)] = spec

    def get(self, name: str, language: str) -> TemplateSpec | None:
        return self._specs.get((name, language))

    def __iter__(self) -> Any:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def check(self, name: str, language: str, params: TemplateParams) -> ApiError | None:
        """132001 for an unknown (name, language), 132000 for a count mismatch, else None."""
        spec = self._specs.get((name, language))
        if spec is None:
            return api_error(132001, f"template name ({name}) does not exist in {language}")
        if params.header != spec.header:
            return _mismatch("header", params.header, spec.header)
        if params.body != spec.body:
            return _mismatch("body", params.body, spec.body)
        if params.buttons != spec.buttons:
            return _mismatch("buttons", params.buttons, spec.buttons)
        return None


def parse_template_spec(text: str) -> TemplateSpec:
    """`NAME[@LANGUAGE][:BODY[:HEADER[:BUTTONS]]]`, e.g. `trial_welcome@en_US:2`.

    Raises ValueError naming the part that is wrong.
    """
    head, *counts = text.split(":")
    name, _, language = head.partition("@")
    if not name:
        raise ValueError(f"template {text!r}: the name is empty")
    if len(counts) > 3:
        raise ValueError(f"template {text!r}: at most BODY:HEADER:BUTTONS after the name")
    numbers = []
    for part in counts:
        if not part.isdigit():
            raise ValueError(f"template {text!r}: {part!r} is not a parameter count")
        numbers.append(int(part))
    numbers += [0] * (3 - len(numbers))
    return TemplateSpec(
        name, language or "en_US", body=numbers[0], header=numbers[1], buttons=numbers[2]
    )
