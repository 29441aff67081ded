"""`GET /v1/flows/{name}/results`: a flow's results per question (`dripline.results`).

The same document as `dripline results FLOW --json`. Behind the API token like the rest
of `/v1`; 404 for a flow the server does not know. Only aggregates: no phone number or
message text.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, Field

from dripline.errors import FlowError
from dripline.flows import FlowRegistry
from dripline.results import flow_results, to_json
from dripline.server.api import ErrorOut
from dripline.store import Store

__all__ = ["FlowResultsOut", "build_results_router"]


class FunnelOut(BaseModel):
    sent: int = Field(description="conversations whose question (or its template) was sent")
    delivered: int = Field(description="... delivered to the phone (status webhook)")
    read: int = Field(description="... read (only when the person shares read receipts)")
    answered: int = Field(description="conversations that answered the question")


class OptionOut(BaseModel):
    id: str = Field(description="the option id (every option the question offers)")
    count: int
    share: float | None = Field(description="of the question's answers, 0..1")


class NumberOut(BaseModel):
    value: float
    count: int


class NpsOut(BaseModel):
    score: float = Field(description="% promoters (9-10) minus % detractors (0-6)")
    promoters: int
    passives: int
    detractors: int
    responses: int


class QuestionResultOut(BaseModel):
    step: int = Field(description="0-based index of the step")
    id: str
    title: str
    kind: str = Field(description="text | choice | yes_no | number")
    expects_reply: bool
    funnel: FunnelOut
    response_rate: float | None = Field(description="answered / sent, 0..1")
    median_answer_s: float | None = Field(description="seconds from the send to the answer")
    replies: int = Field(description="replies read as an answer or not (typed answers)")
    invalid: int = Field(description="replies that did not answer the question")
    invalid_rate: float | None = Field(description="invalid / replies, 0..1")
    options: list[OptionOut]
    numbers: list[NumberOut] = Field(description="how many answered each number")
    number_mean: float | None
    nps: NpsOut | None = Field(description="for a number question from 0 to 10")
    texts: int = Field(description="answers given as free text")


class FlowResultsOut(BaseModel):
    flow: str
    conversations: int
    questions: list[QuestionResultOut]


def build_results_router(*, get_store: Any, get_flows: Any, auth: Any | None) -> APIRouter:
    """The results route under `/v1`, with the same token dependency as the others."""
    deps = [Depends(auth)] if auth is not None else []
    router = APIRouter(prefix="/v1", tags=["results"], dependencies=deps)
    common = (401, 503) if auth is not None else (503,)
    described = {
        401: "missing or wrong API token",
        404: "no such flow",
        422: "invalid input; `detail` names the field",
        503: "the database is unavailable; retry",
    }

    @router.get(
        "/flows/{name}/results",
        response_model=FlowResultsOut,
        responses={
            c: {"model": ErrorOut, "description": described[c]} for c in (*common, 404, 422)
        },
        summary="A flow's results: funnel, answers, NPS, response and invalid rates",
    )
    async def results(
        name: Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_-]*$")],
    ) -> dict[str, Any]:
        store: Store = get_store()
        flows: FlowRegistry = get_flows()
        try:
            flow = flows.get(name)
        except FlowError:
            raise HTTPException(404, detail=f"flow {name!r} does not exist") from None
        return to_json(await flow_results(store, flow))

    return router
