"""Replay Meta's documented webhook payloads (tests/corpus/webhooks) through the parser."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dripline.inbox.plan import inbound_event, status_update
from dripline.whatsapp.webhooks import WebhookBatch, parse_webhook

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "webhooks"
FILES = sorted(CORPUS.glob("*.json"))
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    meta = {k: data.pop(k) for k in list(data) if k.startswith("_")}
    return data, meta


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, tuple) else getattr(obj, part)
    return obj


def _check(items: tuple[Any, ...], expected: list[dict[str, Any]], kind: str) -> None:
    assert len(items) == len(expected), kind
    for item, fields in zip(items, expected, strict=True):
        for name, want in fields.items():
            got = _get(item, name)
            if name == "errors":
                got = [e.code for e in got]
            assert got == want, f"{kind}.{name}"


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 14


def test_every_file_is_listed_in_sources() -> None:
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    for path in FILES:
        assert f"`{path.name}`" in sources


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_replay(path: Path) -> None:
    body, meta = _load(path)
    assert meta["_source"].startswith("https://developers.facebook.com/documentation/")
    batch = parse_webhook(json.dumps(body).encode())
    assert batch.rejected == ()
    expect = meta["_expect"]
    _check(batch.messages, expect.get("messages", []), "messages")
    _check(batch.statuses, expect.get("statuses", []), "statuses")
    _check(batch.errors, expect.get("errors", []), "errors")
    _apply_like_the_processor(batch)


def _apply_like_the_processor(batch: WebhookBatch) -> None:
    # The inbox processor's own conversions accept everything Meta documents.
    for s in batch.statuses:
        assert status_update(s, NOW) is not None
    for m in batch.messages:
        assert inbound_event(m, 1, NOW) is not None
