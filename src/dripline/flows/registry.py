"""Load every flow: the built-ins packaged with dripline plus a directory of YAML files.

A user file may not take a built-in's name unless it says `overrides_builtin: true`: a
`demo.yaml` dropped in `flows/` silently changing what `--flow demo` sends would surprise
whoever runs the demo next. Two user files with one name are always an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dripline.errors import FlowError
from dripline.flows.flow import YamlFlow
from dripline.flows.loader import (
    FlowFileError,
    LoadedSpec,
    builtin_texts,
    flow_files,
    parse_flow_text,
)

__all__ = ["CheckResult", "FlowSet", "check_flows", "load_flows"]


class FlowSet:
    """The flows dripline knows, by name (implements `FlowRegistry`)."""

    def __init__(self, flows: dict[str, YamlFlow]) -> None:
        self._flows = dict(sorted(flows.items()))

    def get(self, name: str) -> YamlFlow:
        """The flow called `name`; FlowError naming the known flows otherwise."""
        try:
            return self._flows[name]
        except KeyError:
            known = ", ".join(self._flows) or "none"
            raise FlowError(f"unknown flow {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        """Every known flow name, sorted."""
        return list(self._flows)

    def __contains__(self, name: object) -> bool:
        return name in self._flows

    def __iter__(self) -> Iterator[YamlFlow]:
        return iter(self._flows.values())

    def __len__(self) -> int:
        return len(self._flows)


@dataclass(slots=True)
class CheckResult:
    """Every flow that loaded and every problem found, one line each."""

    flows: dict[str, YamlFlow] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # not problems: see flows/reach.py

    @property
    def ok(self) -> bool:
        return not self.problems


def check_flows(flows_dir: Path | None) -> CheckResult:
    """Load the built-ins and `flows_dir`, collecting every problem instead of stopping."""
    result = CheckResult()
    builtins: dict[str, LoadedSpec] = {}
    for source, stem, text in builtin_texts():
        loaded = parse_flow_text(text, source, stem)  # a broken built-in is our bug: raise
        builtins[loaded.spec.name] = loaded

    users: dict[str, LoadedSpec] = {}
    if flows_dir is not None and flows_dir.exists():
        if not flows_dir.is_dir():
            result.problems.append(f"{flows_dir}: the flows directory is a file, not a folder")
        else:
            for path in flow_files(flows_dir):
                result.files.append(str(path))
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    result.problems.append(f"{path}:1: cannot read: {exc}")
                    continue
                try:
                    loaded = parse_flow_text(text, str(path), path.stem)
                except FlowFileError as exc:
                    result.problems.extend(exc.problems)
                    continue
                name = loaded.spec.name
                where = f"{loaded.source}:{loaded.line}: name"
                if name in users:
                    first = users[name]
                    result.problems.append(
                        f"{where}: flow {name!r} is already defined in {first.source}:{first.line}"
                    )
                    continue
                if name in builtins and not loaded.spec.overrides_builtin:
                    result.problems.append(
                        f"{where}: {name!r} is a built-in flow; pick another name or set "
                        "`overrides_builtin: true` to replace it"
                    )
                    continue
                users[name] = loaded

    for name, loaded in {**builtins, **users}.items():
        result.flows[name] = YamlFlow(loaded.spec, loaded.source)
        result.warnings.extend(loaded.warnings)
    return result


def load_flows(flows_dir: Path | None) -> FlowSet:
    """Every flow (built-ins plus `flows_dir`); FlowError on the first problem.

    A missing `flows_dir` is fine (just the built-ins); one that is a file is an error.
    """
    result = check_flows(flows_dir)
    if result.problems:
        first = result.problems[0]
        more = len(result.problems) - 1
        suffix = f" (and {more} more; run `dripline flows check`)" if more else ""
        raise FlowError(first + suffix)
    return FlowSet(result.flows)
