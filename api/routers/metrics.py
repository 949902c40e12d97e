"""``GET /metrics``: Prometheus text format (prometheus-client).

At scrape time the service's state is read from the database and broker: jobs by kind,
queue and state, queue depth, the age of the oldest pending job, failed renders by code. The
process's own counters and histograms follow: HTTP latency by route here, and in the
embedded mode the work metrics of ``jobs.metrics`` (a ``velocity worker`` serves those on
``VELOCITY_METRICS_PORT``). Unauthenticated like ``/health``: restrict it at the proxy.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, Histogram, generate_latest

from jobs.broker import queue_depth
from jobs.queues import ALL_QUEUES
from jobs.store import job_stats

router = APIRouter(tags=["health"])

JOBS = Gauge("velocity_jobs", "Jobs by kind, queue and state", ["kind", "queue", "state"])
QUEUE_DEPTH = Gauge("velocity_queue_depth", "Messages held by the broker per queue", ["queue"])
OLDEST_PENDING = Gauge(
    "velocity_oldest_pending_seconds", "Age of the oldest pending job per kind", ["kind"]
)
FAILED = Gauge("velocity_renders_failed", "Failed renders by failure code (stored)", ["code"])
STORAGE_FREE = Gauge("velocity_storage_free_bytes", "Free bytes on the storage filesystem")
STORAGE_FLOOR = Gauge(
    "velocity_storage_floor_bytes", "VELOCITY_MIN_FREE_MB: below it renders are refused"
)
UP = Gauge("velocity_dependency_up", "1 when the dependency answered this scrape", ["dependency"])
HTTP_SECONDS = Histogram(
    "velocity_http_request_seconds",
    "HTTP request latency by method and route",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


async def _from_database(db: Any) -> bool:
    try:
        async with db.session() as s:
            counts = await job_stats.job_counts(s)
            ages = await job_stats.oldest_pending_seconds(s)
            failed = await job_stats.failures_by_code(s)
    except Exception:
        return False
    JOBS.clear()
    for kind, queue, state, n in counts:
        JOBS.labels(kind, queue, state).set(n)
    for kind, age in ages.items():
        OLDEST_PENDING.labels(kind).set(age)
    FAILED.clear()
    for code, n in failed.items():
        FAILED.labels(code).set(n)
    return True


def _from_broker(broker: Any) -> bool:
    try:
        for queue in ALL_QUEUES:
            depth = queue_depth(broker, queue)
            if depth is not None:
                QUEUE_DEPTH.labels(queue).set(depth)
    except Exception:
        return False
    return True


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """The Prometheus exposition of this service."""
    service = request.app.state.service
    UP.labels("database").set(1 if await _from_database(service.db) else 0)
    broker_up = await anyio.to_thread.run_sync(_from_broker, service.broker)
    UP.labels("broker").set(1 if broker_up else 0)
    try:
        STORAGE_FREE.set(await anyio.to_thread.run_sync(service.storage.free_bytes))
    except OSError:
        STORAGE_FREE.set(0)
    STORAGE_FLOOR.set(service.settings.min_free_mb * 1024 * 1024)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


class HttpMetrics:
    """ASGI middleware timing each request by method and route template (never the raw
    path, whose ids would explode the label set)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_SECONDS.labels(scope.get("method", "GET"), route).observe(
                time.perf_counter() - start
            )
