"""`python -m bench.chaos_table RESULT.json ...`: the chaos runs' table (markdown), as in
docs/reliability.md, from the JSON reports of `python -m bench --scenario chaos-...`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def table(outcomes: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| scenario | backend | damage | conversations | lost | duplicated "
        "| statuses lost | recovery | all sent |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| `{o['scenario']}` | {o['backend']} | {o['what']} | {o['conversations']:,} "
            f"| {o['lost']} | {o['duplicated']} | {o['statuses_missing']} "
            f"| {_s(o['recovery_s'])} | {_s(o['complete_s'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    outcomes: list[dict[str, Any]] = []
    for path in argv if argv is not None else sys.argv[1:]:
        outcomes += json.loads(Path(path).read_text())["ratios"].get("chaos", [])
    sys.stdout.write(table(outcomes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
