"""A flow built from a validated flow file: the transitions the dispatcher and webhook use.

Transition rules (docs/flows.md has the same, for operators):

after_send(conv, purpose, sent_at), step s = conv.step:
  question (or fallback replacing it):
    step s waits for a reply, with a reminder -> awaiting_reply, s, reminder,
        at sent_at + reminder.after (quiet hours applied)
    step s waits for a reply, no reminder     -> awaiting_reply, s, timeout,
        at sent_at + reply_timeout
    step s does not wait, s is not the last   -> in_progress, s+1, question,
        at sent_at + steps[s+1].after (quiet hours of step s+1 applied)
    step s does not wait, s is the last       -> completed, next_send_at None
  reminder (or fallback replacing it)         -> awaiting_reply, s, timeout,
        at sent_at + (reply_timeout - reminder.after)
    i.e. reply_timeout counts from the question when the reminder goes on time, and a
    reminder held back (quiet hours, throttling) never shortens the time left after it.
on_timeout(conv, now):
  on_timeout: end      -> completed, note "no reply to step N (id) within <reply_timeout>"
  on_timeout: continue -> as on_reply at `now`
on_reply(conv, text, now):
  s is not the last -> in_progress, s+1, question, at now + steps[s+1].after (quiet hours)
  s is the last     -> completed

Timeouts are not sends, so quiet hours never move them. Silence ends a conversation as
`completed`, not `failed`: `failed` means dripline could not deliver, which an operator
must look into; a user who stops answering is an ordinary outcome (the note says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from dripline.errors import FlowError
from dripline.flows.base import (
    ConversationLike,
    OutboundMessage,
    Question,
    TemplateButton,
    TemplateHeader,
    TemplateMessage,
    TextMessage,
    Transition,
)
from dripline.flows.durations import format_duration
from dripline.flows.model import FlowSpec, MessageSpec, QuietHours, StepSpec, TemplateSpec
from dripline.flows.params import sanitize
from dripline.flows.placeholders import render
from dripline.flows.quiet import quiet_window_end, recipient_zone

__all__ = ["ACTIVE", "YamlFlow"]

ACTIVE = ("pending", "in_progress", "awaiting_reply")


class YamlFlow:
    """One flow file, ready to answer the dispatcher's and the webhook's questions."""

    def __init__(self, spec: FlowSpec, source: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.source = source
        self._questions = tuple(
            Question(
                index=index,
                id=step.id or f"q{index + 1}",
                title=step.title or step.describe(),
                expects_reply=step.wait_for_reply,
            )
            for index, step in enumerate(spec.steps)
        )

    def __repr__(self) -> str:
        return f"YamlFlow({self.name!r}, steps={len(self.spec.steps)}, source={self.source!r})"

    # -- what to send ----------------------------------------------------------
    def message(self, conv: ConversationLike, purpose: str) -> OutboundMessage:
        """The message for `purpose` ('question', 'reminder' or 'fallback') at conv.step."""
        index, step = self._step(conv)
        where = f"flow {self.name}: steps[{index}]"
        if purpose == "question":
            return self._render(step, conv, where)
        if purpose == "reminder":
            if step.reminder is None:
                raise FlowError("this step has no reminder", where=where)
            return self._render(step.reminder, conv, f"{where}.reminder")
        if purpose == "fallback":
            template = self._fallback(step)
            if template is None:
                raise FlowError("this step has no fallback template", where=where)
            return self._template(template, conv, f"{where}.fallback")
        raise FlowError(f"nothing to send for purpose {purpose!r}", where=where)

    def has_fallback(self, conv: ConversationLike) -> bool:
        """True when conv.step has a template (its own or the flow's) for a closed window."""
        index = conv.step
        if not 0 <= index < len(self.spec.steps):
            return False
        return self._fallback(self.spec.steps[index]) is not None

    def expects_reply(self, conv: ConversationLike) -> bool:
        """True when conv.step waits for an answer (the webhook advances only those)."""
        _, step = self._step(conv)
        return step.wait_for_reply

    def questions(self) -> Sequence[Question]:
        """Every step in order, for the answers export."""
        return self._questions

    @property
    def read_receipts(self) -> bool:
        """The flow's `read_receipts`: mark each answer as read (blue ticks)."""
        return self.spec.read_receipts

    # -- what happens next -----------------------------------------------------
    def after_send(self, conv: ConversationLike, purpose: str, sent_at: datetime) -> Transition:
        """Where the conversation goes once `purpose` was accepted by the API."""
        index, step = self._step(conv)
        _aware(sent_at)
        if purpose == "fallback":
            # The fallback stands in for whichever send the closed window refused.
            purpose = "reminder" if conv.purpose == "reminder" else "question"
        if purpose == "question":
            if not step.wait_for_reply:
                return self._advance(conv, index, sent_at)
            assert step.reply_timeout is not None  # validated: wait_for_reply needs one
            if step.reminder is not None:
                due = sent_at + step.reminder.after
                return Transition(
                    "awaiting_reply", index, "reminder", self._after_quiet(conv, step, due)
                )
            return Transition("awaiting_reply", index, "timeout", sent_at + step.reply_timeout)
        if purpose == "reminder":
            if step.reminder is None or step.reply_timeout is None:
                raise FlowError(
                    "a reminder was sent but this step has none",
                    where=f"flow {self.name}: steps[{index}]",
                )
            left = step.reply_timeout - step.reminder.after
            return Transition("awaiting_reply", index, "timeout", sent_at + left)
        raise FlowError(
            f"nothing is sent for purpose {purpose!r}", where=f"flow {self.name}: steps[{index}]"
        )

    def on_timeout(self, conv: ConversationLike, now: datetime) -> Transition:
        """The user did not reply in time: end (completed, with a note) or continue."""
        index, step = self._step(conv)
        _aware(now)
        if step.on_timeout == "continue":
            return self._advance(conv, index, now)
        waited = format_duration(step.reply_timeout) if step.reply_timeout else "the time allowed"
        step_id = self._questions[index].id
        return Transition(
            "completed",
            index,
            conv.purpose,
            None,
            note=f"no reply to step {index + 1} ({step_id}) within {waited}",
        )

    def on_reply(self, conv: ConversationLike, text: str, now: datetime) -> Transition:
        """An answer to conv.step arrived at `now`: the next step, or completed."""
        _aware(now)
        if conv.state not in ACTIVE:
            raise FlowError(
                f"conversation {conv.id} is {conv.state}; a reply does not move it",
                where=f"flow {self.name}",
            )
        index, _ = self._step(conv)
        return self._advance(conv, index, now)

    def quiet_until(self, conv: ConversationLike, now: datetime) -> datetime | None:
        """When `now` falls in conv.step's quiet hours for the recipient, the time they end."""
        _aware(now)
        if not 0 <= conv.step < len(self.spec.steps):
            return None
        return self._quiet_end(conv, self.spec.steps[conv.step], now)

    # -- helpers ---------------------------------------------------------------
    def _step(self, conv: ConversationLike) -> tuple[int, StepSpec]:
        index = conv.step
        if not 0 <= index < len(self.spec.steps):
            raise FlowError(
                f"conversation {conv.id} is at step {index}, but the flow has "
                f"{len(self.spec.steps)} steps (was the file changed under it?)",
                where=f"flow {self.name}",
            )
        return index, self.spec.steps[index]

    def _advance(self, conv: ConversationLike, index: int, at: datetime) -> Transition:
        following = index + 1
        if following >= len(self.spec.steps):
            return Transition("completed", index, "question", None)
        step = self.spec.steps[following]
        due = self._after_quiet(conv, step, at + step.after)
        return Transition("in_progress", following, "question", due)

    def _after_quiet(self, conv: ConversationLike, step: StepSpec, due: datetime) -> datetime:
        return self._quiet_end(conv, step, due) or due

    def _quiet_end(self, conv: ConversationLike, step: StepSpec, at: datetime) -> datetime | None:
        hours = self._quiet_hours(step)
        if hours is None or hours.is_off:
            return None
        zone = recipient_zone(conv.timezone, conv.phone)
        return quiet_window_end(at, hours.start, hours.end, zone)

    def _quiet_hours(self, step: StepSpec) -> QuietHours | None:
        return step.quiet_hours if step.quiet_hours is not None else self.spec.quiet_hours

    def _fallback(self, step: StepSpec) -> TemplateSpec | None:
        return step.fallback if step.fallback is not None else self.spec.fallback

    def _values(self, conv: ConversationLike) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.spec.defaults)
        fields: Mapping[str, Any] = conv.fields or {}
        values.update({k: v for k, v in fields.items() if v is not None})
        if conv.name:
            values["name"] = conv.name
        values["phone"] = conv.phone
        return values

    def _render(self, spec: MessageSpec, conv: ConversationLike, where: str) -> OutboundMessage:
        if spec.template is not None:
            return self._template(spec.template, conv, f"{where}.template")
        assert spec.text is not None  # validated: exactly one of text and template
        return TextMessage(self._fill(spec.text, conv, f"{where}.text"))

    def _template(self, spec: TemplateSpec, conv: ConversationLike, where: str) -> TemplateMessage:
        # Text parameters are cleaned of what Meta refuses (132018); enrollment rejects
        # such values first, this only catches older enrollments and defaults.
        def text(param: str, at: str) -> str:
            return sanitize(self._fill(param, conv, at))

        header = None
        if spec.header is not None:
            h = spec.header
            value = self._fill(h.value, conv, f"{where}.header.{h.kind}")
            header = TemplateHeader(
                kind=h.kind,
                value=sanitize(value) if h.kind == "text" else value,
                parameter_name=h.parameter_name,
                filename=h.filename,
            )
        return TemplateMessage(
            name=spec.name,
            language=spec.language,
            body_params=tuple(
                text(p, f"{where}.body_params[{i}]") for i, p in enumerate(spec.body_params)
            ),
            named_body_params=tuple(
                (k, text(p, f"{where}.named_params.{k}")) for k, p in spec.named_params.items()
            ),
            header=header,
            buttons=tuple(
                TemplateButton(
                    b.index,
                    b.sub_type,
                    text(b.value, f"{where}.buttons[{i}]")
                    if b.url_suffix is not None
                    else self._fill(b.value, conv, f"{where}.buttons[{i}]"),
                )
                for i, b in enumerate(spec.buttons)
            ),
        )

    def _fill(self, text: str, conv: ConversationLike, where: str) -> str:
        values = self._values(conv)
        try:
            return render(text, values)
        except KeyError as exc:
            key = exc.args[0]
            known = ", ".join(sorted(k for k, v in values.items() if v not in (None, "")))
            raise FlowError(
                f"placeholder {{{key}}} has no value for conversation {conv.id} "
                f"(has: {known}); enroll with fields.{key} or add it to the flow's defaults",
                where=where,
            ) from None


def _aware(value: datetime) -> None:
    # Naive datetimes would compare wrongly with the store's aware UTC values.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r}; pass aware UTC datetimes")
