"""docs/reference/error-codes.md and ERROR_TABLE say the same thing, row by row."""

from __future__ import annotations

from pathlib import Path

import pytest

from dripline.whatsapp.errors import AUTH_RANGE, ERROR_TABLE, ErrorClass, describe

DOC = Path(__file__).resolve().parents[2] / "docs" / "reference" / "error-codes.md"


def _rows() -> list[tuple[str, str, str]]:
    """(code cell, class cell, source cell) of every table row whose first cell is a code."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not cells[0].strip("`")[:1].isdigit():
            continue  # the class legend
        assert len(cells) == 6, f"malformed row: {line}"
        rows.append((cells[0].strip("`"), cells[4].strip("`"), cells[5]))
    return rows


ROWS = _rows()


def _codes(cell: str) -> list[int]:
    if "-" in cell:
        lo, hi = (int(x) for x in cell.split("-"))
        return [lo, (lo + hi) // 2, hi]
    return [int(cell)]


def test_the_doc_has_rows() -> None:
    assert len(ROWS) > 80


@pytest.mark.parametrize(("cell", "cls", "source"), ROWS, ids=[r[0] for r in ROWS])
def test_every_doc_row_is_in_the_table_with_the_same_class(
    cell: str, cls: str, source: str
) -> None:
    assert source, f"row {cell} cites no source"
    for code in _codes(cell):
        if "-" not in cell:
            assert code in ERROR_TABLE, f"{code} is documented but not in ERROR_TABLE"
        assert describe(code).error_class is ErrorClass(cls), code


def test_every_table_code_is_documented() -> None:
    documented = {int(cell) for cell, _, _ in ROWS if "-" not in cell}
    missing = sorted(set(ERROR_TABLE) - documented)
    assert not missing, f"in ERROR_TABLE but not in {DOC.name}: {missing}"


def test_no_code_is_documented_twice() -> None:
    cells = [cell for cell, _, _ in ROWS]
    assert len(cells) == len(set(cells))


def test_the_auth_range_row_matches_the_code() -> None:
    assert ("200-299", "auth") in {(c, k) for c, k, _ in ROWS}
    assert range(200, 300) == AUTH_RANGE


def test_every_class_is_explained_in_the_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    for cls in ErrorClass:
        assert f"| `{cls.value}` |" in text, cls
