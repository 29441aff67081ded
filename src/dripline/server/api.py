"""The enrollment API under `/v1`: enroll, read, list and cancel conversations.

Every rejected request answers a 4xx with a one-line `detail` naming the field (and, for
a list, its index) and stores nothing: a list is validated whole before the single
enrollment transaction. Enrollment is idempotent on (phone, flow) among active
conversations: enrolling again answers the existing conversation with 200 instead of
201, unchanged (its fields are not updated). A number that opted out (STOP, 131050) is
refused with 409 unless the item says `"opt_in": true` (the person opted in again).
"""

from __future__ import annotations

import asyncio
import json
import zoneinfo
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from dripline.clock import Clock
from dripline.errors import InputError, SuppressedError
from dripline.flows import FlowRegistry, YamlFlow
from dripline.flows.model import MessageSpec, TemplateSpec
from dripline.flows.placeholders import placeholders_in
from dripline.phones import normalize_phone
from dripline.store import (
    CANCELLED,
    CONVERSATION_STATES,
    Conversation,
    Enrollment,
    Inbound,
    Message,
    Store,
)
from dripline.text import unstorable_reason

__all__ = [
    "MAX_BATCH",
    "ConversationDetail",
    "ConversationOut",
    "ConversationPage",
    "EnrollListOut",
    "EnrollOut",
    "EnrollRequest",
    "ErrorOut",
    "build_router",
    "required_fields",
]

MAX_BATCH = 1_000  # conversations per POST: one transaction, answered in well under a second
MAX_ID = 2**63 - 1
STATES = tuple(dict.fromkeys((*CONVERSATION_STATES, CANCELLED)))
State = Literal[
    "pending", "in_progress", "awaiting_reply", "completed", "failed", "opted_out", "cancelled"
]
# How long a cancel waits for a dispatcher to finish the send it holds the lease for.
CANCEL_WAIT_S = 2.0


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL, no encoder a lone surrogate (a later read, page or
    # send would fail on it); refusing them here keeps it a 422, not a 5xx.
    reason = unstorable_reason(value) if value is not None else None
    if reason is not None:
        raise ValueError(reason)
    return value


class EnrollRequest(BaseModel):
    """One conversation to start."""

    model_config = ConfigDict(extra="forbid")

    phone: str = Field(
        min_length=1, max_length=32, description="E.164, '+' optional", examples=["+14155550123"]
    )
    flow: str = Field(min_length=1, max_length=100, examples=["free-trial"])
    name: str | None = Field(None, max_length=200, description="fills {name}")
    timezone: str | None = Field(
        None, max_length=64, description="IANA zone for quiet hours; default from the phone"
    )
    at: AwareDatetime | None = Field(
        None, description="when the first step is due (with a UTC offset); default now"
    )
    fields: dict[str, str] = Field(
        default_factory=dict, max_length=50, description="placeholder values"
    )
    opt_in: bool = Field(
        False,
        description="the person opted in again: lifts an earlier opt-out (STOP, 131050) "
        "of this number instead of refusing it with 409",
    )

    @field_validator("phone", "flow", "name", "timezone")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return _no_nul(value)

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not key.isidentifier() or len(key) > 64:
                raise ValueError(f"field name {key[:64]!r} must be an identifier like first_name")
            if len(item) > 1024:
                raise ValueError(f"field {key} is longer than 1024 characters")
            _no_nul(item)
        return value

    @field_validator("at")
    @classmethod
    def _at(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if not 2000 <= value.year <= 2999:
            raise ValueError("must be between the years 2000 and 2999")
        return value.astimezone(UTC)


class ErrorOut(BaseModel):
    """Every error: one line saying what to fix."""

    detail: str


class ConversationOut(BaseModel):
    """A conversation's current position in its flow."""

    id: int
    phone: str
    flow: str
    name: str | None
    timezone: str | None
    fields: dict[str, Any]
    state: str = Field(description=" | ".join(STATES))
    step: int = Field(description="0-based index of the current step")
    step_id: str | None = Field(description="the step's id (the export's column name)")
    purpose: str = Field(description="the next due action: question, reminder, fallback, timeout")
    next_send_at: datetime | None = Field(description="when the next action is due (UTC)")
    attempts: int
    last_error: str | None
    last_inbound_at: datetime | None
    created_at: datetime
    updated_at: datetime
    wa_id: str | None = Field(
        None,
        description="the user's WhatsApp ID as the Cloud API reported it when a message "
        "was accepted (may differ from phone, e.g. Brazil, Mexico); null before that",
    )


class MessageOut(BaseModel):
    id: int
    step: int
    purpose: str
    status: str = Field(
        description="pending | sending | unknown | sent | delivered | read | failed"
    )
    wamid: str | None
    error_code: int | None
    error_title: str | None
    sent_at: datetime | None
    status_at: datetime | None
    created_at: datetime


class AnswerOut(BaseModel):
    step: int | None = Field(description="the step answered; null when none was waiting")
    question_id: str | None
    kind: str = Field(description="text, button, interactive, image, ... or opt_out")
    text: str | None
    wamid: str
    received_at: datetime


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]
    answers: list[AnswerOut]


class EnrollOut(BaseModel):
    id: int
    created: bool = Field(description="false: an active conversation already existed")
    conversation: ConversationOut


class EnrollListOut(BaseModel):
    results: list[EnrollOut] = Field(description="one per item, in request order")


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


def _message_placeholders(spec: MessageSpec | TemplateSpec | None) -> set[str]:
    names: set[str] = set()
    if spec is None:
        return names
    if isinstance(spec, TemplateSpec):
        for param in spec.body_params:
            names.update(placeholders_in(param))
        return names
    if spec.text is not None:
        names.update(placeholders_in(spec.text))
    names.update(_message_placeholders(spec.template))
    return names


def required_fields(flow: YamlFlow) -> set[str]:
    """Placeholders a conversation must supply: every message's, less the flow's
    non-blank defaults and `phone` (always known)."""
    spec = flow.spec
    names: set[str] = set()
    for step in spec.steps:
        names |= _message_placeholders(step)
        names |= _message_placeholders(step.reminder)
        names |= _message_placeholders(step.fallback or spec.fallback)
    defaults = {k for k, v in spec.defaults.items() if v.strip()}
    return names - defaults - {"phone"}


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def _check(item: EnrollRequest, flows: FlowRegistry, where: str) -> Enrollment:
    """Semantic checks on a shape-valid item; InputError naming the field otherwise."""
    phone = normalize_phone(item.phone, where=f"{where}phone")
    try:
        flow = flows.get(item.flow)
    except InputError as exc:
        raise InputError(str(exc), where=f"{where}flow") from None
    if item.timezone is not None and item.timezone not in _zones():
        raise InputError(
            f"unknown time zone {item.timezone!r} (use an IANA name like Europe/Paris)",
            where=f"{where}timezone",
        )
    if isinstance(flow, YamlFlow):
        have = {k for k, v in item.fields.items() if v.strip()}
        if item.name and item.name.strip():
            have.add("name")
        missing = sorted(required_fields(flow) - have)
        if missing:
            key = missing[0]
            label = "name" if key == "name" else f"fields.{key}"
            raise InputError(
                f"flow {item.flow!r} needs a value for {{{key}}}"
                + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""),
                where=f"{where}{label}",
            )
    return Enrollment(
        phone=phone,
        flow=item.flow,
        at=item.at,
        name=item.name,
        timezone=item.timezone,
        fields=dict(item.fields),
        opt_in=item.opt_in,
    )


def _validation_detail(exc: ValidationError, where: str) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    message = first["msg"]
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}{loc or 'item'}: {message}{suffix}"


def parse_enrollments(raw: bytes, flows: FlowRegistry) -> tuple[list[Enrollment], bool]:
    """The request body as enrollments, and whether it was a list.

    Raises InputError (one line, naming `[index].field` for a list) on the first problem.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise InputError("the body is not valid JSON", where="body") from None
    is_list = isinstance(data, list)
    items = data if is_list else [data]
    if is_list and not items:
        raise InputError("the list is empty", where="body")
    if len(items) > MAX_BATCH:
        raise InputError(f"{len(items)} items; send at most {MAX_BATCH} per request", where="body")
    out: list[Enrollment] = []
    for index, item in enumerate(items):
        where = f"body[{index}]." if is_list else ""
        if not isinstance(item, dict):
            raise InputError(
                "must be a JSON object with phone and flow", where=where.rstrip(".") or "body"
            )
        try:
            request = EnrollRequest.model_validate(item)
        except ValidationError as exc:
            raise InputError(_validation_detail(exc, where)) from None
        out.append(_check(request, flows, where))
    return out, is_list


def _step_id(flows: FlowRegistry, flow_name: str, step: int) -> str | None:
    try:
        questions = flows.get(flow_name).questions()
    except InputError:
        return None
    return questions[step].id if 0 <= step < len(questions) else None


def conversation_out(record: Conversation, flows: FlowRegistry) -> ConversationOut:
    """The API's view of a stored conversation."""
    return ConversationOut(
        id=record.id,
        phone=record.phone,
        flow=record.flow,
        name=record.name,
        timezone=record.timezone,
        fields=dict(record.fields),
        state=record.state,
        step=record.step,
        step_id=_step_id(flows, record.flow, record.step),
        purpose=record.purpose,
        next_send_at=record.next_send_at,
        attempts=record.attempts,
        last_error=record.last_error,
        last_inbound_at=record.last_inbound_at,
        created_at=record.created_at,
        updated_at=record.updated_at,
        wa_id=record.wa_id,
    )


def _message_out(m: Message) -> MessageOut:
    return MessageOut(
        id=m.id,
        step=m.step,
        purpose=m.purpose,
        status=m.status,
        wamid=m.wamid,
        error_code=m.error_code,
        error_title=m.error_title,
        sent_at=m.sent_at,
        status_at=m.status_at,
        created_at=m.created_at,
    )


def _answer_out(a: Inbound, flows: FlowRegistry, flow: str) -> AnswerOut:
    return AnswerOut(
        step=a.step,
        question_id=_step_id(flows, flow, a.step) if a.step is not None else None,
        kind=a.kind,
        text=a.body,
        wamid=a.wamid,
        received_at=a.received_at,
    )


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "missing or wrong API token",
        404: "no such conversation",
        409: "the conversation cannot be cancelled now",
        422: "invalid input; `detail` names the field",
        503: "the database is unavailable; retry",
    }
    return {code: {"model": ErrorOut, "description": described[code]} for code in codes}


def _enroll_body_schema() -> dict[str, Any]:
    one = EnrollRequest.model_json_schema()
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        one,
                        {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_BATCH},
                    ]
                }
            }
        },
    }


def build_router(
    *,
    get_store: Any,
    get_flows: Any,
    clock: Clock,
    auth: Any | None,
) -> APIRouter:
    """The `/v1` router. `get_store`/`get_flows` return the app's store and flows (set
    at startup); `auth` is the token dependency, or None when auth is off."""
    deps = [Depends(auth)] if auth is not None else []
    router = APIRouter(prefix="/v1", tags=["conversations"], dependencies=deps)
    common = (401, 503) if auth is not None else (503,)

    @router.post(
        "/conversations",
        status_code=status.HTTP_201_CREATED,
        response_model=EnrollOut | EnrollListOut,
        responses={
            200: {
                "model": EnrollOut | EnrollListOut,
                "description": "already enrolled: the existing conversation(s), unchanged",
            },
            201: {"description": "created (for a list: at least one was)"},
            **_errors(*common, 422),
            409: {
                "model": ErrorOut,
                "description": "the number opted out (STOP, 131050): nothing is enrolled; "
                'send it again with `"opt_in": true` only if the person opted in again',
            },
        },
        openapi_extra={"requestBody": _enroll_body_schema()},
        summary="Enroll one conversation or a list (all or nothing)",
    )
    async def enroll(request: Request) -> JSONResponse:
        store: Store = get_store()
        flows: FlowRegistry = get_flows()
        raw = await request.body()
        try:
            items, is_list = parse_enrollments(raw, flows)
        except InputError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        now = clock.now()
        try:
            results = await store.enroll(items, now)
        except SuppressedError as exc:
            where = f"body[{exc.index}].phone" if is_list else "phone"
            raise HTTPException(409, detail=str(exc.at(where))) from None
        records = await store.conversations_by_ids([r.id for r in results])
        outs = [
            EnrollOut(
                id=r.id, created=r.created, conversation=conversation_out(records[r.id], flows)
            )
            for r in results
        ]
        created = any(r.created for r in results)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        payload: BaseModel = EnrollListOut(results=outs) if is_list else outs[0]
        return JSONResponse(payload.model_dump(mode="json"), status_code=code)

    @router.get(
        "/conversations/{conversation_id}",
        response_model=ConversationDetail,
        responses=_errors(*common, 404, 422),
        summary="A conversation with its messages (and statuses) and answers",
    )
    async def get_conversation(
        conversation_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    ) -> ConversationDetail:
        store: Store = get_store()
        flows: FlowRegistry = get_flows()
        found = await store.conversation_detail(conversation_id)
        if found is None:
            raise HTTPException(404, detail=f"conversation {conversation_id} does not exist")
        record, history, answers = found
        base = conversation_out(record, flows)
        return ConversationDetail(
            **base.model_dump(),
            messages=[_message_out(m) for m in history],
            answers=[_answer_out(a, flows, record.flow) for a in answers],
        )

    @router.post(
        "/conversations/{conversation_id}/cancel",
        response_model=ConversationOut,
        responses=_errors(*common, 404, 409, 422),
        summary="Stop a conversation: nothing more is sent (idempotent)",
    )
    async def cancel(
        conversation_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    ) -> ConversationOut:
        store: Store = get_store()
        flows: FlowRegistry = get_flows()
        deadline = asyncio.get_running_loop().time() + CANCEL_WAIT_S
        while True:
            outcome = await store.cancel_conversation(conversation_id, clock.now())
            if outcome.result != "busy" or asyncio.get_running_loop().time() >= deadline:
                break
            # A dispatcher is sending to it right now; its lease ends within moments.
            await asyncio.sleep(0.1)
        if outcome.result == "missing" or outcome.record is None:
            raise HTTPException(404, detail=f"conversation {conversation_id} does not exist")
        if outcome.result == "busy":
            raise HTTPException(
                409, detail=f"conversation {conversation_id} is being sent to right now; retry"
            )
        if outcome.result == "final":
            raise HTTPException(
                409,
                detail=f"conversation {conversation_id} is already {outcome.record.state}",
            )
        return conversation_out(outcome.record, flows)

    @router.get(
        "/conversations",
        response_model=ConversationPage,
        responses=_errors(*common, 422),
        summary="List conversations, oldest first, keyset-paged",
    )
    async def list_(
        state: Annotated[State | None, Query(description="only this state")] = None,
        flow: Annotated[str | None, Query(max_length=100, description="only this flow")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[
            str | None,
            Query(max_length=32, pattern=r"^[0-9]{1,18}$", description="from next_cursor"),
        ] = None,
    ) -> ConversationPage:
        store: Store = get_store()
        flows: FlowRegistry = get_flows()
        after = int(cursor) if cursor else 0
        if flow is not None and "\x00" in flow:
            raise HTTPException(422, detail="query.flow: must not contain NUL characters")
        records = await store.list_conversations(
            state=state,
            flow=flow,
            limit=limit + 1,
            after_id=after,
        )
        page = records[:limit]
        more = len(records) > limit
        return ConversationPage(
            items=[conversation_out(r, flows) for r in page],
            next_cursor=str(page[-1].id) if more and page else None,
        )

    return router
