"""`dripline flows check` and `dripline flows show`: validate and inspect flow files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dripline.cli.common import console, handle_errors, print_json, settings_from
from dripline.flows import YamlFlow, check_flows, format_duration, load_flows
from dripline.flows.branches import draw
from dripline.flows.model import MessageSpec, QuietHours, StepSpec, TemplateSpec

flows_app = typer.Typer(help="Validate and inspect question flows.", no_args_is_help=True)


def _flows_dir(directory: Path | None) -> Path:
    return directory if directory is not None else settings_from().flows_dir


@flows_app.command("check")
@handle_errors
def check(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Folder of *.yaml flow files (default: DRIPLINE_FLOWS_DIR)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Validate every flow file; print one line per problem and exit 2 if there are any."""
    folder = _flows_dir(directory)
    result = check_flows(folder)
    if as_json:
        print_json(
            {
                "flows_dir": str(folder),
                "ok": result.ok,
                "flows": {name: flow.source for name, flow in result.flows.items()},
                "problems": result.problems,
                "warnings": result.warnings,
            }
        )
    else:
        for problem in result.problems:
            console.print(f"[bold red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
        if not folder.exists():
            console.print(
                f"{folder} does not exist: only the built-in flows", highlight=False, markup=False
            )
        for warning in result.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
        for name, flow in result.flows.items():
            console.print(
                f"ok  {name} ({len(flow.spec.steps)} steps) from {flow.source}",
                highlight=False,
                markup=False,
            )
        if result.problems:
            console.print(f"{len(result.problems)} problem(s)", highlight=False)
    if not result.ok:
        raise typer.Exit(2)


@flows_app.command("show")
@handle_errors
def show(
    name: Annotated[str, typer.Argument(help="The flow's name.")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Folder of flow files (default: settings).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Print a flow's steps: message, timing, reminder, fallback and quiet hours."""
    flow = load_flows(_flows_dir(directory)).get(name)
    if as_json:
        print_json(_flow_json(flow))
        return
    spec = flow.spec
    console.print(f"[bold]{spec.name}[/] from {escape(flow.source)}", highlight=False)
    if spec.description:
        console.print(spec.description, highlight=False, markup=False)
    console.print(f"quiet hours: {_quiet(spec.quiet_hours)}", highlight=False)
    if spec.fallback is not None:
        console.print(
            f"fallback (all steps): {_template(spec.fallback)}", highlight=False, markup=False
        )
    table = Table(show_lines=True)
    for column in ("#", "id", "timing", "message", "if no reply", "fallback"):
        table.add_column(column)
    for question, step in zip(flow.questions(), spec.steps, strict=True):
        fallback = (
            _template(step.fallback) if step.fallback else "(flow's)" if spec.fallback else "-"
        )
        # Flow text is the author's, not rich markup: "[yes/no]" must print as written.
        cells = (question.id, _timing(step), _message(step), _no_reply(step), fallback)
        table.add_row(str(question.index + 1), *(escape(cell) for cell in cells))
    console.print(table)
    # The steps as a graph: where each answer leads (branches.py).
    console.print("[bold]branches[/]", highlight=False)
    for line in draw(spec.steps):
        console.print(line, highlight=False, markup=False)


def _quiet(hours: QuietHours | None) -> str:
    if hours is None or hours.is_off:
        return "none"
    return f"{hours.start:%H:%M}-{hours.end:%H:%M} recipient's local time"


def _template(spec: TemplateSpec) -> str:
    params = ", ".join(spec.body_params)
    return f"template {spec.name} ({spec.language})" + (f" [{params}]" if params else "")


def _message(spec: MessageSpec) -> str:
    if spec.template is not None:
        return _template(spec.template)
    return spec.text or ""


def _timing(step: StepSpec) -> str:
    parts = [f"after {format_duration(step.after)}"]
    if step.quiet_hours is not None:
        parts.append(f"quiet: {_quiet(step.quiet_hours)}")
    if step.wait_for_reply and step.reply_timeout is not None:
        parts.append(f"waits {format_duration(step.reply_timeout)} for a reply")
    return "\n".join(parts)


def _no_reply(step: StepSpec) -> str:
    if not step.wait_for_reply:
        return "-"
    lines = []
    if step.reminder is not None:
        after = format_duration(step.reminder.after)
        lines.append(f"reminder after {after}: {_message(step.reminder)}")
    lines.append("then go on" if step.on_timeout == "continue" else "then end")
    return "\n".join(lines)


def _flow_json(flow: YamlFlow) -> dict[str, Any]:
    data = flow.spec.model_dump(mode="json", exclude_none=True)
    data["source"] = flow.source
    data["questions"] = [
        {
            "index": q.index,
            "id": q.id,
            "title": q.title,
            "expects_reply": q.expects_reply,
            "kind": q.kind,
            "options": list(q.options),
        }
        for q in flow.questions()
    ]
    data["branches"] = draw(flow.spec.steps)
    return data


def register(app: typer.Typer) -> None:
    app.add_typer(flows_app, name="flows")


__all__ = ["flows_app", "register"]
