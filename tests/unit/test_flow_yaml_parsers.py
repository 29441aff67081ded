"""Flow files go through libyaml's parser when PyYAML has it (`flows/loader.py`: an
eighth of the pure-Python parser's CPU, paid by every `run --once`). It must read every
flow exactly as the pure-Python parser does, and errors must stay the pure-Python
parser's messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dripline.flows import loader

REPO = Path(__file__).resolve().parents[2]

# What the resolvers decide: base-60 numbers stay strings, the rest as YAML 1.1.
SNIPPET = """\
name: snippet
start: 21:00
end: "07:30"
count: 0x1f
octal: 017
big: 1_000
ratio: .5
exp: 1.0e+3
inf: -.inf
yes_word: yes
off_word: off
empty: ~
when: 2024-01-02
list: [1, two, 3.0, null]
text: |
  two lines,
  kept
"""


def _shape(node: Any) -> Any:
    """A node as plain data: tags, values and the lines errors cite."""
    if isinstance(node, yaml.ScalarNode):
        return (node.tag, node.value, node.start_mark.line)
    if isinstance(node, yaml.SequenceNode):
        return (node.tag, node.start_mark.line, [_shape(x) for x in node.value])
    assert isinstance(node, yaml.MappingNode)
    return (node.tag, node.start_mark.line, [(_shape(k), _shape(v)) for k, v in node.value])


def _texts() -> list[tuple[str, str]]:
    found = [(source, text) for source, _, text in loader.builtin_texts()]
    found += [(str(p), p.read_text()) for p in sorted((REPO / "flows").glob("*.yaml"))]
    found.append(("snippet", SNIPPET))
    assert len(found) >= 3
    return found


@pytest.mark.parametrize(("source", "text"), _texts(), ids=lambda v: str(v)[:30])
def test_both_parsers_read_the_same_nodes_and_values(source: str, text: str) -> None:
    fast_root, fast_data = loader._compose(loader._FastLoader, text)
    slow_root, slow_data = loader._compose(loader._Loader, text)
    assert fast_data == slow_data
    assert _shape(fast_root) == _shape(slow_root)


def test_base_60_numbers_stay_strings_on_the_fast_parser() -> None:
    _, data = loader._compose(loader._FastLoader, SNIPPET)
    assert data["start"] == "21:00" and data["count"] == 31 and data["octal"] == 15


def test_the_fast_parser_is_libyamls_when_pyyaml_has_it() -> None:
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML without libyaml")
    assert issubclass(loader._FastLoader, yaml.CSafeLoader)


# libyaml words these differently ("mapping values are not allowed in this context",
# "found undefined alias" without the name...).
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nsteps: a: b\n", "mapping values are not allowed here"),
        ("name: x\nsteps: *nope\n", "found undefined alias 'nope'"),
        ("name: x\nsteps:\n\t- b\n", "found character '\\t' that cannot start any token"),
    ],
)
def test_a_syntax_error_is_the_pure_python_parsers_message(text: str, message: str) -> None:
    with pytest.raises(loader.FlowFileError) as got:
        loader.parse_flow_text(text, "flows/x.yaml", "x")
    assert message in str(got.value)
