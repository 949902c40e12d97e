"""The render feature's dramatiq actors (queue ``renders``): an id in, one job function out.

Each job is idempotent (a claim by compare-and-set, so a re-delivered or duplicated message
is a no-op) and the actors' limits are set on purpose: dramatiq's defaults (20 retries,
back-off up to a week, a 10-minute limit) are wrong for renders. A ``RendererError`` is
already recorded on the render by the attempt, so dramatiq does not retry it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import dramatiq

from jobs.actors import current_settings, current_storage, run_job
from jobs.logs import bind
from jobs.queues import CHUNK_ACTOR, FINALIZE_ACTOR, RENDER_ACTOR, RENDERS_QUEUE, WEBHOOK_ACTOR
from jobs.renders.chunked import chunk_job, finalize_job
from jobs.renders.single import render_job
from jobs.renders.webhook import deliver_webhook
from renderer.errors import RendererError

RENDER_TIME_LIMIT_MS = 6 * 3600 * 1000


def _render_actor(name: str) -> Callable[[Callable[[str], None]], Any]:
    """A ``renders`` queue actor for an attempt (a render, a chunk, a join): retried three
    times with back-off (a worker lost mid-attempt), stopped after six hours."""
    return dramatiq.actor(
        actor_name=name,
        queue_name=RENDERS_QUEUE,
        max_retries=3,
        min_backoff=1000,
        max_backoff=30_000,
        time_limit=RENDER_TIME_LIMIT_MS,
        throws=(RendererError,),
    )


@_render_actor(RENDER_ACTOR)
def render(render_id: str) -> None:
    """Render one video by id. Idempotent: only a pending render is claimed; a finished,
    cancelled or already-claimed render makes this a no-op."""
    settings, storage = current_settings(), current_storage()
    rid = uuid.UUID(render_id)
    with bind(render_id=rid):
        run_job(lambda db: render_job(db, settings, storage, rid))


@_render_actor(CHUNK_ACTOR)
def render_chunk(chunk_id: str) -> None:
    """Render one chunk of a long render by id (video only). Idempotent: only a pending
    chunk of a render still processing is claimed."""
    settings, storage = current_settings(), current_storage()
    cid = uuid.UUID(chunk_id)
    run_job(lambda db: chunk_job(db, settings, storage, cid))


@_render_actor(FINALIZE_ACTOR)
def finalize_render(render_id: str) -> None:
    """Move a chunked render on: join its completed chunks (mixing the audio once and
    muxing), settle a cancel once no chunk runs, or remove the chunk files of a finished
    render. Idempotent: whatever is not ready is left for the next message."""
    settings, storage = current_settings(), current_storage()
    rid = uuid.UUID(render_id)
    run_job(lambda db: finalize_job(db, settings, storage, rid))


@dramatiq.actor(
    actor_name=WEBHOOK_ACTOR,
    queue_name=RENDERS_QUEUE,
    max_retries=8,
    min_backoff=500,
    max_backoff=5 * 60_000,
    time_limit=60_000,
)
def deliver_render_webhook(render_id: str) -> None:
    """POST the signed terminal-state event of a render to its ``webhookUrl``.

    Raises:
        WebhookDeliveryError: non-2xx or unreachable; dramatiq retries with back-off.
    """
    settings = current_settings()
    rid = uuid.UUID(render_id)
    run_job(lambda db: deliver_webhook(db, settings, rid))


__all__ = [
    "RENDER_TIME_LIMIT_MS",
    "deliver_render_webhook",
    "finalize_render",
    "render",
    "render_chunk",
]
