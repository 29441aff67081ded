"""A hook the send path sets for the call it is about to make: called by the transport
with the HTTP status the moment the final answer to that call is in, before the caller
resumes.

Why: a concurrency slot is an HTTP call under way (`dispatcher/slots.py`). Freed only
when the send task ran again, a slot also covered the wait for that task's turn on the
event loop and the client's parsing of the answer: one loop iteration or more per call,
0.3-0.7 ms at 1,000 calls/s on this machine (scenario 11), with the next call's start
one iteration later still. Freed here, the next waiting send is woken in the same
callback that read the answer. The send path frees early only on a 2xx: an error may
open the breaker or pause the number, and no waiting send may start before the
responder has seen it.

A context variable rather than an argument, so every `Sender` (the tests' fakes, the
simulator's) keeps its signature; a transport that never calls the hook (the aiohttp
one, a test's function) leaves the slot to be freed when the call returns, as before.
Set it in the task that makes the call (each send is its own task, so it stays that
send's); the transport reads it when it writes the request.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

__all__ = ["ON_ANSWER"]

ON_ANSWER: ContextVar[Callable[[int], None] | None] = ContextVar("dripline_on_answer", default=None)
