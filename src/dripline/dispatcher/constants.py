"""The dispatcher's fixed timings and thresholds, in one place.

Operator-facing knobs (rate, concurrency, lease TTL, retries, ...) are settings
(`dripline.settings`); these are the internal constants that tune the loops. The planner
mirrors several of them (`dripline.planner.simulate`), importing them from here.
"""

from __future__ import annotations

__all__ = [
    "CLAIM_HORIZON_MIN_S",
    "CLAIM_HORIZON_S",
    "CONTROLLER_INTERVAL_S",
    "DB_RETRY_BASE_S",
    "DB_RETRY_CAP_S",
    "GROUP_SPAN_S",
    "JOIN_LOOK_S",
    "LATENCY_WINDOW",
    "MAINTENANCE_RETRY_S",
    "MARKETING_RETRY_S",
    "MAX_GROUP",
    "OUTAGE_MIN_S",
    "OUTAGE_PAUSE_BASE_S",
    "OUTAGE_PAUSE_CAP_S",
    "OUTAGE_STREAK",
    "PROGRESS_LOG_S",
    "QUALITY_RETRY_S",
    "RECORD_BATCH_MAX",
    "RECORD_INTERVAL_S",
    "RESERVE_LEAD_S",
    "SHARE_LOOK_S",
    "START_TICK_S",
    "STOP_GRACE_S",
    "THROTTLE_BASE_S",
    "THROTTLE_CAP_S",
    "THROTTLE_MIN_PAUSE_S",
    "UNKNOWN_CODE_BREAKER_STREAK",
]

# How far ahead (seconds of sending at the rate limit) the claimer keeps the queue filled:
# CLAIM_HORIZON_S for a worker alone, that divided by the live workers for one of
# several, never under CLAIM_HORIZON_MIN_S (policies.claim_horizon).
CLAIM_HORIZON_S = 1.0
CLAIM_HORIZON_MIN_S = 0.25
# The launcher reserves a group of sends (one transaction) when the first one's rate
# token is RESERVE_LEAD_S away, taking every send whose token falls due within
# GROUP_SPAN_S after it. A reservation's fixed cost (~2 ms of CPU) is then shared by
# 50 sends at 1,000/s; a crash leaves at most that many reserved-but-unsent rows, which
# recover as `unknown` sends do (see `reconcile`).
RESERVE_LEAD_S = 0.01
GROUP_SPAN_S = 0.05
MAX_GROUP = 256
# A send that waits for its rate token starts at the next multiple of START_TICK_S
# (loop time), with every other send of that tick: one timer and one loop wake-up per
# tick, not per send (ticks.py). At most this much later than its token.
START_TICK_S = 0.005
# Outcomes are written in one transaction every RECORD_INTERVAL_S, or as soon as
# RECORD_BATCH_MAX are waiting.
RECORD_INTERVAL_S = 0.05
RECORD_BATCH_MAX = 256
CONTROLLER_INTERVAL_S = 0.5
# Between heartbeats, a worker with a backlog reads the live workers every SHARE_LOOK_S
# and beats at once when they changed; a joining worker reads them every JOIN_LOOK_S
# until the others have beaten since it came (share.py). Each look is one indexed read
# of the `workers` table (a handful of rows).
SHARE_LOOK_S = 0.1
JOIN_LOOK_S = 0.05
PROGRESS_LOG_S = 10.0
STOP_GRACE_S = 5.0  # how long tasks get to notice a stop before they are cancelled
# A store call that fails transiently is retried after min(cap, base * 2^n), jittered.
DB_RETRY_BASE_S = 0.2
DB_RETRY_CAP_S = 10.0
# Transient failures with no success between them, for at least this many sends and
# this long, mean the API is down, not that the messages are bad: the sender pauses
# and probes, and the failures stop counting against max_attempts. The time condition
# matters: errors come back faster than successes, so a burst's first answers can all
# be failures while the API is fine.
OUTAGE_STREAK = 10
OUTAGE_MIN_S = 0.5
OUTAGE_PAUSE_BASE_S = 0.5
OUTAGE_PAUSE_CAP_S = 5.0
# A throttle (130429) pauses the number: Retry-After when given, else THROTTLE_BASE_S
# doubling per consecutive throttle event, jittered, at most THROTTLE_CAP_S.
THROTTLE_BASE_S = 0.25
THROTTLE_CAP_S = 5.0
THROTTLE_MIN_PAUSE_S = 0.1
# 131049: Meta says retry a per-user marketing limit no sooner than 24 h.
MARKETING_RETRY_S = 24 * 3600.0
# 131048 (spam rate limit) and other quality throttles: not a quick retry.
QUALITY_RETRY_S = 3600.0
# 131057: account maintenance, Meta says up to a minute.
MAINTENANCE_RETRY_S = 60.0
# The same error code that dripline does not know, this many times in a row with no
# success between, stops sending (breaker) with an alert naming the code.
UNKNOWN_CODE_BREAKER_STREAK = 20
# Latency samples kept for the adaptive policy (a ring: memory stays flat).
LATENCY_WINDOW = 2_048
