"""The store on SQLAlchemy Core, shared by the SQLite and PostgreSQL backends.

One mixin per query area, all over `SqlCore` (the engine, its transactions and error
translation):

    dispatch.py        claim, reserve, record, leases, next due, worker heartbeats
    evidence.py        what proves an unknown send was never accepted; intake uptime
    conversations.py   enrollment; read, list and cancel conversations; answers export
    webhook.py         the inbox and the webhook-processing transaction
    operator.py        backlog, throughput, lag, errors, live workers, latency samples
    imports.py         conversations moved in from another scheduler, mid-flow
    results.py         a flow's results: funnel, replies, typed answers, time to answer
    health.py          what /readyz reads: schema revision, the inbox's waiting rows
    retention.py       prune old webhook bodies and unanswered texts; forget a person
    webhook_errors.py  value-level webhook errors: the processor's insert, status reads

`SqlStore` combines them; `sqlite.py` and `postgres.py` set the dialect-specific parts.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from dripline.store.base import Store
from dripline.store.sql.conversations import ConversationSql
from dripline.store.sql.core import first_line
from dripline.store.sql.dispatch import DispatchSql
from dripline.store.sql.evidence import EvidenceSql
from dripline.store.sql.health import HealthSql
from dripline.store.sql.imports import ImportSql
from dripline.store.sql.operator import OperatorSql
from dripline.store.sql.results import ResultsSql
from dripline.store.sql.retention import RetentionSql
from dripline.store.sql.webhook import WebhookSql
from dripline.store.sql.webhook_errors import WebhookErrorsSql
from dripline.store.types import LEASE_LOST, NONFINAL_STATUSES

__all__ = ["LEASE_LOST", "NONFINAL_STATUSES", "SqlStore", "first_line"]


class SqlStore(
    DispatchSql,
    EvidenceSql,
    ConversationSql,
    WebhookSql,
    OperatorSql,
    ImportSql,
    ResultsSql,
    HealthSql,
    RetentionSql,
    WebhookErrorsSql,
    Store,
):
    """The `Store` contract on SQL; subclasses set the dialect-specific parts."""

    def __init__(self, engine: AsyncEngine, target: str) -> None:
        super().__init__(engine, target)

    async def lane_revision(self) -> str | None:
        """The schema's revision, read where the dispatcher's own statements go (its lane,
        see `open_store(..., dispatcher=True)`); here through the pool, for a backend
        without one."""
        from dripline.store.migrate import current_revision

        async with self._engine.connect() as conn:
            conn = await conn.execution_options(dripline_read=True)
            return await conn.run_sync(current_revision)
