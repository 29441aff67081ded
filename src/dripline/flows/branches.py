"""Where a step goes next: its `next:` by answer, and the checks on the whole graph.

`next` is one of:

    next: review                       # always this step (or `end`)
    next: {yes: thanks, no: why_not}   # per option id (choice, yes_no)
    next: {"0-6": sorry, "9-10": review, default: bye}   # per number range (inclusive)

An answer no key covers, a timeout with `on_timeout: continue` and an invalid answer with
`on_invalid: continue` go to `default`, else to the following step (the end after the
last). `end` completes the conversation. Pure: no I/O.

`flows check` reports (`branch_problems`): a target that is no step id, a key that is no
option or range of the step, ranges that overlap, steps no path reaches, and cycles in
which no step waits for a reply (they would send for ever).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from dripline.flows.questions import parse_range, question_options

__all__ = [
    "END",
    "branch_problems",
    "default_target",
    "draw",
    "edges",
    "step_ids",
    "target_for",
]

END = "end"

Loc = tuple[str | int, ...]


def step_ids(steps: Sequence[Any]) -> list[str]:
    return [s.id or f"q{n + 1}" for n, s in enumerate(steps)]


def _following(steps: Sequence[Any], index: int) -> str:
    return step_ids(steps)[index + 1] if index + 1 < len(steps) else END


def default_target(steps: Sequence[Any], index: int) -> str:
    """Where the step goes without a matching answer: `default`, else the next step."""
    nxt = steps[index].next
    if isinstance(nxt, str):
        return str(nxt)
    if isinstance(nxt, dict) and "default" in nxt:
        return str(nxt["default"])
    return _following(steps, index)


def target_for(steps: Sequence[Any], index: int, option: str | None, number: float | None) -> str:
    """The step id (or `end`) a valid answer to steps[index] leads to."""
    nxt = steps[index].next
    if isinstance(nxt, dict):
        if option is not None and option in nxt:
            return str(nxt[option])
        if number is not None:
            for key, target in nxt.items():
                bounds = parse_range(key) if key != "default" else None
                if bounds is not None and bounds[0] <= number <= bounds[1]:
                    return str(target)
    return default_target(steps, index)


def edges(steps: Sequence[Any], index: int) -> list[tuple[str, str]]:
    """(label, target) for each way out of steps[index]; label "" for the default."""
    nxt = steps[index].next
    out: list[tuple[str, str]] = []
    if isinstance(nxt, dict):
        out = [(k, v) for k, v in nxt.items() if k != "default"]
    out.append(("", default_target(steps, index)))
    return out


def _key_problem(step: Any, key: str) -> str | None:
    if key == "default":
        return None
    if step.kind == "number":
        bounds = parse_range(key)
        if bounds is None:
            return f"{key!r} is not a number range (e.g. 0-6, or 7)"
        low, high = step.min, step.max
        if (low is not None and bounds[1] < low) or (high is not None and bounds[0] > high):
            return f"range {key!r} is outside the question's min/max"
        return None
    options = [o.id for o in question_options(step)]
    if not options:
        return "per-answer `next` needs kind choice, yes_no or number (else give one step id)"
    if key not in options:
        return f"{key!r} is not an option id (options: {', '.join(options)})"
    return None


def _overlaps(step: Any) -> list[str]:
    if step.kind != "number" or not isinstance(step.next, dict):
        return []
    ranges = sorted(
        (b, k) for k in step.next if k != "default" and (b := parse_range(k)) is not None
    )
    return [
        f"ranges {a!r} and {b!r} overlap" for (ra, a), (rb, b) in pairwise(ranges) if rb[0] <= ra[1]
    ]


def branch_problems(steps: Sequence[Any]) -> list[tuple[Loc, str]]:
    """Unknown targets and keys, overlapping ranges, unreachable steps, wait-less cycles."""
    ids = step_ids(steps)
    known = set(ids) | {END}
    problems: list[tuple[Loc, str]] = []
    for index, step in enumerate(steps):
        here: Loc = ("steps", index, "next")
        nxt = step.next
        targets = [nxt] if isinstance(nxt, str) else list((nxt or {}).values())
        for target in targets:
            if target not in known:
                problems.append(
                    (here, f"{target!r} is no step id (steps: {', '.join(ids)}; or end)")
                )
        for key in nxt if isinstance(nxt, dict) else ():
            why = _key_problem(step, key)
            if why is not None:
                problems.append(((*here, key), why))
        problems += [(here, why) for why in _overlaps(step)]
    if any(p[1].endswith("or end)") for p in problems):
        return problems  # the graph is not whole: reachability would mislead
    graph = {ids[n]: [t for _, t in edges(steps, n) if t != END] for n in range(len(steps))}
    seen: set[str] = set()
    todo = [ids[0]]
    while todo:
        here_id = todo.pop()
        if here_id not in seen:
            seen.add(here_id)
            todo += graph[here_id]
    for index, sid in enumerate(ids):
        if sid not in seen:
            problems.append((("steps", index), f"step {sid!r} is unreachable: no path leads to it"))
    waits = {ids[n] for n, s in enumerate(steps) if s.wait_for_reply}
    for cycle in _cycles(graph, waits):
        problems.append(
            (
                ("steps", ids.index(cycle[0]), "next"),
                "cycle without a wait_for_reply step (it would send for ever): "
                + " -> ".join([*cycle, cycle[0]]),
            )
        )
    return problems


def _cycles(graph: dict[str, list[str]], waits: set[str]) -> list[list[str]]:
    """Cycles through steps that do not wait (each reported once, from its first step)."""
    free = {n: [t for t in ts if t not in waits] for n, ts in graph.items() if n not in waits}
    found: list[list[str]] = []
    reported: set[frozenset[str]] = set()
    for start in free:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in free.get(node, []):
                if nxt == start and frozenset(path) not in reported:
                    reported.add(frozenset(path))
                    found.append(path)
                elif nxt not in path and nxt in free:
                    stack.append((nxt, [*path, nxt]))
    return found


def draw(steps: Sequence[Any]) -> list[str]:
    """The flow as text: one line per step, one indented line per branch."""
    ids = step_ids(steps)
    lines: list[str] = []
    for index, step in enumerate(steps):
        kind = step.kind
        if kind == "choice":
            kind += f" ({', '.join(o.id for o in question_options(step))})"
        elif kind == "number" and None not in (step.min, step.max):
            kind += f" {step.min:g}-{step.max:g}"
        wait = " waits" if step.wait_for_reply else ""
        lines.append(f"{index + 1}. {ids[index]} [{kind}]{wait}")
        branches = edges(steps, index)
        if len(branches) == 1:
            lines.append(f"   -> {branches[0][1]}")
            continue
        for label, target in branches:
            lines.append(f"   {label or 'otherwise'} -> {target}")
    return lines
