"""Recovery of renders and chunks whose worker died (expired leases) or whose message may
be lost (start-up and stalled chunked renders)."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from jobs.db import updated_one
from jobs.messages import enqueue
from jobs.models.base import JobStatus, utcnow
from jobs.models.render import Render, RenderChunk
from jobs.queues import CHUNK_ACTOR, FINALIZE_ACTOR, RENDER_ACTOR
from jobs.renders.base import (
    CHUNKED,
    MAX_ATTEMPTS,
    RUNNING,
)
from jobs.renders.chunks import end_chunk, lock_render, sync_progress
from jobs.renders.lifecycle import finish_unsuccessful


async def expired_leases(session: AsyncSession, now: datetime | None = None) -> list[Render]:
    """Processing or cancelling renders whose worker stopped renewing its lease."""
    now = now or utcnow()
    rows = await session.scalars(
        sa.select(Render).where(
            Render.status.in_(RUNNING),
            Render.lease_expires_at.is_not(None),
            Render.lease_expires_at < now,
        )
    )
    return list(rows)


async def pending_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Every pending render (oldest first), for re-enqueueing at start-up."""
    rows = await session.scalars(
        sa.select(Render.id).where(Render.status == JobStatus.Pending).order_by(Render.created_at)
    )
    return list(rows)


async def requeue_expired(session: AsyncSession, render: Render) -> JobStatus | None:
    """Put a render whose lease expired back to pending (or fail it after ``MAX_ATTEMPTS``;
    a lost cancelling render becomes cancelled). Returns the new status, None if it changed
    meanwhile."""
    lease_owner = render.lease_owner
    expired = [Render.lease_expires_at < utcnow()]
    if render.status == JobStatus.Cancelling:
        ok = await finish_unsuccessful(
            session,
            render,
            lease_owner,
            JobStatus.Cancelled,
            reason="Cancelled",
            code=None,
            expected=[JobStatus.Cancelling],
        )
        return JobStatus.Cancelled if ok else None
    if render.attempts >= MAX_ATTEMPTS:
        ok = await finish_unsuccessful(
            session,
            render,
            lease_owner,
            JobStatus.Failed,
            reason=f"The worker rendering this stopped responding {render.attempts} times",
            code="worker_lost",
            expected=[JobStatus.Processing],
        )
        return JobStatus.Failed if ok else None
    stmt = (
        sa.update(Render)
        .where(
            Render.id == render.id,
            Render.status == JobStatus.Processing,
            Render.lease_owner == lease_owner,
            *expired,
        )
        .values(
            status=JobStatus.Pending,
            lease_owner=None,
            lease_expires_at=None,
            progress=0,
            frames_done=0,
            last_enqueued_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    if not updated_one(result):
        return None
    enqueue(session, RENDER_ACTOR, render.id)
    return JobStatus.Pending


async def expired_chunks(session: AsyncSession, now: datetime | None = None) -> list[RenderChunk]:
    """Processing chunks whose worker stopped renewing the lease."""
    now = now or utcnow()
    rows = list(
        await session.scalars(
            sa.select(RenderChunk).where(
                RenderChunk.status == JobStatus.Processing,
                RenderChunk.lease_expires_at.is_not(None),
                RenderChunk.lease_expires_at < now,
            )
        )
    )
    for row in rows:
        session.expunge(row)
    return rows


async def requeue_expired_chunk(session: AsyncSession, chunk: RenderChunk) -> JobStatus | None:
    """A chunk whose worker died goes back to pending (its render still processing), fails
    its render after ``MAX_ATTEMPTS``, or is cancelled when its render stopped. Returns the
    chunk's new status, None if it changed meanwhile."""
    status = await session.scalar(sa.select(Render.status).where(Render.id == chunk.render_id))
    if status != JobStatus.Processing:
        ok = await end_chunk(
            session, chunk, chunk.lease_owner, JobStatus.Cancelled, reason="Cancelled"
        )
        return JobStatus.Cancelled if ok else None
    if chunk.attempts >= MAX_ATTEMPTS:
        reason = (
            f"The worker rendering chunk {chunk.index} (frames {chunk.f_start}-{chunk.f_end}) "
            f"stopped responding {chunk.attempts} times"
        )
        ok = await end_chunk(
            session, chunk, chunk.lease_owner, JobStatus.Failed, reason=reason, code="worker_lost"
        )
        return JobStatus.Failed if ok else None
    await lock_render(session, chunk.render_id)
    result = await session.execute(
        sa.update(RenderChunk)
        .where(
            RenderChunk.id == chunk.id,
            RenderChunk.status == JobStatus.Processing,
            RenderChunk.lease_owner == chunk.lease_owner,
            RenderChunk.lease_expires_at < utcnow(),
        )
        .values(
            status=JobStatus.Pending,
            lease_owner=None,
            lease_expires_at=None,
            frames_done=0,
            queued_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if not updated_one(result):
        return None
    await sync_progress(session, chunk.render_id)
    enqueue(session, CHUNK_ACTOR, chunk.id)
    return JobStatus.Pending


async def requeue_stranded_chunks(
    session: AsyncSession, *, all_pending: bool, stall_seconds: float
) -> tuple[int, int]:
    """Queue again the chunk work whose message may be lost or stuck; returns (chunk
    messages, finalize messages) queued in the session's outbox.

    With ``all_pending`` (start-up) every pending chunk of a render out in chunks is queued.
    Otherwise only stalled renders are helped: no chunk running and the first pending chunk
    queued more than ``stall_seconds`` ago (a dead worker may hold its prefetched message
    until the broker notices, minutes later) gets one more message, so duplicates stay few.
    Renders out in chunks with none running or pending get a finalize message.
    """
    now = utcnow()
    chunked = sa.and_(Render.lease_owner == CHUNKED, Render.status.in_(RUNNING))
    other = aliased(RenderChunk)
    running = (
        sa.select(other.id)
        .where(other.render_id == Render.id, other.status == JobStatus.Processing)
        .correlate(Render)
        .exists()
    )
    pending_rows = (
        await session.execute(
            sa.select(RenderChunk.id, RenderChunk.render_id, RenderChunk.queued_at)
            .join(Render, Render.id == RenderChunk.render_id)
            .where(chunked, Render.status == JobStatus.Processing)
            .where(RenderChunk.status == JobStatus.Pending)
            .where(sa.true() if all_pending else ~running)
            .order_by(RenderChunk.render_id, RenderChunk.index)
        )
    ).all()
    resend: list[uuid.UUID] = []
    seen: set[uuid.UUID] = set()
    for chunk_id, render_id, queued_at in pending_rows:
        if all_pending:
            resend.append(chunk_id)
        elif render_id not in seen:
            seen.add(render_id)
            if queued_at is None or (now - queued_at).total_seconds() > stall_seconds:
                resend.append(chunk_id)
    if resend:
        await session.execute(
            sa.update(RenderChunk)
            .where(RenderChunk.id.in_(resend), RenderChunk.status == JobStatus.Pending)
            .values(queued_at=now)
            .execution_options(synchronize_session=False)
        )
    for chunk_id in resend:
        enqueue(session, CHUNK_ACTOR, chunk_id)
    busy = (
        sa.select(RenderChunk.id)
        .where(
            RenderChunk.render_id == Render.id,
            RenderChunk.status.in_([JobStatus.Pending, JobStatus.Processing]),
        )
        .exists()
    )
    idle = list(await session.scalars(sa.select(Render.id).where(chunked, ~busy)))
    for render_id in idle:
        enqueue(session, FINALIZE_ACTOR, render_id)
    return len(resend), len(idle)
