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
on_answer(conv, answer, now) (answer: `answers.interpret` of the reply):
  valid             -> in_progress at its `next` step (branches.py; default: s+1),
                       question, at now + that step's after (quiet hours); completed
                       after the last step or at `end`
  invalid, k re-asks sent (purpose timeout<k> or reminder/timeout: k=0):
    k < max_reasks  -> in_progress, s, reask<k+1>, at now
    otherwise       -> on_invalid: continue (the default way on), end (completed with a
                       note) or wait (None: nothing changes)
  a re-ask already due (purpose reask<k>) -> None
after_send(conv, reask<k>, sent_at) -> awaiting_reply, s, timeout<k>, at sent_at +
  reply_timeout
on_reply(conv, text, now): on_answer with `text` taken as valid whatever it says

Timeouts are not sends, so quiet hours never move them. Silence ends a conversation as
`completed`, not `failed`: `failed` means dripline could not deliver, which an operator
must look into; a user who stops answering is an ordinary outcome (the note says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from dripline.errors import FlowError
from dripline.flows.answers import Answer, Reply, interpret
from dripline.flows.base import (
    ChoiceRow,
    ConversationLike,
    InteractiveMessage,
    OutboundMessage,
    Question,
    TemplateButton,
    TemplateHeader,
    TemplateMessage,
    TextMessage,
    Transition,
)
from dripline.flows.branches import END, default_target, step_ids, target_for
from dripline.flows.durations import format_duration
from dripline.flows.model import FlowSpec, MessageSpec, QuietHours, StepSpec, TemplateSpec
from dripline.flows.params import sanitize
from dripline.flows.placeholders import compiled, render, render_parts
from dripline.flows.purposes import is_reask, reask, reasks_sent, timeout_after
from dripline.flows.questions import default_reask, question_options, uses_buttons
from dripline.flows.quiet import quiet_window_end, recipient_zone

__all__ = ["ACTIVE", "YamlFlow"]

ACTIVE = ("pending", "in_progress", "awaiting_reply")


class YamlFlow:
    """One flow file, ready to answer the dispatcher's and the webhook's questions."""

    def __init__(self, spec: FlowSpec, source: str = "<memory>") -> None:
        self.spec = spec
        self.name = spec.name
        self.source = source
        self._ids = step_ids(spec.steps)
        self._questions = tuple(
            Question(
                index=index,
                id=step.id or f"q{index + 1}",
                title=step.title or step.describe(),
                expects_reply=step.wait_for_reply,
                kind=step.kind,
                options=tuple(o.id for o in question_options(step)),
                number_range=(step.min, step.max)
                if step.kind == "number" and step.min is not None and step.max is not None
                else None,
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
            return self._render(step, conv, where, step.text)
        if purpose == "reminder":
            if step.reminder is None:
                raise FlowError("this step has no reminder", where=where)
            return self._render(step.reminder, conv, f"{where}.reminder")
        if is_reask(purpose):
            # The re-ask repeats the buttons or list, with the re-ask as its body.
            return self._render(step, conv, f"{where}.reask", step.reask or default_reask(step))
        if purpose == "fallback":
            template = self._fallback(step)
            if template is None:
                raise FlowError("this step has no fallback template", where=where)
            # Quick replies only in the step's own template: the flow's is shared by
            # steps with other options (or none), so it cannot carry theirs.
            own = step if step.fallback is not None else None
            return self._template(template, conv, f"{where}.fallback", own)
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
        if is_reask(purpose) and step.reply_timeout is not None:
            # After a re-ask the user gets the whole reply_timeout again (no reminder).
            waiting = timeout_after(reasks_sent(purpose) + 1)
            return Transition("awaiting_reply", index, waiting, sent_at + step.reply_timeout)
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
        answer = self.answer(conv, Reply(text))
        if not answer.valid:
            # Taken as an answer whatever it says (what any reply did before typed
            # answers): the step's default way on. The inbox uses on_answer instead.
            answer = Answer("text", True, text=text)
        transition = self.on_answer(conv, answer, now)
        assert transition is not None  # a valid answer always moves the conversation
        return transition

    def answer(self, conv: ConversationLike, reply: Reply) -> Answer:
        """`reply` read as an answer to conv.step (`answers.interpret`)."""
        _, step = self._step(conv)
        return interpret(step, reply)

    def on_answer(self, conv: ConversationLike, answer: Answer, now: datetime) -> Transition | None:
        """A valid answer: the step its branch names. An invalid one: the next re-ask,
        or after `max_reasks` the step's `on_invalid`. None: nothing changes (a re-ask
        is already due, or `on_invalid: wait`)."""
        _aware(now)
        if conv.state not in ACTIVE:
            raise FlowError(
                f"conversation {conv.id} is {conv.state}; a reply does not move it",
                where=f"flow {self.name}",
            )
        index, step = self._step(conv)
        if answer.valid:
            target = target_for(self.spec.steps, index, answer.option, answer.number)
            return self._goto(conv, index, target, now)
        if is_reask(conv.purpose):
            return None  # the re-ask this answer would earn is already due
        done = reasks_sent(conv.purpose)
        if done < step.max_reasks:
            return Transition("in_progress", index, reask(done + 1), now)
        if step.on_invalid == "continue":
            return self._advance(conv, index, now)
        if step.on_invalid == "end":
            return Transition(
                "completed",
                index,
                conv.purpose,
                None,
                note=f"no valid answer to step {index + 1} ({self._ids[index]}) "
                f"after {done} re-ask(s)",
            )
        return None

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
        """The step's default way on: its `next` (or `default`), else the next step."""
        return self._goto(conv, index, default_target(self.spec.steps, index), at)

    def _goto(self, conv: ConversationLike, index: int, target: str, at: datetime) -> Transition:
        if target == END:
            return Transition("completed", index, "question", None)
        following = self._ids.index(target)
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

    def _render(
        self, spec: MessageSpec, conv: ConversationLike, where: str, text: str | None = None
    ) -> OutboundMessage:
        """`spec`'s template, else `text` (default: spec.text), as buttons or a list
        when `spec` is a step with options."""
        if spec.template is not None:
            step = spec if isinstance(spec, StepSpec) else None
            return self._template(spec.template, conv, f"{where}.template", step)
        text = text if text is not None else spec.text
        assert text is not None  # validated: exactly one of text and template
        body = self._fill(text, conv, f"{where}.text")
        options = question_options(spec) if isinstance(spec, StepSpec) else ()
        if not options:
            return TextMessage(body)
        assert isinstance(spec, StepSpec)
        return InteractiveMessage(
            body=body,
            options=tuple(ChoiceRow(o.id, o.title, o.description) for o in options),
            style="button" if uses_buttons(spec) else "list",
            list_button=spec.list_button,
        )

    def _template(
        self,
        spec: TemplateSpec,
        conv: ConversationLike,
        where: str,
        step: StepSpec | None = None,
    ) -> TemplateMessage:
        """The template with its parameters; for a choice `step` whose template sets no
        buttons, one quick-reply button per option with the option id as its payload
        (the template must have them, in the options' order), so a tap is an answer."""

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
        # Lists, not generators, and nothing built for what the template lacks: the
        # dispatcher renders a template for every send outside the 24-hour window.
        body_params = (
            tuple([text(p, f"{where}.body_params[{i}]") for i, p in enumerate(spec.body_params)])
            if spec.body_params
            else ()
        )
        named = (
            tuple([(k, text(p, f"{where}.named_params.{k}")) for k, p in spec.named_params.items()])
            if spec.named_params
            else ()
        )
        buttons = (
            tuple(
                [
                    TemplateButton(
                        b.index,
                        b.sub_type,
                        text(b.value, f"{where}.buttons[{i}]")
                        if b.url_suffix is not None
                        else self._fill(b.value, conv, f"{where}.buttons[{i}]"),
                    )
                    for i, b in enumerate(spec.buttons)
                ]
            )
            if spec.buttons
            else ()
        )
        if not buttons and step is not None:
            options = question_options(step)
            buttons = tuple([TemplateButton(i, "quick_reply", o.id) for i, o in enumerate(options)])
        return TemplateMessage(
            name=spec.name,
            language=spec.language,
            body_params=body_params,
            named_body_params=named,
            header=header,
            buttons=buttons,
        )

    def _value(self, conv: ConversationLike, key: str) -> Any:
        """`self._values(conv).get(key)` without building the mapping: the dispatcher
        fills one or two placeholders per send."""
        if key == "phone":
            return conv.phone
        if key == "name" and conv.name:
            return conv.name
        fields = conv.fields
        if fields:
            value = fields.get(key)
            if value is not None:
                return value
        return self.spec.defaults.get(key)

    def _fill(self, text: str, conv: ConversationLike, where: str) -> str:
        parts = compiled(text)
        try:
            if parts is None:  # a stray brace: `render` says so
                return render(text, self._values(conv))
            return render_parts(parts, lambda key: self._value(conv, key))
        except KeyError as exc:
            values = self._values(conv)
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
