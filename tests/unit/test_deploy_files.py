"""The deployment files' invariants that no linter knows: every `dripline` command in
them is one the CLI accepts, the image runs as non-root with a health check, and the
ports that Prometheus scrapes are the ones the processes listen on.

hadolint and the compose-spec schema (`make lint`) check the files' syntax; these tests
check that they still fit dripline when its CLI changes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.core
import yaml

from dripline.cli import app

REPO = Path(__file__).resolve().parents[2]


class Rejected(Exception):
    """The CLI would refuse these arguments."""


def parse_cli(args: list[str]) -> None:
    """Parse `dripline ARGS` with the real CLI, without running it (Rejected if bad)."""
    command: Any = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="dripline")
    rest = list(args)
    while isinstance(command, typer.core.TyperGroup):
        if not rest:
            raise Rejected("a command group without a command")
        name = rest.pop(0)
        sub = command.get_command(ctx, name)
        if sub is None:
            raise Rejected(f"dripline has no command {name!r}")
        command = sub
        ctx = typer.Context(command, info_name=name, parent=ctx)
    try:
        command.make_context(ctx.info_name, rest, parent=ctx.parent)
    except Exception as exc:  # click's UsageError family, vendored by typer
        raise Rejected(f"{type(exc).__name__}: {exc}") from None


def test_the_parser_rejects_what_the_cli_rejects() -> None:
    parse_cli(["run", "--metrics-port", "9100"])
    for bad in (["runn"], ["run", "--metrics-prt", "1"], ["run", "--metrics-port", "x"], ["db"]):
        with pytest.raises(Rejected):
            parse_cli(bad)


# --- Dockerfile -----------------------------------------------------------------


def _final_stage() -> list[str]:
    lines = (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    last_from = max(i for i, ln in enumerate(instructions) if ln.upper().startswith("FROM "))
    return instructions[last_from:]


def _instruction(stage: list[str], name: str) -> list[str]:
    return [ln[len(name) :].strip() for ln in stage if ln.upper().startswith(name + " ")]


def test_image_runs_as_non_root_with_a_health_check_and_no_build_tools() -> None:
    stage = _final_stage()
    users = _instruction(stage, "USER")
    assert users, "the final stage sets no USER: it would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert _instruction(stage, "HEALTHCHECK"), "no HEALTHCHECK in the final stage"
    assert "HEALTHCHECK_URL=http://127.0.0.1:8080/readyz" in (REPO / "Dockerfile").read_text()
    for line in stage:
        assert not re.search(r"\b(gcc|build-essential|apt-get install|pip install)\b", line), line
    entrypoint = yaml.safe_load(_instruction(stage, "ENTRYPOINT")[-1])
    default = yaml.safe_load(_instruction(stage, "CMD")[-1])
    assert entrypoint == ["dripline"]
    parse_cli(default)


# --- compose.yaml and what it mounts -----------------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
    return data


def _dripline_services() -> dict[str, list[str]]:
    services = _compose()["services"]
    return {name: svc["command"] for name, svc in services.items() if "build" in svc}


def test_compose_commands_are_dripline_commands() -> None:
    commands = _dripline_services()
    assert {"migrate", "worker", "server"} <= set(commands)
    for name, command in commands.items():
        try:
            parse_cli(command)
        except Rejected as exc:
            pytest.fail(f"compose.yaml service {name}: dripline {shlex.join(command)}: {exc}")
    assert commands["migrate"] == ["db", "upgrade"]
    assert commands["worker"][0] == "run" and commands["server"] == ["serve"]


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_prometheus_scrapes_the_ports_the_processes_listen_on() -> None:
    services = _compose()["services"]
    worker_port = int(_option(services["worker"]["command"], "--metrics-port"))
    assert _option(services["worker"]["command"], "--metrics-host") == "0.0.0.0"
    health = services["worker"]["environment"]["HEALTHCHECK_URL"]
    assert health == f"http://127.0.0.1:{worker_port}/readyz"
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs["dripline-worker"]["dns_sd_configs"][0]
    assert worker_sd["names"] == ["worker"] and worker_sd["port"] == worker_port
    server_port = (REPO / "Dockerfile").read_text().split("DRIPLINE_PORT=")[1].split()[0]
    assert jobs["dripline-server"]["static_configs"][0]["targets"] == [f"server:{server_port}"]
    assert any(p.endswith(f":{server_port}") for p in services["server"]["ports"])


def test_compose_mounts_files_that_exist() -> None:
    for name, svc in _compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is missing"


# --- render.yaml (with its commented cron alternative) ----------------------------


def _render_services() -> list[dict[str, Any]]:
    text = (REPO / "render.yaml").read_text()
    services: list[dict[str, Any]] = yaml.safe_load(text)["services"]
    # The cron job is commented out; uncommented, it must be as valid as the rest.
    commented = re.findall(r"^  # (  .*|- type: cron.*)$", text, re.MULTILINE)
    cron: list[dict[str, Any]] = yaml.safe_load(
        "\n".join(commented).replace("- type: cron", "- type: cron", 1)
    )
    assert cron and cron[0]["type"] == "cron", "render.yaml lost its cron alternative"
    return services + cron


def test_render_commands_are_dripline_commands() -> None:
    services = _render_services()
    assert {s["type"] for s in services} == {"web", "worker", "cron"}
    for service in services:
        for key in ("startCommand", "preDeployCommand"):
            if key in service:
                words = shlex.split(service[key].replace("$PORT", "10000"))
                assert words[0] == "dripline", f"{service['name']} {key}: {service[key]}"
                parse_cli(words[1:])
    web = next(s for s in services if s["type"] == "web")
    assert web["healthCheckPath"] == "/readyz"
    assert web["preDeployCommand"] == "dripline db upgrade"


def test_render_secrets_are_never_in_the_file() -> None:
    secrets = {"DATABASE_URL", "API_TOKEN", "APP_SECRET", "VERIFY_TOKEN", "ACCESS_TOKEN"}
    for service in _render_services():
        for var in service.get("envVars", []):
            if any(var["key"].endswith(s) for s in secrets):
                assert var.get("sync") is False and "value" not in var, var


# --- systemd units ------------------------------------------------------------------


def test_systemd_units_run_dripline_commands_hardened() -> None:
    units = sorted((REPO / "deploy/systemd").glob("*.service"))
    assert len(units) == 3
    for unit in units:
        text = unit.read_text()
        exec_start = re.search(r"^ExecStart=(.*)$", text, re.MULTILINE)
        assert exec_start, unit.name
        words = shlex.split(exec_start.group(1).replace("%i", "1"))
        assert words[0] == "/opt/dripline/bin/dripline"
        parse_cli(words[1:])
        for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "DynamicUser=yes"):
            assert option in text, f"{unit.name} lacks {option}"
        assert "EnvironmentFile=/etc/dripline/dripline.env" in text
