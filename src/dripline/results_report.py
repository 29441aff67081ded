"""A flow's results as a plain-text table: `dripline results FLOW` and the demo's last
screen. Pure: `render(results) -> str`.

    free-trial: 300 conversations
    step  question  kind    sent  delivered  read  answered  response  median  invalid
    0     goal      text     300        291   250       240     80.0%   2m 5s     0.0%
    ...
    setup   yes 150 (62.5%)  no 90 (37.5%)
    score   NPS 12.5: 80 promoters, 55 passives, 55 detractors (190 answers); mean 7.4
"""

from __future__ import annotations

from dripline.results import FlowResults, QuestionResult

__all__ = ["duration", "percent", "render"]

_HEADER = (
    "step",
    "question",
    "kind",
    "sent",
    "delivered",
    "read",
    "answered",
    "response",
    "median",
    "invalid",
)
_RIGHT = {"sent", "delivered", "read", "answered", "response", "median", "invalid"}


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def duration(seconds: float | None) -> str:
    """A short human duration: 45s, 3m 20s, 5h 2m, 2d 3h."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86_400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86_400}d {s % 86_400 // 3600}h"


def _row(q: QuestionResult) -> tuple[str, ...]:
    return (
        str(q.step),
        q.id,
        q.kind,
        str(q.sent),
        str(q.delivered),
        str(q.read),
        str(q.answered) if q.expects_reply else "-",
        percent(q.response_rate),
        duration(q.median_answer_s),
        percent(q.invalid_rate),
    )


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _answers(q: QuestionResult) -> str | None:
    parts: list[str] = []
    if q.nps is not None:
        n = q.nps
        parts.append(
            f"NPS {n.score:g}: {n.promoters} promoters, {n.passives} passives,"
            f" {n.detractors} detractors ({n.responses} answers)"
        )
    if q.options:
        parts.append("  ".join(f"{o.id} {o.count} ({percent(o.share)})" for o in q.options))
    if q.numbers and q.nps is None:
        parts.append("  ".join(f"{_number(n.value)}: {n.count}" for n in q.numbers))
    if q.number_mean is not None:
        parts.append(f"mean {q.number_mean:g}")
    if q.texts and (q.options or q.numbers):
        parts.append(f"{q.texts} other")
    return "; ".join(parts) if parts else None


def render(results: FlowResults) -> str:
    """The results as text: a title line, the funnel table, then the answers of each
    question that has options or numbers."""
    rows = [_HEADER, *(_row(q) for q in results.questions)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines = [f"{results.flow}: {results.conversations} conversations"]
    for r in rows:
        cells = [
            cell.rjust(w) if name in _RIGHT else cell.ljust(w)
            for cell, w, name in zip(r, widths, _HEADER, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    answers = [(q.id, _answers(q)) for q in results.questions]
    shown = [(qid, text) for qid, text in answers if text]
    if shown:
        width = max(len(qid) for qid, _ in shown)
        lines.append("")
        lines.extend(f"{qid.ljust(width)}  {text}" for qid, text in shown)
    return "\n".join(lines) + "\n"
