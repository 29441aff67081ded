"""Flow files: loading, and one-line errors naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from dripline.errors import FlowError, InputError
from dripline.flows import FlowFileError, check_flows, load_flows, parse_flow_text

REPO = Path(__file__).resolve().parents[2]


def problem(text: str) -> str:
    """The one-line error for a flow file's text."""
    with pytest.raises(FlowFileError) as info:
        parse_flow_text(text, "flows/trial.yaml", "trial")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "steps:\n  - text: hi\n    colour: red\n",
            "flows/trial.yaml:3: steps[0].colour: unknown field 'colour' (allowed: ",
        ),
        (
            "name: t\nsteps:\n  - text: a\n  - text: b\n  - text: c\n    reply_timeout: soon\n",
            "flows/trial.yaml:6: steps[2].reply_timeout: invalid duration 'soon' "
            "(use 30s, 10m, 2h, 1d)",
        ),
        (
            "steps:\n  - text: a\n  - after: 1m\n    id: x\n",
            "flows/trial.yaml:3: steps[1]: a message is missing: give `text` or `template`",
        ),
        (
            "steps:\n  - text: a\n    template: {name: t}\n",
            "flows/trial.yaml:2: steps[0]: give exactly one message: `text` or `template`",
        ),
        (
            'steps:\n  - text: "unclosed\n',
            "flows/trial.yaml:3: YAML syntax error: found unexpected end of stream while "
            "scanning a quoted scalar started at line 2",
        ),
        (
            "steps:\n  - text: a\n   bad: indent\n",
            "flows/trial.yaml:3: YAML syntax error:",
        ),
        ("nmae: x\nsteps:\n  - text: a\n", "flows/trial.yaml:1: nmae: unknown field 'nmae'"),
        ("name: x\n", "flows/trial.yaml:1: steps: required field missing"),
        ("name: x\nsteps: []\n", "flows/trial.yaml:2: steps: a flow needs at least one step"),
        ("", "flows/trial.yaml:1: the file is empty"),
        ("- text: a\n", "flows/trial.yaml:1: a flow file is a mapping"),
        ("name: Bad Name\nsteps:\n  - text: a\n", "flows/trial.yaml:1: name: flow name"),
        (
            "steps:\n  - text: a\n    text: b\n",
            "flows/trial.yaml:3: steps[0].text: key given twice",
        ),
        (
            "steps:\n  - text: 'Hi {name'\n",
            "flows/trial.yaml:2: steps[0].text: stray '{'",
        ),
        (
            "steps:\n  - template:\n      name: Welcome\n",
            "flows/trial.yaml:3: steps[0].template.name: template name 'Welcome' must be",
        ),
        (
            "steps:\n  - template: {name: w, language: english}\n",
            "flows/trial.yaml:2: steps[0].template.language: language 'english'",
        ),
        (
            "steps:\n  - fallback: {name: w, extra: 1}\n    text: a\n",
            "flows/trial.yaml:2: steps[0].fallback.extra: unknown field 'extra' "
            "(allowed: name, language, body_params, named_params, header, buttons)",
        ),
        (
            "quiet_hours:\n  start: '21:00'\n  end: '8pm'\n steps:\n",
            "flows/trial.yaml:4: YAML syntax error",
        ),
        (
            "quiet_hours:\n  start: '21:00'\n  end: 8pm\nsteps:\n  - text: a\n",
            "flows/trial.yaml:3: quiet_hours.end: invalid time '8pm'",
        ),
        (
            "steps:\n  - text: a\n    on_timeout: later\n    wait_for_reply: true\n"
            "    reply_timeout: 1h\n",
            "flows/trial.yaml:3: steps[0].on_timeout: input should be 'end' or 'continue'",
        ),
        # Rules across fields point at the field to fix.
        (
            "steps:\n  - text: a\n    wait_for_reply: true\n",
            "flows/trial.yaml:3: steps[0].wait_for_reply: wait_for_reply needs a reply_timeout",
        ),
        (
            "steps:\n  - text: a\n  - text: b\n    reply_timeout: 1h\n",
            "flows/trial.yaml:4: steps[1].reply_timeout: reply_timeout only applies with "
            "wait_for_reply: true",
        ),
        (
            "steps:\n  - text: a\n    wait_for_reply: true\n    reply_timeout: 1h\n"
            "    reminder:\n      text: r\n      after: 2h\n",
            "flows/trial.yaml:7: steps[0].reminder.after: the reminder (2h) must come before "
            "reply_timeout (1h)",
        ),
        (
            "steps:\n  - text: a\n    after: 5m\n",
            "flows/trial.yaml:3: steps[0].after: the first step is sent at enrollment",
        ),
        (
            "steps:\n  - {text: a, id: x}\n  - {text: b, id: x}\n",
            "flows/trial.yaml:3: steps[1].id: id 'x' is already used by steps[0]",
        ),
    ],
)
def test_errors_name_file_line_and_field(text: str, expected: str) -> None:
    assert problem(text).startswith(expected)


def test_flow_errors_are_input_errors_with_where() -> None:
    with pytest.raises(InputError) as info:
        parse_flow_text("steps:\n  - text: a\n    after: x\n", "f.yaml", "f")
    assert isinstance(info.value, FlowError)
    assert info.value.where == "f.yaml:3: steps[0].after"


def test_every_problem_in_a_file_is_listed() -> None:
    text = "steps:\n  - text: a\n    colour: red\n  - text: b\n    after: soon\n"
    with pytest.raises(FlowFileError) as info:
        parse_flow_text(text, "f.yaml", "f")
    assert info.value.problems == [
        "f.yaml:3: steps[0].colour: unknown field 'colour' (allowed: text, template, kind, "
        "options, list_button, min, max, reask, max_reasks, on_invalid, next, id, title, "
        "after, wait_for_reply, reply_timeout, reminder, on_timeout, fallback, quiet_hours)",
        "f.yaml:5: steps[1].after: invalid duration 'soon' (use 30s, 10m, 2h, 1d)",
    ]


def test_unquoted_clock_times_and_yaml_off() -> None:
    # YAML 1.1 reads 21:00 as the number 1260 and `off` as False; both mean what they say.
    loaded = parse_flow_text(
        "quiet_hours: {start: 21:00, end: 08:00}\nsteps:\n  - text: a\n    quiet_hours: off\n",
        "f.yaml",
        "f",
    )
    hours = loaded.spec.quiet_hours
    assert hours is not None
    assert (hours.start.hour, hours.end.hour) == (21, 8)
    step_hours = loaded.spec.steps[0].quiet_hours
    assert step_hours is not None
    assert step_hours.is_off


def test_name_defaults_to_the_file_stem() -> None:
    assert parse_flow_text(
        "steps:\n  - text: a\n", "x/onboarding.yaml", "onboarding"
    ).spec.name == ("onboarding")


# -- directories -------------------------------------------------------------------------
def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_builtin_demo_loads_without_a_directory(tmp_path: Path) -> None:
    for folder in (None, tmp_path / "missing"):
        flows = load_flows(folder)
        assert flows.names() == ["demo"]
        demo = flows.get("demo")
        assert len(demo.questions()) == 3
        assert [s.after.total_seconds() for s in demo.spec.steps] == [0, 600, 3600]
        assert not any(s.wait_for_reply for s in demo.spec.steps)


def test_loads_yaml_and_yml(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "steps:\n  - text: a\n")
    write(tmp_path, "b.yml", "name: bee\nsteps:\n  - text: b\n")
    write(tmp_path, "notes.txt", "not a flow")
    flows = load_flows(tmp_path)
    assert flows.names() == ["a", "bee", "demo"]
    assert "bee" in flows
    assert len(flows) == 3
    assert flows.get("bee").source == str(tmp_path / "b.yml")


def test_unknown_flow_names_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "steps:\n  - text: a\n")
    with pytest.raises(FlowError, match=r"unknown flow 'nope' \(known: a, demo\)"):
        load_flows(tmp_path).get("nope")


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: same\nsteps:\n  - text: a\n")
    write(tmp_path, "b.yaml", "\nname: same\nsteps:\n  - text: b\n")
    with pytest.raises(FlowError) as info:
        load_flows(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}/b.yaml:2: name: flow 'same' is already defined in {tmp_path}/a.yaml:1"
    )


def test_a_user_file_may_not_silently_shadow_a_builtin(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", "steps:\n  - text: mine\n")
    with pytest.raises(FlowError, match=r"demo.yaml:1: name: 'demo' is a built-in flow"):
        load_flows(tmp_path)


def test_explicit_override_of_a_builtin(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", "overrides_builtin: true\nsteps:\n  - text: mine\n")
    demo = load_flows(tmp_path).get("demo")
    assert demo.source.endswith("demo.yaml")
    assert len(demo.questions()) == 1


def test_flows_dir_that_is_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "flows", "")
    with pytest.raises(FlowError, match="is a file, not a folder"):
        load_flows(path)


def test_load_reports_the_first_problem_and_counts_the_rest(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "steps:\n  - text: a\n    colour: red\n")
    write(tmp_path, "b.yaml", "steps: [\n")
    with pytest.raises(FlowError, match=r"a.yaml:3: .*\(and 1 more; run `dripline flows check`\)"):
        load_flows(tmp_path)
    result = check_flows(tmp_path)
    assert not result.ok
    assert len(result.problems) == 2
    assert result.flows.keys() == {"demo"}


def test_undecodable_file(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    assert "bin.yaml:1: cannot read" in check_flows(tmp_path).problems[0]


def test_the_shipped_example_loads() -> None:
    flows = load_flows(REPO / "flows")
    trial = flows.get("free-trial")
    assert [q.id for q in trial.questions()] == [
        "goal",
        "setup",
        "feature",
        "score",
        "fix",
        "review",
        "upgrade",
    ]
    spec = trial.spec
    assert spec.quiet_hours is not None
    assert spec.fallback is not None
    assert any(s.reminder is not None for s in spec.steps)
    assert all(s.wait_for_reply for s in spec.steps)
