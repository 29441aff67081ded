"""The webhook-processing transaction's contract (see `Store.webhook_transaction`).

Webhook processing is one transaction per batch of inbox rows: `webhook_transaction()`
yields a `WebhookTx`, whose methods read and write inside it; leaving the block commits,
an exception rolls everything back. Its own module so `store/base.py`, the rest of the
contract, stays readable; `dripline.store.base.WebhookTx` still names it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from dripline.store.types import Suppression

if TYPE_CHECKING:
    from dripline.store.report_types import NewWebhookError
    from dripline.store.webhook_types import (
        ConversationChange,
        InboxRow,
        NewInbound,
        PhoneConversations,
        Refusal,
        StatusResult,
        StatusUpdate,
    )

__all__ = ["WebhookTx"]


class WebhookTx(ABC):
    """One webhook-processing transaction (see `Store.webhook_transaction`)."""

    # the inbox -------------------------------------------------------------
    @abstractmethod
    async def take_inbox(self, limit: int, after_id: int = 0) -> list[InboxRow]:
        """Up to `limit` unprocessed rows with id > `after_id`, oldest first (PostgreSQL:
        rows another processor holds are skipped)."""

    @abstractmethod
    async def finish_inbox(
        self,
        done: Sequence[tuple[int, str | None]],
        waiting: Sequence[tuple[int, str]],
        now: datetime,
    ) -> None:
        """Mark rows processed (with an error for malformed ones); note why `waiting`
        rows stay unprocessed (they are retried on a later pass)."""

    # statuses --------------------------------------------------------------
    @abstractmethod
    async def apply_statuses(self, updates: Sequence[StatusUpdate], now: datetime) -> StatusResult:
        """Move message rows forwards (`STATUS_RANK`); never backwards, repeats change
        nothing. The furthest status per row in the batch wins.

        A status finds its row by wamid, else by the callback id (a send whose response
        was lost has no wamid yet); a callback id only matches a row without a wamid or
        with the same one, so a stray id cannot touch another message. Rows another
        transaction holds are left alone and their wamids reported `busy`. `matched`
        names each matched row's conversation and its `wa_id`, held or not.
        """

    @abstractmethod
    async def refusals(self, updates: Sequence[StatusUpdate], now: datetime) -> list[Refusal]:
        """The `failed` updates that will move their message (found as `apply_statuses`
        finds it, and not yet failed, delivered or read), each with the message's key and
        its conversation; call it before `apply_statuses`. A conversation with a live
        lease (or, on PostgreSQL, one another transaction holds) is `busy`; the others
        are locked until commit. Other statuses are ignored."""

    @abstractmethod
    async def sends_in_flight(self) -> bool:
        """True when some message has no wamid yet and is `sending` (reserved, its result
        not yet written) or `unknown` (its answer was lost; a `sent` status carrying its
        callback id may still bring the wamid). A `failed` status that matches nothing
        (it carries no callback id) may be for one of them."""

    @abstractmethod
    async def requeue_messages(self, ids: Sequence[int], now: datetime) -> int:
        """Make `failed` message rows `pending` again: a refused send to retry under its
        own key. The error code and title stay (what happened last); the wamid, sent
        time and first-webhook time go, since they were the refused attempt's (the next
        attempt's statuses must match by its callback id). Returns the rows changed."""

    @abstractmethod
    async def learn_wa_ids(self, wa_ids: Mapping[int, str]) -> set[int]:
        """Record each conversation's WhatsApp ID (conversation id -> digits) where none
        is known yet; a known one is never overwritten, and nothing else changes (not
        `updated_at`: learning who the user is moves nothing). For a status whose send's
        answer was lost, the only other source of the ID (`StatusResult.matched` says
        which conversations; `dripline.inbox.recipients` decides). Returns the ids of
        conversations another transaction holds (PostgreSQL, skipped: retry later)."""

    # inbound messages ------------------------------------------------------
    @abstractmethod
    async def existing_inbound(self, wamids: Sequence[str]) -> set[str]:
        """The wamids already recorded (a redelivery): they change nothing again."""

    @abstractmethod
    async def conversations_for(
        self, phones: Sequence[str], now: datetime
    ) -> dict[str, PhoneConversations]:
        """Each sender's conversations (every phone asked for, the E.164 of an inbound
        `from`, is a key): the active ones in id order, `busy` when one has a live lease
        (`lease_expires_at > now`) or another transaction holds it, and the newest
        conversation id of any state.

        A conversation is the sender's when its `wa_id` (learned from a send response) is
        the sender's ID, when its phone is the sender's number, or, while its `wa_id` is
        unknown, when its phone is one of that number's variants (Brazil's ninth digit,
        Mexico's 521, Argentina's 549: `dripline.phones.is_same_user`)."""

    @abstractmethod
    async def replied_to(self, wamids: Sequence[str]) -> dict[str, int]:
        """The conversation each of these message ids (our sends' wamids, as an inbound
        message's `context.id` quotes them) belongs to; unknown ones are absent."""

    @abstractmethod
    async def add_suppressions(self, rows: Sequence[Suppression]) -> int:
        """Record numbers that opted out (a STOP; the inbox's failed-status path for
        131050, "user stopped marketing messages"), in this transaction. A number already
        suppressed for that business number keeps its first row. Returns rows added.
        `Store.enroll` then refuses these numbers unless the item states `opt_in`."""

    @abstractmethod
    async def sent_steps(self, keys: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
        """The (conversation, step) pairs whose question (or its fallback) went out:
        a message row for it is `sent`, `delivered` or `read`."""

    @abstractmethod
    async def insert_inbound(self, rows: Sequence[NewInbound]) -> set[str]:
        """Insert messages not seen before (by wamid); returns the wamids inserted."""

    @abstractmethod
    async def update_conversations(
        self, changes: Sequence[ConversationChange], now: datetime
    ) -> int:
        """Write conversation changes (rows `conversations_for` returned, none busy);
        returns rows written. Sleeping dispatchers are woken after commit when a change
        makes a step due."""

    # value-level errors ----------------------------------------------------
    @abstractmethod
    async def record_webhook_errors(self, rows: Sequence[NewWebhookError], now: datetime) -> None:
        """Keep value-level webhook errors (`value.errors[]`) with `now` as their time,
        for `dripline status` and metrics (`Store.webhook_errors`)."""
