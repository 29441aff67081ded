"""Issue 15's "done when" (first bullet): 300 users walk every branch of the shipped
free-trial flow on the fake, over real loopback HTTP, and what dripline stored as each
reply's typed answer is what the user answered.

dripline (API, webhook intake, inbox, a one-pass dispatcher) runs on an injected clock
the test moves from one due time to the next, since the flow takes days; the fake runs
in real time. Every user is played through the fake's own user endpoint
(`/_fake/inbound`, stamped with dripline's clock): when the fake accepts a message for
them, they answer it 10 minutes later as their script says, by

- tapping a reply button (`interactive.button_reply`), a list row
  (`interactive.list_reply`), or a template's quick-reply button (`type: button`, when
  the question went as its template outside the 24-hour window);
- typing: an option's title in any case or accents, its number, yes/no synonyms in
  Portuguese, a number ("9/10", "8,5");
- typing something invalid, which is re-asked (up to `max_reasks`, then the step's
  `on_invalid`);
- or not answering at all (the step's reply timeout: go on, or end).

Each user's script decides the branch after the 0-10 score (0-6: what to fix, 9-10: a
review, else straight to the upgrade question, invalid three times: on to upgrade). The
test checks, per conversation: the steps asked, the re-asks, the final state, and every
stored reply's typed answer (kind, option id, number, valid) against the script.
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dripline.cli.export import write_answers
from dripline.clock import FakeClock
from dripline.fake import FakeConfig
from dripline.flows import load_flows
from tests.fixtures.clocked import REPO, TOKEN, Harness, clocked_world, midday_zone

SECRET = "e2e-questions-secret"
API_TOKEN = "e2e-questions-api-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
USERS = 300

GOAL, SETUP, FEATURE, SCORE, FIX, REVIEW, UPGRADE = range(7)
IDS = ("goal", "setup", "feature", "score", "fix", "review", "upgrade")
# The option titles of the shipped flow (a user who cannot tap types the title).
TITLES = {
    "yes": "Yes",
    "no": "No",
    "reports": "Reports",
    "automations": "Automations",
    "integrations": "Integrations",
    "dashboard": "Dashboard",
    "other": "Something else",
}

Expect = tuple[str, str | None, float | None, bool]  # answer kind, option, number, valid


@dataclass(frozen=True)
class Act:
    """One reply of a user's script, and the typed answer dripline must store for it."""

    how: str  # tap, type or silent
    value: str = ""
    expect: Expect | None = None


SILENT = Act("silent")


def tap(option: str) -> Act:
    return Act("tap", option, ("option", option, None, True))


def typed(text: str, kind: str, option: str | None = None, number: float | None = None) -> Act:
    return Act("type", text, (kind, option, number, True))


def invalid(text: str, kind: str) -> Act:
    return Act("type", text, (kind, None, None, False))


def phone(n: int) -> str:
    return f"+1415{6600000 + n:07d}"


def script(n: int) -> dict[int, list[Act]]:
    """What user n answers at each step (a list: the question, then each re-ask)."""
    if n % 20 == 0:  # never answers anything: every step times out, the score ends it
        return {s: [SILENT] for s in range(7)}
    acts: dict[int, list[Act]] = {}
    if n % 10 == 5:
        acts[GOAL] = [SILENT]  # the window stays closed: setup goes as its template
        acts[SETUP] = [tap("yes" if n % 3 else "no")]  # a quick-reply tap
    else:
        acts[GOAL] = [typed("Ship my first campaign", "text")]
        acts[SETUP] = [
            [tap("yes")],
            [tap("no")],
            [typed("Sim", "option", "yes")],
            [typed("não, ainda não", "option", "no")],
            [invalid("maybe", "option"), tap("yes")],
            [SILENT],
        ][n % 6]
    acts[FEATURE] = [
        [tap("reports")],
        [typed("2", "option", "automations")],
        [typed("INTEGRATIONS!", "option", "integrations")],
        [typed("Dashbóard", "option", "dashboard")],
        [invalid("pizza", "option"), tap("other")],
        [SILENT],
    ][(n // 6) % 6]
    acts[SCORE] = [
        [typed("3", "number", number=3)],
        [typed("9/10", "number", number=9)],
        [typed("7", "number", number=7)],
        [
            invalid("maybe later", "number"),
            invalid("11", "number"),
            typed("10", "number", number=10),
        ],
        [invalid("no idea", "number"), invalid("??", "number"), invalid("later", "number")],
        [SILENT],
        [typed("0", "number", number=0)],
        [typed("8,5", "number", number=8.5)],
    ][(n // 2) % 8]
    acts[FIX] = [[typed("Faster setup please", "text")], [SILENT]][(n // 16) % 2]
    acts[REVIEW] = [[tap("yes")], [typed("No", "option", "no")]][n % 2]
    acts[UPGRADE] = [
        [tap("yes")],
        [tap("no")],
        [typed("yes please", "option", "yes")],
        [SILENT],
    ][(n // 4) % 4]
    return acts


def expected(acts: dict[int, list[Act]]) -> tuple[list[int], list[tuple[int, Expect]], str | None]:
    """The steps asked, the typed answers stored (step, answer) and the end note's start."""
    path, answers = [GOAL, SETUP, FEATURE, SCORE], []
    for step in path:
        answers += [(step, a.expect) for a in acts[step] if a.expect is not None]
    if acts[SCORE] == [SILENT]:
        return path, answers, "no reply to step 4"
    score = acts[SCORE][-1].expect
    assert score is not None
    number = score[2] if score[3] else None
    if number is not None and number <= 6:
        path.append(FIX)
    elif number is not None and number >= 9:
        path.append(REVIEW)
    path.append(UPGRADE)
    for step in path[4:]:
        answers += [(step, a.expect) for a in acts[step] if a.expect is not None]
    return path, answers, "no reply to step 7" if acts[UPGRADE] == [SILENT] else None


def answer_value(acts: dict[int, list[Act]], step: int) -> str | float | None:
    """What the export shows for a step: the first valid answer's option, number or text."""
    for act in acts[step]:
        if act.expect is not None and act.expect[3]:
            kind, option, number, _ = act.expect
            if kind == "number" and number is not None:
                return int(number) if float(number).is_integer() else number
            return option if kind == "option" else act.value
    return None


def expected_results(scripts: list[dict[int, list[Act]]]) -> dict[str, dict[str, Any]]:
    """Per question id: the results endpoint's counts the scripts imply."""
    out: dict[str, dict[str, Any]] = {}
    for step, qid in enumerate(IDS):
        asked = [acts for acts in scripts if step in expected(acts)[0]]
        said = [a.expect for acts in asked for a in acts[step] if a.expect is not None]
        values = [answer_value(acts, step) for acts in asked]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        out[qid] = {
            "sent": len(asked),
            "answered": sum(v is not None for v in values),
            "replies": len(said),
            "invalid": sum(not e[3] for e in said),
            "options": dict(Counter(v for v in values if isinstance(v, str)))
            if step in (SETUP, FEATURE, REVIEW, UPGRADE)
            else {},
            "nps": (
                sum(n >= 9 for n in numbers),
                sum(7 <= n < 9 for n in numbers),
                sum(n <= 6 for n in numbers),
            )
            if step == SCORE
            else None,
        }
    return out


@dataclass
class User:
    phone: str
    acts: dict[int, list[Act]]
    done: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def answer(self, step: int, purpose: str, message: Any) -> dict[str, Any] | None:
        """The `/_fake/inbound` body for this user's reply to `message`, or None."""
        if purpose == "reminder":
            return None  # they answer questions and re-asks, or nothing
        queue = self.acts[step]
        if self.done[step] >= len(queue):
            return None
        act = queue[self.done[step]]
        self.done[step] += 1
        if act.how == "silent":
            return None
        body: dict[str, Any] = {"from": self.phone, "reply_to": message.wamid}
        choices = {c[0]: c for c in message.choices}
        if act.how == "type" or act.value not in choices:
            # Typed, or a tap where there is nothing to tap (a template without
            # buttons): the user types the option's title.
            body.pop("reply_to")
            return {**body, "kind": "text", "text": TITLES.get(act.value, act.value)}
        option_id, title, description = choices[act.value]
        if message.type == "template":
            return {**body, "kind": "button", "payload": option_id, "text": title}
        kind = "list_reply" if len(choices) > 3 else "button_reply"
        body.update(kind=kind, reply_id=option_id, text=title)
        if description:
            body["description"] = description
        return body


@pytest.mark.slow
async def test_three_hundred_users_walk_every_branch_of_the_free_trial(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'questions.db'}"
    start = datetime.now(UTC).replace(microsecond=0)
    clock = FakeClock(start)
    zone = midday_zone(start)
    flows = load_flows(REPO / "flows")
    config = FakeConfig(
        access_token=TOKEN,
        rate_per_s=0,
        pair_interval_s=0,
        app_secret=SECRET,
        sent_delay_s=0.01,
        delivered_delay_s=0.02,
        read_fraction=0.0,
        seed=15,
    )
    users = {phone(n): User(phone(n), script(n)) for n in range(USERS)}
    replies: Counter[str] = Counter()
    async with clocked_world(url, clock, config, secret=SECRET, api_token=API_TOKEN) as w:
        app, base, fake, http, client, store = w.app, w.base, w.fake, w.http, w.client, w.store
        h = Harness(store, flows, fake, base, clock, w.settings)
        items = [{"phone": p, "flow": "free-trial", "timezone": zone} for p in users]
        async with http.post(f"{base}/v1/conversations", json=items) as resp:
            assert resp.status == 201, await resp.text()
        seen = 0
        for _ in range(300):
            await h.send_due(client)
            await h.settle(app)
            new = fake.state.messages[seen:]
            seen += len(new)
            rows = {m.id: m for m in (await store.snapshot()).messages}
            at = clock.now() + timedelta(minutes=10)
            bodies = []
            for m in new:
                row = rows[int(m.callback_data or 0)]
                body = users["+" + m.to].answer(row.step, row.purpose, m)
                if body is not None:
                    bodies.append({**body, "timestamp": int(at.timestamp())})
            if bodies:
                clock.set(at)
                for body in bodies:
                    replies[body["kind"]] += 1
                    async with http.post(f"{fake.base_url}/_fake/inbound", json=body) as r:
                        assert r.status == 200, await r.text()
                await h.settle(app)
                continue
            nxt = await store.next_due_at(clock.now() - timedelta(days=3650))
            if nxt is None:
                break
            clock.set(max(nxt, clock.now()))
        snap = await store.snapshot()
        async with http.get(f"{base}/v1/flows/free-trial/results") as resp:
            assert resp.status == 200, await resp.text()
            results = await resp.json()
        sent = list(fake.state.messages)

    # Every way of answering was used.
    assert {"button_reply", "list_reply", "button", "text"} <= set(replies), replies
    assert [m.failure_code for m in sent if m.failure_code is not None] == []
    convs = {c.phone: c for c in snap.conversations}
    inbound: dict[int, list[Any]] = defaultdict(list)
    for reply in sorted(snap.inbound, key=lambda r: r.id):
        inbound[reply.conversation_id or 0].append(reply)
    asked: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for msg in sorted(snap.messages, key=lambda r: r.id):
        asked[msg.conversation_id].append((msg.step, msg.purpose))
    branches: Counter[tuple[int, ...]] = Counter()
    for n in range(USERS):
        p = phone(n)
        conv, acts = convs[p], users[p].acts
        path, answers, note = expected(acts)
        branches[tuple(path)] += 1
        assert conv.state == "completed", (p, conv)
        if note is None:
            assert conv.last_error is None, (p, conv.last_error)
        else:
            assert (conv.last_error or "").startswith(note), (p, conv.last_error)
        questions = [s for s, purpose in asked[conv.id] if purpose in ("question", "fallback")]
        assert questions == path, (p, questions, path)
        reasks = [(s, purpose) for s, purpose in asked[conv.id] if purpose.startswith("reask")]
        # One re-ask per invalid answer, at most max_reasks (2) per step.
        invalids = Counter(s for s, a in answers if not a[3])
        assert Counter(s for s, _ in reasks) == {s: min(c, 2) for s, c in invalids.items()}, (
            p,
            reasks,
        )
        got = [
            (r.step, (r.answer_kind, r.answer_option, r.answer_number, r.valid))
            for r in inbound[conv.id]
        ]
        assert got == answers, (p, got, answers)
    # The export: one row per conversation, each question's typed answer.
    out = io.StringIO()
    assert await write_answers(url, "free-trial", REPO / "flows", out, as_json=True) == USERS
    exported = {r["phone"]: r["answers"] for r in json.loads(out.getvalue())}
    for n in range(USERS):
        acts = users[phone(n)].acts
        path = expected(acts)[0]
        wanted = {qid: answer_value(acts, s) if s in path else None for s, qid in enumerate(IDS)}
        assert exported[phone(n)] == wanted, (phone(n), exported[phone(n)], wanted)
    # The results endpoint: per question, what the users' scripts add up to.
    want_results = expected_results([u.acts for u in users.values()])
    assert results["conversations"] == USERS
    for q in results["questions"]:
        counts = want_results[q["id"]]
        nps = q["nps"]
        seen_counts = {
            "sent": q["funnel"]["sent"],
            "answered": q["funnel"]["answered"],
            "replies": q["replies"],
            "invalid": q["invalid"],
            "options": {o["id"]: o["count"] for o in q["options"] if o["count"]},
            "nps": None if nps is None else (nps["promoters"], nps["passives"], nps["detractors"]),
        }
        assert seen_counts == counts, (q["id"], seen_counts, counts)
    # Every branch after the score: what to fix, a review, straight on, and the end.
    assert {len(path) for path in branches} == {4, 5, 6}, branches
    assert any(FIX in path for path in branches) and any(REVIEW in path for path in branches)
