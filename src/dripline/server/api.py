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
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dripline.clock import Clock
from dripline.errors import InputError, SuppressedError
from dripline.flows import FlowRegistry

# Re-exported: enrollment requests and their checks live in `server.enrollment`.
from dripline.server.enrollment import (
    MAX_BATCH,
    EnrollRequest,
    parse_enrollments,
    required_fields,
)
from dripline.store import (
    CANCELLED,
    CONVERSATION_STATES,
    Conversation,
    Inbound,
    Message,
    Store,
)

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

MAX_ID = 2**63 - 1
STATES = tuple(dict.fromkeys((*CONVERSATION_STATES, CANCELLED)))
State = Literal[
    "pending", "in_progress", "awaiting_reply", "completed", "failed", "opted_out", "cancelled"
]
# How long a cancel waits for a dispatcher to finish the send it holds the lease for.
CANCEL_WAIT_S = 2.0


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
    sender: str | None = Field(
        None, description="the business phone number id it sends from; null: the default"
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
        sender=record.sender,
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
    senders: tuple[str, ...] = (),
) -> APIRouter:
    """The `/v1` router. `get_store`/`get_flows` return the app's store and flows (set
    at startup); `auth` is the token dependency, or None when auth is off; `senders` the
    configured phone number ids, the default first (an enrollment's `sender` must be
    one of them)."""
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
            items, is_list = parse_enrollments(raw, flows, senders)
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
