"""The in-memory store's queries, as plain functions over a `View`.

Each mirrors one SQL statement of `store/sql/` (named in its docstring), including its
edge cases: which comparisons are strict, what a NULL matches, which columns a write
leaves alone. Ties the SQL leaves to the database (equal due times, equal send times)
are broken by id here, so the answer is the same on every run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from dripline.store.computed import summarize_sends
from dripline.store.memory_tables import View, utc, utc_or_none
from dripline.store.report_types import (
    BacklogCounts,
    BacklogSnapshot,
    ErrorCount,
    ImportedConversation,
    LagSummary,
    WebhookErrorCount,
)
from dripline.store.types import (
    ACTIVE_STATES,
    CONVERSATION_STATES,
    EVIDENCE_SENDS,
    LEASE_LOST,
    NONFINAL_STATUSES,
    OPT_OUT_KIND,
    Conversation,
    Enrollment,
    Inbound,
    Message,
    Outcome,
    Reservation,
    ReservationResult,
    WorkerInfo,
)

__all__ = [
    "answer_page",
    "backlog",
    "backlog_snapshot",
    "by_state",
    "due",
    "due_order",
    "error_counts",
    "insert_conversation",
    "lag_summary",
    "latency_samples",
    "live",
    "new_conversation",
    "next_due",
    "owned",
    "record",
    "reserve",
    "sent_counts",
    "worker_row",
]

# Message statuses a row can hold an error in (as `sql/operator.py`).
_ERROR_STATUSES = ("pending", "unknown", "failed")


def _unleased(c: Conversation, now: datetime) -> bool:
    return c.lease_expires_at is None or c.lease_expires_at < now


# enrollment and dispatch ---------------------------------------------------------------
def last_inbound(v: View, phones: set[str]) -> dict[tuple[str, str | None], datetime]:
    """Each (phone, business number)'s latest inbound message, if the user ever wrote to
    that number (its window's start); number None: the default."""
    seen: dict[tuple[str, str | None], datetime] = {}
    for row in v.inbound.values():
        key = (row.phone, row.sender)
        if row.phone in phones and (key not in seen or row.received_at > seen[key]):
            seen[key] = row.received_at
    return seen


def new_conversation(
    v: View, item: Enrollment, now: datetime, last_inbound_at: datetime | None = None
) -> int:
    """enroll's INSERT: pending, step 0, due at `item.at` or now."""
    at = utc(item.at) if item.at is not None else now
    return insert_conversation(v, item, 0, "question", "pending", at, now, last_inbound_at)


def insert_conversation(
    v: View,
    item: Enrollment | ImportedConversation,
    step: int,
    purpose: str,
    state: str,
    next_send_at: datetime,
    now: datetime,
    last_inbound_at: datetime | None = None,
) -> int:
    """A new conversation row at `step` (enrollment: 0; an import: wherever it was)."""
    row = Conversation(
        id=v.next_id("conversations"),
        phone=item.phone,
        flow=item.flow,
        step=step,
        purpose=purpose,
        state=state,
        next_send_at=next_send_at,
        attempts=0,
        lease_owner=None,
        lease_expires_at=None,
        last_inbound_at=last_inbound_at,
        last_error=None,
        name=item.name,
        timezone=item.timezone,
        sender=item.sender,
        fields=dict(item.fields),
        created_at=now,
        updated_at=now,
    )
    v.put_conversation(row)
    return row.id


def due(v: View, now: datetime) -> Iterator[Conversation]:
    """The claim's WHERE: active, due, no live lease."""
    for c in v.conversations.values():
        if (
            c.state in ACTIVE_STATES
            and c.next_send_at is not None
            and c.next_send_at <= now
            and _unleased(c, now)
        ):
            yield c


def due_order(c: Conversation) -> tuple[datetime, int]:
    assert c.next_send_at is not None
    return c.next_send_at, c.id


def next_due(v: View, now: datetime) -> datetime | None:
    """min(next_send_at) over active, unleased rows."""
    times = [
        c.next_send_at
        for c in v.conversations.values()
        if c.state in ACTIVE_STATES and c.next_send_at is not None and _unleased(c, now)
    ]
    return min(times, default=None)


def owned(v: View, ids: Sequence[int], worker_id: str) -> list[Conversation]:
    """Rows among `ids` whose lease `worker_id` owns (whether or not it has expired)."""
    rows = (v.conversations.get(i) for i in sorted(set(ids)))
    return [c for c in rows if c is not None and c.lease_owner == worker_id]


def live_owned(v: View, ids: Sequence[int], worker_id: str, now: datetime) -> list[Conversation]:
    """Rows among `ids` on which `worker_id` holds a live lease (expiry at or after now)."""
    return [
        c
        for c in owned(v, ids, worker_id)
        if c.lease_expires_at is not None and c.lease_expires_at >= now
    ]


def reserve(
    v: View, items: Sequence[Reservation], worker_id: str, now: datetime
) -> list[ReservationResult]:
    """`SqlStore.reserve`, rule for rule."""
    held = {c.id for c in live_owned(v, [i.conversation_id for i in items], worker_id, now)}
    results: dict[tuple[int, int, str], ReservationResult] = {}
    for item in items:
        key = (item.conversation_id, item.step, item.purpose)
        if key in results:
            continue  # a duplicate in the batch: same answer as the first
        if item.conversation_id not in held:
            results[key] = ReservationResult(item.conversation_id, 0, False, LEASE_LOST, 0)
            continue
        mid = v.message_keys.get(key)
        row = v.messages.get(mid) if mid is not None else None
        if row is None:
            new = Message(
                id=v.next_id("messages"),
                conversation_id=item.conversation_id,
                step=item.step,
                purpose=item.purpose,
                sender=item.sender,
                wamid=None,
                status="sending",
                error_code=None,
                error_title=None,
                attempts=1,
                due_at=utc_or_none(item.due_at),
                sent_at=None,
                latency_ms=None,
                status_at=now,
                created_at=now,
                updated_at=now,
                webhook_at=None,
                reserved_at=now,
            )
            v.put_message(new)
            results[key] = ReservationResult(
                item.conversation_id, new.id, True, None, 1, reserved_at=now
            )
            continue
        status = row.status
        if status == "sending" and row.reserved_at == now:
            # Our own reservation from an attempt whose answer was lost (the caller
            # retries with the same `now`): still ours, never sent.
            results[key] = ReservationResult(
                item.conversation_id, row.id, True, status, row.attempts, reserved_at=now
            )
            continue
        if status == "pending" or (status in ("sending", "unknown") and item.resend_unknown):
            attempts = row.attempts + 1
            v.change_message(
                row,
                status="sending",
                attempts=attempts,
                status_at=now,
                updated_at=now,
                reserved_at=now,
            )
            results[key] = ReservationResult(
                item.conversation_id, row.id, True, status, attempts, reserved_at=now
            )
            continue
        if status == "sending":
            # Its worker crashed mid-send: the message may or may not have left.
            v.change_message(row, status="unknown", status_at=now, updated_at=now)
        results[key] = ReservationResult(
            item.conversation_id,
            row.id,
            False,
            status,
            row.attempts,
            wamid=row.wamid,
            error_code=row.error_code,
            status_at=row.status_at,
            reserved_at=row.reserved_at or row.created_at,
        )
    return [results[(i.conversation_id, i.step, i.purpose)] for i in items]


def record(v: View, outcomes: Sequence[Outcome], worker_id: str, now: datetime) -> int:
    """`SqlStore.record_results`: messages by id (status only while non-final), then
    conversations where `worker_id` owns the lease, releasing it."""
    for o in outcomes:
        m = o.message
        row = v.messages.get(m.message_id) if m is not None else None
        if m is None or row is None:
            continue
        mine = row.status in NONFINAL_STATUSES
        v.change_message(
            row,
            status=m.status if mine else row.status,
            error_code=m.error_code if mine else row.error_code,
            error_title=m.error_title if mine else row.error_title,
            wamid=m.wamid if m.wamid is not None else row.wamid,
            sent_at=utc(m.sent_at) if m.sent_at is not None else row.sent_at,
            latency_ms=m.latency_ms if m.latency_ms is not None else row.latency_ms,
            status_at=now if mine else row.status_at,
            updated_at=now,
        )
    written = 0
    for o in outcomes:
        u = o.conversation
        c = v.conversations.get(u.conversation_id)
        if c is None or c.lease_owner != worker_id or c.lease_expires_at is None:
            continue
        if c.lease_expires_at < now:
            continue  # the lease lapsed: what happened meanwhile must not be overwritten
        v.change_conversation(
            c,
            state=u.state,
            step=u.step,
            purpose=u.purpose,
            next_send_at=utc_or_none(u.next_send_at),
            attempts=u.attempts,
            last_error=u.last_error,
            wa_id=u.wa_id if u.wa_id is not None else c.wa_id,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )
        written += 1
    return written


def status_evidence(
    v: View, wanted: Sequence[tuple[int, datetime]], before: datetime
) -> dict[int, datetime]:
    """`EvidenceSql.status_evidence`: the earliest webhook status, applied by `before`,
    among the first EVIDENCE_SENDS other messages reserved since each reservation."""
    found: dict[int, datetime] = {}
    rows = sorted(
        (m for m in v.messages.values() if m.reserved_at is not None),
        key=lambda m: (m.reserved_at, m.id),
    )
    for message_id, reserved_at in wanted:
        reserved_at = utc(reserved_at)
        after = [
            m
            for m in rows
            if m.reserved_at is not None and m.reserved_at >= reserved_at and m.id != message_id
        ]
        times = [
            m.webhook_at
            for m in after[:EVIDENCE_SENDS]
            if m.webhook_at is not None and m.webhook_at <= before
        ]
        if times:
            found[message_id] = min(times)
    return found


def worker_row(worker: WorkerInfo) -> WorkerInfo:
    """The row as the workers table would return it (UTC, stats never None)."""
    return WorkerInfo(
        id=worker.id,
        hostname=worker.hostname,
        pid=worker.pid,
        started_at=utc(worker.started_at),
        heartbeat_at=utc(worker.heartbeat_at),
        rate_per_s=float(worker.rate_per_s),
        concurrency=int(worker.concurrency),
        policy=worker.policy,
        stats=dict(worker.stats),
    )


def live(v: View, since: datetime) -> list[WorkerInfo]:
    """Workers whose heartbeat is at or after `since`, by id."""
    rows = [w for w in v.workers.values() if w.heartbeat_at >= since]
    return sorted(rows, key=lambda w: w.id)


# the export ---------------------------------------------------------------------------
def answer_page(
    v: View, flow: str, after: int, size: int
) -> list[tuple[Conversation, list[Inbound]]]:
    convs: list[Conversation] = []
    for c in v.conversations.values():
        if len(convs) >= size:
            break
        if c.flow == flow and c.id > after:
            convs.append(c)
    answers: dict[int, list[Inbound]] = {c.id: [] for c in convs}
    for i in v.inbound.values():
        if i.conversation_id in answers and i.step is not None and i.kind != OPT_OUT_KIND:
            answers[i.conversation_id].append(i)
    for found in answers.values():
        found.sort(key=lambda i: (i.received_at, i.id))
    return [(c, answers[c.id]) for c in convs]


# the operator's view --------------------------------------------------------------------
def backlog(v: View, now: datetime) -> BacklogCounts:
    """`OperatorSql.backlog`: over the whole table; `leased` counts any state."""
    by_state = dict.fromkeys(CONVERSATION_STATES, 0)
    due_now = overdue = next_hour = leased = 0
    minute_ago, hour = now - timedelta(minutes=1), now + timedelta(hours=1)
    for c in v.conversations.values():
        by_state[c.state] = by_state.get(c.state, 0) + 1
        active = c.state in ACTIVE_STATES
        at = c.next_send_at
        if active and at is not None and at <= now and _unleased(c, now):
            due_now += 1
            overdue += at <= minute_ago
        if active and at is not None and now < at <= hour:
            next_hour += 1
        if c.lease_expires_at is not None and c.lease_expires_at >= now:
            leased += 1
    return BacklogCounts(due_now, overdue, next_hour, leased, by_state)


def backlog_snapshot(v: View, now: datetime) -> BacklogSnapshot:
    """`OperatorSql.backlog_snapshot`: active rows due within the hour only."""
    due_now = overdue = next_hour = leased = 0
    minute_ago, hour = now - timedelta(minutes=1), now + timedelta(hours=1)
    for c in v.conversations.values():
        at = c.next_send_at
        if c.state not in ACTIVE_STATES or at is None or at > hour:
            continue
        if _unleased(c, now) and at <= now:
            due_now += 1
            overdue += at <= minute_ago
        next_hour += at > now
        leased += c.lease_expires_at is not None and c.lease_expires_at >= now
    return BacklogSnapshot(due_now, overdue, next_hour, leased)


def by_state(v: View) -> dict[str, int]:
    counts = dict.fromkeys(CONVERSATION_STATES, 0)
    for c in v.conversations.values():
        counts[c.state] = counts.get(c.state, 0) + 1
    return counts


def sent_counts(v: View, now: datetime, windows_s: Sequence[int]) -> dict[int, int]:
    counts = dict.fromkeys(windows_s, 0)
    for m in v.messages.values():
        if m.sent_at is None or m.sent_at > now:
            continue
        for w in windows_s:
            counts[w] += m.sent_at > now - timedelta(seconds=w)
    return counts


def _sent_at(m: Message) -> tuple[datetime, int]:
    assert m.sent_at is not None
    return m.sent_at, m.id


def _newest_sends(v: View, now: datetime, window_s: float) -> list[Message]:
    start = now - timedelta(seconds=window_s)
    rows = [m for m in v.messages.values() if m.sent_at is not None and start < m.sent_at <= now]
    rows.sort(key=_sent_at, reverse=True)
    return rows


def lag_summary(v: View, now: datetime, window_s: float, sample: int) -> LagSummary:
    rows = _newest_sends(v, now, window_s)[:sample]
    return summarize_sends((_sent_at(m)[0], m.due_at, m.latency_ms) for m in rows)


def error_counts(v: View, now: datetime, window_s: float, error_scan: int) -> list[ErrorCount]:
    ids = [m.id for m in v.messages.values()]
    if not ids:
        return []
    lowest = max(ids) - error_scan
    start = now - timedelta(seconds=window_s)
    counts: dict[tuple[int | None, str], int] = {}
    for m in v.messages.values():
        if (
            m.status in _ERROR_STATUSES
            and (m.error_code is not None or m.error_title is not None)
            and m.updated_at > start
            and m.id > lowest
        ):
            key = (m.error_code, m.status)
            counts[key] = counts.get(key, 0) + 1
    found = [ErrorCount(code, status, n) for (code, status), n in counts.items()]
    found.sort(key=lambda e: (-e.count, e.code if e.code is not None else -1, e.status))
    return found


def latency_samples(v: View, limit: int) -> list[float]:
    rows = [m for m in v.messages.values() if m.latency_ms is not None and m.sent_at is not None]
    rows.sort(key=_sent_at, reverse=True)
    return [float(m.latency_ms) for m in rows[:limit] if m.latency_ms is not None]


def webhook_errors(v: View, since: datetime | None) -> list[WebhookErrorCount]:
    """`WebhookErrorsSql.webhook_errors`: by code and number, the latest details."""
    groups: dict[tuple[int, str | None], tuple[int, datetime, str | None]] = {}
    for _, (at, e) in sorted(v.webhook_errors.items()):
        if since is not None and at <= since:
            continue
        key = (e.code, e.phone_number_id)
        n, last, _details = groups.get(key, (0, at, None))
        details = e.details[:1000] if e.details else None
        groups[key] = (n + 1, max(last, at), details)
    found = [
        WebhookErrorCount(code, number, n, last, details)
        for (code, number), (n, last, details) in groups.items()
    ]
    found.sort(key=lambda e: (-e.count, e.code, e.phone_number_id or ""))
    return found
