"""Prometheus metrics of this process (prometheus-client's default registry).

Work metrics (render seconds, frames per second, re-sends, lease expiries, completion
retries, failures by code) are counted where the work happens: in a worker process they are
served by ``velocity worker`` on ``VELOCITY_METRICS_PORT``; in the embedded mode by the API's
``GET /metrics``, which also reports the state of the whole service read from the database
and broker at scrape time (``api.routers.metrics``).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RENDER_SECONDS = Histogram(
    "velocity_render_seconds",
    "Wall time of successful render attempts (whole renders, chunks and joins)",
    ["kind"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
RENDER_FPS = Histogram(
    "velocity_render_frames_per_second",
    "Output frames per second of successful render attempts",
    ["kind"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 240, 480),
)
RESENDS = Counter(
    "velocity_resends_total", "Pending jobs re-sent because their message was lost", ["kind"]
)
LEASE_EXPIRIES = Counter(
    "velocity_lease_expiries_total", "Render and chunk leases found expired by the sweeper"
)
PENDING_TIMEOUTS = Counter(
    "velocity_pending_timeouts_total", "Renders failed for waiting longer than max_pending_s"
)
COMPLETION_RETRIES = Counter(
    "velocity_completion_retries_total",
    "Completions of finished renders retried because the database was unavailable",
)
FAILURES = Counter(
    "velocity_render_failures_total", "Render attempts that ended failed, by code", ["code"]
)

__all__ = [
    "COMPLETION_RETRIES",
    "FAILURES",
    "LEASE_EXPIRIES",
    "PENDING_TIMEOUTS",
    "RENDER_FPS",
    "RENDER_SECONDS",
    "RESENDS",
]
