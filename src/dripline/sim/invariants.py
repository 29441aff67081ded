"""The properties every simulated run must keep, checked against what the world saw.

Each is named in docs/reliability.md ("Invariants the simulator checks"):

    at-most-once      no (conversation, step, purpose) accepted by the API twice
    settled           the run ends with every conversation finished and no message
                      pending, sending or unknown (except where the conversation
                      stated why it gave up)
    no-blind-give-up  no send is given up as "outcome unknown" when the world had
                      delivered the evidence: its own status, or statuses of later
                      sends while it had none (it was never accepted)
    unknown-without-cause  nothing ends "outcome unknown" in a world where no crash,
                      stall or lost answer could hide an outcome
    stop-is-final     nothing is accepted for a conversation after its STOP was applied
    replies-reach     every message a user sent after being enrolled is recorded with
                      one of that user's conversations, whatever WhatsApp ID it came from
    wa-id-known       a conversation whose message the API accepted knows the user's
                      WhatsApp ID (from the send's answer, or its statuses' recipient_id
                      when the answer was lost), and a known ID is the user's
    final-is-final    a conversation in a terminal state never changes state again
                      (except `completed` reopened or failed by a refusal its
                      webhook reported); a message's status never moves backwards
                      (except `failed` back to `pending`: a refused send retried)
    completed-never-refused  no conversation ends `completed` while the API refused
                      one of its questions (every step it went through has a
                      question or template the API accepted and did not refuse)
    rate              no sender number gets more requests in any 1 s window than its
                      rate allows (plus the limiter's documented burst)
    pair              no request reaches a recipient within the pair interval of an
                      accepted message to it (no 131056)

The sampler (`Observer`) watches the store every SAMPLE_S of virtual time for the
properties that need history; the rest are checked on the final state.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dripline.sim.api import Accepted
from dripline.sim.config import SimConfig

__all__ = ["SAMPLE_S", "Observer", "check_final"]

SAMPLE_S = 0.25
TERMINAL = ("completed", "failed", "opted_out", "cancelled")
RANK = {"pending": 0, "sending": 0, "unknown": 0, "sent": 1, "failed": 2, "delivered": 3, "read": 4}
UNKNOWN_REASON = "outcome of step"
WINDOW_REASON = "window closed"  # dispatcher/window.py's reason for a step it cannot send
# The limiter lets a send start up to 0.05 s ahead of its steady schedule (burst_s).
BURST_S = 0.05


@dataclass
class Observer:
    """What the sampler has seen: first times, and history violations. `at` turns a
    store datetime into virtual seconds."""

    at: Any
    first_state: dict[tuple[int, str], float] = field(default_factory=dict)
    terminal: dict[int, tuple[str, float]] = field(default_factory=dict)
    status_seen: dict[int, tuple[str, float]] = field(default_factory=dict)
    first_webhook_at: dict[int, float] = field(default_factory=dict)
    # (sample time, arrival of the oldest inbox row not yet processed, inf when none)
    inbox_lag: list[tuple[float, float]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def sample_inbox(self, t: float, inbox: Sequence[Any]) -> None:
        waiting = [self.at(r.received_at) for r in inbox if r.processed_at is None]
        self.inbox_lag.append((t, min(waiting, default=float("inf"))))

    def caught_up(self, since: float, until: float, upto: float) -> bool:
        """Every sample in [since, until] saw all webhooks received by `upto` applied."""
        return all(oldest > upto for t, oldest in self.inbox_lag if since <= t <= until)

    def sample(
        self,
        t: float,
        conversations: Sequence[Any],
        messages: Sequence[Any],
        accepted: Sequence[Accepted] = (),
    ) -> None:
        # Conversations with a send refused after acceptance: its row keeps the code
        # until a retry of the same row records its own outcome, which can happen
        # between two samples (seed 5277: refused, reopened, resent with its response
        # lost, recorded `unknown`), so the API's own record counts too.
        refused = {m.conversation_id for m in messages if m.error_code is not None}
        by_id = {m.id: m for m in messages}
        for a in accepted:
            if a.refused is not None and a.callback and a.callback.isdigit():
                row = by_id.get(int(a.callback))
                if row is not None:
                    refused.add(row.conversation_id)
        for c in conversations:
            self.first_state.setdefault((c.id, c.state), t)
            seen = self.terminal.get(c.id)
            if seen is None:
                if c.state in TERMINAL:
                    self.terminal[c.id] = (c.state, t)
            elif seen[0] == "completed" and c.state != "completed" and c.id in refused:
                # A refusal reported after the last step completed reopens or fails it.
                if c.state in TERMINAL:
                    self.terminal[c.id] = (c.state, t)
                else:
                    del self.terminal[c.id]
            elif seen[0] and seen[0] != c.state:
                # Reported once per conversation; "" marks it as reported.
                self.violations.append(
                    f"final-is-final: conversation {c.id} went from {seen[0]} "
                    f"(seen at {seen[1]:.2f}s) to {c.state} at {t:.2f}s"
                )
                self.terminal[c.id] = ("", t)
        for m in messages:
            prev = self.status_seen.get(m.id)
            # A refused send retried under its own row: failed (maybe unseen) to pending,
            # and on (its retry may fail too). Only such a row is unsent with a wamid,
            # the refused attempt's (`requeue_messages`).
            retried = m.status in ("pending", "sending", "unknown") and (
                m.error_code is not None or m.wamid is not None
            )
            if prev is not None and not retried and RANK.get(m.status, 0) < RANK.get(prev[0], 0):
                self.violations.append(
                    f"final-is-final: message {m.id} status went back from {prev[0]} to "
                    f"{m.status} at {t:.2f}s"
                )
            self.status_seen[m.id] = (m.status, t)
            if m.webhook_at is not None and m.id not in self.first_webhook_at:
                self.first_webhook_at[m.id] = self.at(m.webhook_at)


def _at_most_once(accepted: list[Accepted], messages: dict[int, Any]) -> list[str]:
    out = []
    by_key: dict[tuple[int, int, str], list[Accepted]] = defaultdict(list)
    for a in accepted:
        if a.refused is not None:
            continue  # taken, then refused: never delivered, may be retried
        m = messages.get(int(a.callback)) if a.callback and a.callback.isdigit() else None
        if m is None:
            out.append(f"at-most-once: accepted {a.wamid} has no message row (cb={a.callback})")
            continue
        by_key[(m.conversation_id, m.step, m.purpose)].append(a)
    for key, items in sorted(by_key.items()):
        if len(items) > 1:
            when = ", ".join(f"{a.wamid}@{a.at:.2f}s" for a in items)
            out.append(f"at-most-once: {key} accepted {len(items)} times ({when})")
    return out


def _completed_never_refused(
    cfg: SimConfig,
    accepted: list[Accepted],
    conversations: Sequence[Any],
    messages: dict[int, Any],
) -> list[str]:
    """Every step a completed conversation went through reached the user: the API
    accepted its question or template and did not refuse it."""
    if not cfg.statuses:
        return []  # no webhooks: a refusal after acceptance cannot be known
    delivered: set[tuple[int, int]] = set()
    refused: dict[tuple[int, int], Accepted] = {}
    for a in accepted:
        m = messages.get(int(a.callback)) if a.callback and a.callback.isdigit() else None
        if m is None or m.purpose not in ("question", "fallback"):
            continue
        key = (m.conversation_id, m.step)
        if a.refused is None:
            delivered.add(key)
        else:
            refused.setdefault(key, a)
    out = []
    for c in conversations:
        if c.state != "completed":
            continue
        for step in range(c.step + 1):
            lost = refused.get((c.id, step))
            if lost is not None and (c.id, step) not in delivered:
                out.append(
                    f"completed-never-refused: conversation {c.id} completed although step "
                    f"{step} was refused ({lost.wamid}, {lost.refused}) and never delivered"
                )
    return out


def _settled(conversations: Sequence[Any], messages: Sequence[Any]) -> list[str]:
    out = []
    convs = {c.id: c for c in conversations}
    templated = {
        (m.conversation_id, m.step)
        for m in messages
        if m.purpose == "fallback" and m.status in ("sent", "delivered", "read")
    }
    for c in conversations:
        if c.state not in TERMINAL:
            out.append(
                f"settled: conversation {c.id} still {c.state} (step {c.step}, "
                f"{c.purpose}, last error {c.last_error!r})"
            )
        elif c.state == "failed" and not c.last_error:
            out.append(f"settled: conversation {c.id} failed without a reason")
    for m in messages:
        if m.status in ("pending", "sending", "unknown"):
            c = convs[m.conversation_id]
            gave_up = c.state == "failed" and UNKNOWN_REASON in (c.last_error or "")
            # Refused after acceptance and put back to retry; the step went another way
            # (its template, as the window had closed meanwhile) or the flow ended.
            requeued = m.status == "pending" and m.error_code is not None
            # A question in doubt whose retry came after the window closed: the step
            # went as its template instead (dispatcher/window.py, the margin).
            replaced = m.purpose == "question" and (m.conversation_id, m.step) in templated
            gave_up = gave_up or ((requeued or replaced) and c.state in TERMINAL)
            # Its retry came after the window closed, with no template to send instead:
            # the conversation failed saying so (the text may or may not have arrived).
            gave_up = gave_up or (c.state == "failed" and WINDOW_REASON in (c.last_error or ""))
            moved_on = c.state in ("opted_out", "cancelled") or (c.step, c.purpose) != (
                m.step,
                m.purpose,
            )
            if not (gave_up or moved_on):
                out.append(f"settled: message {m.id} of conversation {c.id} left {m.status}")
    return out


def _up_throughout(up: Sequence[tuple[float, float]], start: float, end: float) -> bool:
    return any(a <= start and end <= b for a, b in up)


def _no_blind_give_up(
    cfg: SimConfig,
    obs: Observer,
    accepted: list[Accepted],
    intake_up: Sequence[tuple[float, float]],
    conversations: Sequence[Any],
    messages: Sequence[Any],
    at: Any,
) -> list[str]:
    """A send the API never accepted, given up as unknown, although a send reserved with
    or after it had its status applied by a webhook while the receiver was up all the
    time since, and the processor applying what arrived (all long enough before the
    give-up for a check to have seen it)."""
    if not cfg.statuses:
        return []  # no status webhooks at all: giving up is all that is left
    out = []
    accepted_ids = {int(a.callback) for a in accepted if a.callback and a.callback.isdigit()}
    by_conv: dict[int, list[Any]] = defaultdict(list)
    for m in messages:
        by_conv[m.conversation_id].append(m)
    settle_s = 2 * cfg.unknown_after_s + 2.0  # the evidence's margin, a check, slack
    for c in conversations:
        if c.state != "failed" or UNKNOWN_REASON not in (c.last_error or ""):
            continue
        gave_up_at = obs.first_state.get((c.id, "failed"))
        if gave_up_at is None:
            continue
        for m in by_conv[c.id]:
            if m.status not in ("sending", "unknown", "pending") or m.id in accepted_ids:
                continue
            reserved = at(m.reserved_at or m.created_at)
            proof = [
                t
                for other in messages
                if other.id != m.id
                and other.reserved_at is not None
                and at(other.reserved_at) >= reserved
                and (t := obs.first_webhook_at.get(other.id)) is not None
                and t + settle_s <= gave_up_at
                and _up_throughout(intake_up, reserved, t + cfg.unknown_after_s + 1.0)
                and obs.caught_up(t, gave_up_at, t + cfg.unknown_after_s + 1.0)
            ]
            if proof:
                out.append(
                    f"no-blind-give-up: message {m.id} (never accepted) given up at "
                    f"{gave_up_at:.2f}s although a later send's status was applied at "
                    f"{min(proof):.2f}s with the webhook receiver up throughout"
                )
    return out


def _hides_outcomes(cfg: SimConfig) -> bool:
    """Whether this world can hide a send's outcome from its worker: a crash, a stall,
    or an answer lost on the way back. Database outages alone cannot."""
    return bool(
        cfg.crashes
        or cfg.stalls
        or cfg.p_drop_before_accept
        or cfg.p_lost_response
        or cfg.p_timeout_after_accept
        or cfg.p_bare_5xx
        or cfg.read_timeout_s < 10 * cfg.latency_mean_s
    )


def _unknown_without_cause(cfg: SimConfig, conversations: Sequence[Any]) -> list[str]:
    """Nothing ends "outcome unknown" when nothing could hide an outcome: a worker knows
    what it sent, whatever the database does meanwhile."""
    if _hides_outcomes(cfg):
        return []
    return [
        f"unknown-without-cause: conversation {c.id} gave up as unknown ({c.last_error!r}) "
        "although no crash, stall or lost answer could hide its outcome"
        for c in conversations
        if c.state == "failed" and UNKNOWN_REASON in (c.last_error or "")
    ]


def _stop_is_final(obs: Observer, accepted: list[Accepted], messages: dict[int, Any]) -> list[str]:
    out = []
    for a in accepted:
        m = messages.get(int(a.callback)) if a.callback and a.callback.isdigit() else None
        if m is None:
            continue
        stopped = obs.first_state.get((m.conversation_id, "opted_out"))
        if stopped is not None and a.at > stopped:
            out.append(
                f"stop-is-final: {a.wamid} for conversation {m.conversation_id} "
                f"accepted at {a.at:.2f}s, after its STOP was applied ({stopped:.2f}s)"
            )
    return out


def _rate(cfg: SimConfig, arrivals: dict[str, list[float]]) -> list[str]:
    out = []
    allowed = cfg.rate_per_s * (1.0 + BURST_S) + cfg.workers
    for number, times in sorted(arrivals.items()):
        times = sorted(times)
        start = 0
        for end, t in enumerate(times):
            while t - times[start] >= 1.0:
                start += 1
            if end - start + 1 > allowed:
                out.append(
                    f"rate: {end - start + 1} requests to {number} within 1 s ending "
                    f"at {t:.2f}s (allowed {allowed:.1f})"
                )
                break
    return out


def _replies_reach(
    owners: dict[str, str], conversations: Sequence[Any], inbound: Sequence[Any]
) -> list[str]:
    """`owners`: each user's WhatsApp ID (as inbound `from`, E.164) -> enrolled number."""
    by_id = {c.id: c for c in conversations}
    first: dict[str, Any] = {}
    for c in conversations:
        if c.phone not in first or c.created_at < first[c.phone]:
            first[c.phone] = c.created_at
    out = []
    for row in inbound:
        phone = owners.get(row.phone)
        enrolled = first.get(phone) if phone is not None else None
        if enrolled is None or row.received_at < enrolled:
            continue  # the user had no conversation yet when writing
        conv = by_id.get(row.conversation_id)
        if conv is None or conv.phone != phone:
            out.append(
                f"replies-reach: {row.wamid} from {row.phone} (enrolled as {phone}) was "
                f"recorded with conversation {row.conversation_id}"
            )
    return out


def _wa_id_known(
    owners: dict[str, str], conversations: Sequence[Any], messages: Sequence[Any]
) -> list[str]:
    """A conversation whose message the API accepted knows its user's WhatsApp ID: from
    the send's answer or, when that was lost, from the message's status webhooks (their
    `recipient_id`); and a known ID is the user's."""
    wa_id_of = {phone: wa[1:] for wa, phone in owners.items()}
    accepted = {m.conversation_id for m in messages if m.status in ("sent", "delivered", "read")}
    out = []
    for c in conversations:
        expected = wa_id_of.get(c.phone)
        if expected is None:
            continue
        if c.wa_id is not None and c.wa_id != expected:
            out.append(f"wa-id-known: conversation {c.id} ({c.phone}) has {c.wa_id}")
        elif c.wa_id is None and c.id in accepted:
            out.append(
                f"wa-id-known: conversation {c.id} ({c.phone}) had a message accepted and "
                f"never learned its WhatsApp ID {expected}"
            )
    return out


def _no_event_failed(inbox: Sequence[Any]) -> list[str]:
    """Every webhook the simulation sends is well formed: none may end marked failed (a
    transient database refusal is retried, never a reason to give an event up)."""
    failed = [r for r in inbox if r.processed_at is not None and r.error is not None]
    return (
        [
            f"inbox: {len(failed)} webhook bodies failed for good (ids {[r.id for r in failed[:5]]}"
            f"; the first: {failed[0].error})"
        ]
        if failed
        else []
    )


def check_final(
    cfg: SimConfig,
    obs: Observer,
    accepted: list[Accepted],
    arrivals: dict[str, list[float]],
    pair_refusals: int,
    intake_up: Sequence[tuple[float, float]],
    conversations: Sequence[Any],
    messages: Sequence[Any],
    inbound: Sequence[Any] = (),
    owners: dict[str, str] | None = None,
    inbox: Sequence[Any] = (),
) -> list[str]:
    by_id = {m.id: m for m in messages}
    out = list(obs.violations)
    out += _at_most_once(accepted, by_id)
    out += _completed_never_refused(cfg, accepted, conversations, by_id)
    out += _settled(conversations, messages)
    out += _no_blind_give_up(cfg, obs, accepted, intake_up, conversations, messages, obs.at)
    out += _unknown_without_cause(cfg, conversations)
    out += _stop_is_final(obs, accepted, by_id)
    out += _replies_reach(owners or {}, conversations, inbound)
    out += _wa_id_known(owners or {}, conversations, messages)
    out += _rate(cfg, arrivals)
    out += _no_event_failed(inbox)
    if pair_refusals:
        out.append(f"pair: {pair_refusals} requests refused with 131056")
    return out
