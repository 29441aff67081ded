"""The properties every simulated run must keep, checked against what the world saw.

Each is named in docs/reliability.md ("Invariants the simulator checks"):

    at-most-once      no (conversation, step, purpose) accepted by the API twice
    settled           the run ends with every conversation finished and no message
                      pending, sending or unknown (except where the conversation
                      stated why it gave up)
    no-blind-give-up  no send is given up as "outcome unknown" when the world had
                      delivered the evidence: its own status, or statuses of later
                      sends while it had none (it was never accepted)
    stop-is-final     nothing is accepted for a conversation after its STOP was applied
    final-is-final    a conversation in a terminal state never changes state again;
                      a message's status never moves backwards
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
# The limiter lets a send start up to 0.05 s ahead of its steady schedule (burst_s).
BURST_S = 0.05


@dataclass
class Observer:
    """What the sampler has seen: first times, and history violations."""

    first_state: dict[tuple[int, str], float] = field(default_factory=dict)
    terminal: dict[int, tuple[str, float]] = field(default_factory=dict)
    status_seen: dict[int, tuple[str, float]] = field(default_factory=dict)
    first_status_at: dict[int, float] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def sample(self, t: float, conversations: Sequence[Any], messages: Sequence[Any]) -> None:
        for c in conversations:
            self.first_state.setdefault((c.id, c.state), t)
            seen = self.terminal.get(c.id)
            if seen is not None and seen[0] != c.state:
                # Reported once per conversation: the row then lives on in a new state.
                self.violations.append(
                    f"final-is-final: conversation {c.id} went from {seen[0]} "
                    f"(seen at {seen[1]:.2f}s) to {c.state} at {t:.2f}s"
                )
                self.terminal[c.id] = (c.state, t) if c.state in TERMINAL else ("", t)
            elif seen is not None and seen[0] == "":
                continue
            elif seen is None and c.state in TERMINAL:
                self.terminal[c.id] = (c.state, t)
        for m in messages:
            prev = self.status_seen.get(m.id)
            if prev is not None and RANK.get(m.status, 0) < RANK.get(prev[0], 0):
                self.violations.append(
                    f"final-is-final: message {m.id} status went back from {prev[0]} to "
                    f"{m.status} at {t:.2f}s"
                )
            self.status_seen[m.id] = (m.status, t)
            if RANK.get(m.status, 0) > 0:
                self.first_status_at.setdefault(m.id, t)


def _at_most_once(accepted: list[Accepted], messages: dict[int, Any]) -> list[str]:
    out = []
    by_key: dict[tuple[int, int, str], list[Accepted]] = defaultdict(list)
    for a in accepted:
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


def _settled(conversations: Sequence[Any], messages: Sequence[Any]) -> list[str]:
    out = []
    convs = {c.id: c for c in conversations}
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
            moved_on = c.state in ("opted_out", "cancelled") or (c.step, c.purpose) != (
                m.step,
                m.purpose,
            )
            if not (gave_up or moved_on):
                out.append(f"settled: message {m.id} of conversation {c.id} left {m.status}")
    return out


def _no_blind_give_up(
    cfg: SimConfig,
    obs: Observer,
    accepted: list[Accepted],
    conversations: Sequence[Any],
    messages: Sequence[Any],
) -> list[str]:
    if not cfg.statuses:
        return []  # no status webhooks at all: giving up is all that is left
    out = []
    accepted_ids = {int(a.callback) for a in accepted if a.callback and a.callback.isdigit()}
    by_conv: dict[int, list[Any]] = defaultdict(list)
    for m in messages:
        by_conv[m.conversation_id].append(m)
    for c in conversations:
        if c.state != "failed" or UNKNOWN_REASON not in (c.last_error or ""):
            continue
        gave_up_at = obs.first_state.get((c.id, "failed"))
        if gave_up_at is None:
            continue
        for m in by_conv[c.id]:
            if m.status not in ("sending", "unknown", "pending"):
                continue
            seen = obs.first_status_at.get(m.id)
            if m.id in accepted_ids and seen is not None and seen < gave_up_at:
                out.append(
                    f"no-blind-give-up: message {m.id} given up at {gave_up_at:.2f}s "
                    f"although its status was applied at {seen:.2f}s"
                )
            if m.id not in accepted_ids:
                later = [
                    t for mid, t in obs.first_status_at.items() if mid > m.id and t < gave_up_at
                ]
                if later:
                    out.append(
                        f"no-blind-give-up: message {m.id} (never accepted) given up at "
                        f"{gave_up_at:.2f}s although {len(later)} later sends had statuses "
                        f"(first at {min(later):.2f}s)"
                    )
    return out


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


def check_final(
    cfg: SimConfig,
    obs: Observer,
    accepted: list[Accepted],
    arrivals: dict[str, list[float]],
    pair_refusals: int,
    conversations: Sequence[Any],
    messages: Sequence[Any],
) -> list[str]:
    by_id = {m.id: m for m in messages}
    out = list(obs.violations)
    out += _at_most_once(accepted, by_id)
    out += _settled(conversations, messages)
    out += _no_blind_give_up(cfg, obs, accepted, conversations, messages)
    out += _stop_is_final(obs, accepted, by_id)
    out += _rate(cfg, arrivals)
    if pair_refusals:
        out.append(f"pair: {pair_refusals} requests refused with 131056")
    return out
