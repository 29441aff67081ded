"""The results reducer and its table: rates, option counts, number distribution, NPS."""

from __future__ import annotations

from dripline.flows import Question
from dripline.results import NumberCount, QuestionInfo, nps, question_info, summarize, to_json
from dripline.results_report import duration, render
from dripline.store import AnswerCount, FlowResultsData, StepCounts

QUESTIONS = [
    QuestionInfo(0, "setup", "Setup done?", True, "yes_no", ("yes", "no")),
    QuestionInfo(1, "score", "Recommend?", True, "number", (), (0.0, 10.0)),
    QuestionInfo(2, "bye", "Thanks", False),
]
DATA = FlowResultsData(
    "trial",
    10,
    (
        StepCounts(0, 10, 9, 6, answered=8, replies=10, invalid=2, median_answer_s=125.0),
        StepCounts(1, 8, 8, 8, answered=5, replies=5, invalid=0, median_answer_s=30.5),
        StepCounts(4, 1, 1, 0, answered=1, replies=0, invalid=0, median_answer_s=None),
    ),
    (
        AnswerCount(0, "option", "yes", None, 8),
        AnswerCount(1, "number", None, 3.0, 1),
        AnswerCount(1, "number", None, 7.0, 1),
        AnswerCount(1, "number", None, 9.0, 2),
        AnswerCount(1, "number", None, 10.0, 1),
        AnswerCount(4, None, None, None, 1),
    ),
)


def test_nps_is_promoters_minus_detractors_in_percent() -> None:
    got = nps([NumberCount(0, 2), NumberCount(6, 1), NumberCount(7, 1), NumberCount(9, 4)])
    assert got is not None
    assert (got.score, got.promoters, got.passives, got.detractors) == (12.5, 4, 1, 3)
    assert nps([]) is None
    assert nps([NumberCount(11, 3)]) is None  # out of 0-10: not counted


def test_summarize_rates_options_numbers_and_unknown_steps() -> None:
    r = summarize(DATA, QUESTIONS)
    setup, score, bye, gone = r.questions
    assert (setup.response_rate, setup.invalid_rate, setup.median_answer_s) == (0.8, 0.2, 125.0)
    assert [(o.id, o.count, o.share) for o in setup.options] == [("yes", 8, 1.0), ("no", 0, 0.0)]
    assert [(n.value, n.count) for n in score.numbers] == [(3, 1), (7, 1), (9, 2), (10, 1)]
    assert score.nps is not None and score.nps.score == 40.0  # (3 - 1) / 5
    assert score.number_mean == 7.6
    assert (bye.sent, bye.response_rate, bye.invalid_rate) == (0, None, None)
    assert (gone.id, gone.answered, gone.texts) == ("step4", 1, 1)


def test_nps_only_for_a_0_to_10_number_question() -> None:
    one_to_five = QuestionInfo(1, "score", "Recommend?", True, "number", (), (1.0, 5.0))
    [_, score] = summarize(DATA, [QUESTIONS[0], one_to_five]).questions[:2]
    assert score.nps is None and score.number_mean == 7.6


def test_question_info_reads_a_flow_question_without_kinds_as_text() -> None:
    info = question_info(Question(2, "goal", "Goal?", True))
    assert (info.kind, info.options, info.number_range) == ("text", (), None)


def test_json_and_table() -> None:
    r = summarize(DATA, QUESTIONS)
    body = to_json(r)
    score = body["questions"][1]
    assert score["funnel"] == {"sent": 8, "delivered": 8, "read": 8, "answered": 5}
    assert score["numbers"][0] == {"value": 3, "count": 1}
    assert score["nps"]["score"] == 40.0
    table = render(r)
    assert table.splitlines()[0] == "trial: 10 conversations"
    row = "0     setup     yes_no    10          9     6         8     80.0%   2m 5s    20.0%"
    assert row in table.splitlines()
    assert "NPS 40: 3 promoters, 1 passives, 1 detractors (5 answers); mean 7.6" in table
    assert "yes 8 (100.0%)  no 0 (0.0%)" in table


def test_durations() -> None:
    assert [duration(s) for s in (None, 0.4, 59, 60, 3_725, 90_000)] == [
        "-",
        "0s",
        "59s",
        "1m 0s",
        "1h 2m",
        "1d 1h",
    ]
