"""Read flow files: YAML -> pydantic models, errors as `file:line: field: message`.

The YAML is composed into a node tree first, so every validation error can be mapped
back to the line of the field it names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dripline.errors import FlowError
from dripline.flows.model import FlowSpec, Loc, semantic_problems
from dripline.flows.reach import window_warnings

__all__ = [
    "FLOW_SUFFIXES",
    "FlowFileError",
    "LoadedSpec",
    "builtin_texts",
    "flow_files",
    "format_loc",
    "parse_flow_text",
]

FLOW_SUFFIXES = (".yaml", ".yml")

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers, so `start: 21:00` stays a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?"
        r"|\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


# libyaml's parser when PyYAML was built with it, with the same resolvers: the same nodes
# and values as the pure-Python parser (checked on every built-in flow by
# tests/unit/test_flow_yaml_parsers.py), in about an eighth of the CPU (the demo and
# free-trial flows, 5.5 KB: 9 ms -> 1 ms, paid by every `run --once`). A file it
# refuses is read again by the pure-Python parser, whose messages users see.
class _FastLoader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """_Loader's resolvers on libyaml's parser."""


_FastLoader.yaml_implicit_resolvers = {
    first: list(resolvers) for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


def _compose(loader_class: type[_Loader] | type[_FastLoader], text: str) -> tuple[Any, Any]:
    """(the document's root node, its value) for `text`."""
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


@dataclass(frozen=True, slots=True)
class LoadedSpec:
    """A validated flow and where it came from (`source` is a path or `builtin:<file>`)."""

    spec: FlowSpec
    source: str
    line: int  # the line of `name:` (or 1), for duplicate-name errors
    # Not errors: steps that can be due outside the 24-hour window with only text
    # (`reach.window_warnings`), as "source:line: field: message".
    warnings: tuple[str, ...] = ()


def format_loc(loc: Sequence[str | int]) -> str:
    """('steps', 2, 'after') -> 'steps[2].after'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int:
    """The 1-based line of the deepest node `loc` reaches (a key's line for a key)."""
    if root is None:
        return 1
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_keys(node: yaml.Node | None, path: Loc = ()) -> tuple[Loc, int] | None:
    """The first mapping key given twice (PyYAML keeps the last one silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    return (*path, key.value), key.start_mark.line + 1
                seen.add(key.value)
                found = _duplicate_keys(value, (*path, key.value))
                if found:
                    return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = _duplicate_keys(item, (*path, index))
            if found:
                return found
    return None


def _describe(error: Any) -> str:
    """pydantic's message, reworded where it would puzzle a flow author."""
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        return f"unknown field {loc[-1]!r}"
    if kind == "missing":
        return "required field missing"
    if kind == "too_short" and loc == ("steps",):
        return "a flow needs at least one step"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message[:1].lower() + message[1:]


def _fields_hint(kind: str, loc: Sequence[str | int]) -> str:
    """For an unknown field, the fields that are allowed there."""
    if kind != "extra_forbidden":
        return ""
    from dripline.flows.model import (
        ButtonSpec,
        HeaderSpec,
        OptionSpec,
        ReminderSpec,
        StepSpec,
        TemplateSpec,
    )

    parents = [p for p in loc[:-1] if isinstance(p, str)]
    model: type[Any] = FlowSpec
    if parents and parents[-1] == "steps":
        model = StepSpec
    elif parents and parents[-1] == "reminder":
        model = ReminderSpec
    elif parents and parents[-1] in ("template", "fallback"):
        model = TemplateSpec
    elif parents and parents[-1] == "header":
        model = HeaderSpec
    elif parents and parents[-1] == "buttons":
        model = ButtonSpec
    elif parents and parents[-1] == "options":
        model = OptionSpec
    elif parents and parents[-1] == "quiet_hours":
        return " (allowed: start, end)"
    elif parents:
        return ""
    return f" (allowed: {', '.join(model.model_fields)})"


class FlowFileError(FlowError):
    """A flow file with problems: the message names the first, `problems` lists all.

    Each problem is one line: `file:line: field: message`.
    """

    def __init__(self, message: str, *, where: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message, where=where)
        self.problems = list(problems) or [str(self)]


def parse_flow_text(text: str, source: str, default_name: str) -> LoadedSpec:
    """Validate one flow file's text (named `source` in errors); raises FlowFileError."""
    try:
        try:
            root, data = _compose(_FastLoader, text)
        except yaml.YAMLError:
            root, data = _compose(_Loader, text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        if exc.context and exc.context_mark and exc.problem:
            # "unexpected end of stream" alone hides the quote opened ten lines up.
            what += f" {exc.context} started at line {exc.context_mark.line + 1}"
        raise FlowFileError(f"YAML syntax error: {what}", where=f"{source}:{line}") from None
    except yaml.YAMLError as exc:
        raise FlowFileError(f"YAML error: {exc}", where=f"{source}:1") from None

    duplicate = _duplicate_keys(root)
    if duplicate:
        loc, line = duplicate
        raise FlowFileError("key given twice", where=f"{source}:{line}: {format_loc(loc)}")
    if data is None:
        raise FlowFileError("the file is empty; a flow needs `steps`", where=f"{source}:1")
    if not isinstance(data, dict):
        raise FlowFileError(
            "a flow file is a mapping with `steps:` (and optionally `name:`)",
            where=f"{source}:1",
        )
    data.setdefault("name", default_name)

    problems: list[tuple[int, str, str]] = []  # (line, where, message)
    spec: FlowSpec | None = None
    try:
        spec = FlowSpec.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = _describe(error) + _fields_hint(error["type"], loc)
            line = _line_of(root, loc)
            field = format_loc(loc)
            where = f"{source}:{line}" + (f": {field}" if field else "")
            problems.append((line, where, message))
    if spec is not None:
        for loc, message in semantic_problems(spec):
            line = _line_of(root, loc)
            problems.append((line, f"{source}:{line}: {format_loc(loc)}", message))
    if problems or spec is None:
        problems.sort(key=lambda item: item[0])
        _, where, message = problems[0]
        raise FlowFileError(message, where=where, problems=[f"{w}: {m}" for _, w, m in problems])
    name_line = _line_of(root, ("name",)) if "name" in _keys(root) else 1
    warnings = tuple(
        f"{source}:{_line_of(root, loc)}: {format_loc(loc)}: {message}"
        for loc, message in window_warnings(spec)
    )
    return LoadedSpec(spec=spec, source=source, line=name_line, warnings=warnings)


def _keys(root: yaml.Node | None) -> set[str]:
    if not isinstance(root, yaml.MappingNode):
        return set()
    return {k.value for k, _ in root.value if isinstance(k, yaml.ScalarNode)}


def flow_files(directory: Path) -> list[Path]:
    """The flow files in `directory` (not recursive), sorted by name."""
    return sorted(
        path for path in directory.iterdir() if path.suffix in FLOW_SUFFIXES and path.is_file()
    )


def builtin_texts() -> Iterable[tuple[str, str, str]]:
    """(source, default name, text) for each flow packaged with dripline."""
    folder = resources.files("dripline.flows") / "builtin"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(FLOW_SUFFIXES):
            stem = entry.name.rsplit(".", 1)[0]
            yield f"builtin:{entry.name}", stem, entry.read_text(encoding="utf-8")
