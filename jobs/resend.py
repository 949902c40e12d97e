"""Re-send pending work whose message may be lost, and give up on renders nobody takes.

A message can vanish without its row changing: Redis restarted without persistence, a send
that failed while Redis was down (the row was committed first), or a message dramatiq
dead-lettered after its retries because the database was unreachable when a worker tried
to claim it. Every render and library job records when its message was last sent
(``last_enqueued_at``); the sweeper (``jobs.renders.sweeper.RenderSweeper``, in every
worker and in the embedded mode) calls ``resend_stale`` and sends another message for each
job pending longer than ``resend_after_s`` since then, unless the broker shows its message
still queued. Duplicates are harmless: every actor claims its job with a compare-and-set.

Renders pending longer than ``settings.max_pending_s`` fail with ``pending_timeout`` and
give back what they reserved, so no account is held at its limits for ever.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import sqlalchemy as sa
from dramatiq.common import dq_name

from jobs.db import Database, updated_one
from jobs.messages import enqueue
from jobs.models import Asset, Audio, AudioJob, JobStatus, Template, TemplateJob, utcnow
from jobs.models.render import Render
from jobs.queues import (
    ASSET_ACTOR,
    AUDIO_ACTOR,
    LIBRARY_QUEUE,
    RENDER_ACTOR,
    RENDERS_QUEUE,
    TEMPLATE_ACTOR,
)
from jobs.recovery import back_to_pending
from jobs.renders.lifecycle import finish_unsuccessful
from jobs.settings import Settings

log = logging.getLogger(__name__)

PENDING_TIMEOUT = "pending_timeout"


def queued_ids(broker: dramatiq.Broker, queue: str) -> set[str] | None:
    """The first argument (a job id) of every message of ``queue`` the broker still holds
    (queued, delayed for a retry, or taken by a worker and not yet acknowledged); None when
    the broker cannot tell, in which case every stale job is re-sent.

    Raises:
        Whatever the broker's client raises when it is unreachable.
    """
    client = getattr(broker, "client", None)
    if client is not None:  # RedisBroker: messages live in "<ns>:<queue>.msgs" hashes
        namespace = getattr(broker, "namespace", "dramatiq")
        ids: set[str] = set()
        for name in (queue, dq_name(queue)):
            for raw in client.hvals(f"{namespace}:{name}.msgs"):
                ids.update(_first_arg(raw))
        return ids
    queues = getattr(broker, "queues", None)
    if isinstance(queues, dict):  # StubBroker: encoded messages in queue.Queue objects
        ids = set()
        for name in (queue, dq_name(queue)):
            q = queues.get(name)
            if q is None:
                continue
            with q.mutex:
                raws = list(q.queue)
            for raw in raws:
                ids.update(_first_arg(raw))
        return ids
    return None


def _first_arg(raw: Any) -> list[str]:
    try:
        args = json.loads(raw).get("args") or []
    except (ValueError, AttributeError, TypeError):
        return []
    return [str(args[0])] if args else []


def _stale(column: Any, cutoff: datetime) -> Any:
    return sa.or_(column.is_(None), column < cutoff)


async def expire_pending_renders(db: Database, settings: Settings) -> int:
    """Fail renders pending longer than ``settings.max_pending_s`` (0: never); returns how
    many. Their reservations are released and the webhook queued."""
    if not settings.max_pending_s:
        return 0
    cutoff = utcnow() - timedelta(seconds=settings.max_pending_s)
    async with db.session() as s:
        old = list(
            await s.scalars(
                sa.select(Render).where(
                    Render.status == JobStatus.Pending, Render.created_at < cutoff
                )
            )
        )
    failed = 0
    for render in old:
        async with db.session() as s:
            ok = await finish_unsuccessful(
                s,
                render,
                None,
                JobStatus.Failed,
                reason=(
                    f"No worker started this render within {settings.max_pending_s} s of "
                    "submission (VELOCITY_MAX_PENDING_S); check that workers are running "
                    "and submit it again"
                ),
                code=PENDING_TIMEOUT,
                expected=[JobStatus.Pending],
            )
        if ok:
            failed += 1
            log.warning(
                "render %s failed: pending longer than %ss", render.id, settings.max_pending_s
            )
    return failed


@dataclass(frozen=True)
class _Kind:
    """A kind of pending job: its table, actor and queue; ``parent`` is the library row
    (Template, Audio) that goes back to pending with it, found by ``parent_id``."""

    name: str
    model: Any
    actor: str
    queue: str
    parent: Any = None
    parent_id: str | None = None


_KINDS = (
    _Kind("renders", Render, RENDER_ACTOR, RENDERS_QUEUE),
    _Kind("templates", TemplateJob, TEMPLATE_ACTOR, LIBRARY_QUEUE, Template, "template_id"),
    _Kind("audio", AudioJob, AUDIO_ACTOR, LIBRARY_QUEUE, Audio, "audio_id"),
    _Kind("assets", Asset, ASSET_ACTOR, LIBRARY_QUEUE),
)


async def _stale_rows(db: Database, cutoff: datetime) -> dict[str, list[tuple[Any, Any]]]:
    """(id, parent id or None) of each kind's jobs pending since before ``cutoff``."""
    found: dict[str, list[tuple[Any, Any]]] = {}
    async with db.session() as s:
        for kind in _KINDS:
            parent = getattr(kind.model, kind.parent_id) if kind.parent_id else sa.null()
            rows = await s.execute(
                sa.select(kind.model.id, parent).where(
                    kind.model.status == JobStatus.Pending,
                    _stale(kind.model.last_enqueued_at, cutoff),
                )
            )
            found[kind.name] = [(row[0], row[1]) for row in rows]
    return found


async def resend_stale(
    db: Database, broker: dramatiq.Broker | None, settings: Settings
) -> dict[str, int]:
    """Re-send every render and library job pending for more than
    ``settings.resend_after_s`` since its last send whose message the broker no longer holds;
    returns counts by kind (``renders``, ``templates``, ``audio``, ``assets``)."""
    target = broker or dramatiq.get_broker()
    stale = await _stale_rows(db, utcnow() - timedelta(seconds=settings.resend_after_s))
    counts = {kind.name: 0 for kind in _KINDS}
    if not any(stale.values()):
        return counts
    queued = {k.queue: queued_ids(target, k.queue) for k in _KINDS if stale[k.name]}
    now = utcnow()
    async with db.sessionmaker() as s:
        try:
            for kind in _KINDS:
                for row_id, parent_id in stale[kind.name]:
                    held = queued[kind.queue]
                    if held is not None and str(row_id) in held:
                        continue
                    if await _touch(s, kind.model, row_id, now):
                        if kind.parent is not None:
                            await back_to_pending(s, kind.parent, parent_id)
                        enqueue(s, kind.actor, row_id)
                        counts[kind.name] += 1
            await s.commit()
        except BaseException:
            await s.rollback()
            raise
        finally:
            from jobs.messages import send_outbox

            send_outbox(s, target)
    if any(counts.values()):
        log.warning("re-sent pending jobs whose message was lost: %s", counts)
    return counts


async def _touch(session: Any, model: Any, row_id: Any, now: datetime) -> bool:
    """Record a re-send of a still-pending row; False when it is no longer pending."""
    result = await session.execute(
        sa.update(model)
        .where(model.id == row_id, model.status == JobStatus.Pending)
        .values(last_enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    return updated_one(result)


__all__ = ["PENDING_TIMEOUT", "expire_pending_renders", "queued_ids", "resend_stale"]
