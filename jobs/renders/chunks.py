"""Chunked renders (SPEC §7).

A long render's worker claims it as usual, then hands it to its chunks: the render's
lease_owner becomes CHUNKED with no lease (the sweeper leaves it alone) and each chunk is
claimed, leased and heartbeaten on its own. Every chunk that stops (completed, failed,
cancelled) queues the finalize actor; it joins the chunks when all are completed, settles
a cancel once none is running, and removes the chunk files of a finished render. Each
transaction that ends a chunk first writes the render's row, which takes its row lock
(PostgreSQL) or the write lock (SQLite), so "is this the last chunk?" is answered once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.db import updated_one
from jobs.messages import enqueue
from jobs.models.base import JobStatus, utcnow
from jobs.models.render import Render, RenderChunk
from jobs.queues import CHUNK_ACTOR, FINALIZE_ACTOR
from jobs.renders.base import (
    CHUNKED,
    RUNNING,
    compare_and_set,
)
from jobs.renders.lifecycle import Beat, finish_unsuccessful, stop_chunks


async def fresh_render(session: AsyncSession, render_id: uuid.UUID) -> Render | None:
    """The render row as committed now, detached (so in-memory bookkeeping by
    ``budget.charge_render`` never flushes absolute values back)."""
    render = await session.scalar(
        sa.select(Render).where(Render.id == render_id).execution_options(populate_existing=True)
    )
    if render is not None:
        session.expunge(render)
    return render


async def chunks_of(session: AsyncSession, render_id: uuid.UUID) -> list[RenderChunk]:
    """The render's chunks in playback order (detached snapshots)."""
    rows = list(
        await session.scalars(
            sa.select(RenderChunk)
            .where(RenderChunk.render_id == render_id)
            .order_by(RenderChunk.index)
            .execution_options(populate_existing=True)
        )
    )
    for row in rows:
        session.expunge(row)
    return rows


async def lock_render(session: AsyncSession, render_id: uuid.UUID) -> None:
    """Take the render row's lock (PostgreSQL) or the write lock (SQLite) with a no-op
    write, so reads that follow in this transaction cannot be overtaken by another chunk."""
    await session.execute(
        sa.update(Render)
        .where(Render.id == render_id)
        .values(attempts=Render.attempts)
        .execution_options(synchronize_session=False)
    )


async def sync_progress(session: AsyncSession, render_id: uuid.UUID) -> None:
    """Set the render's frames_done/progress to the sum over its chunks."""
    done = int(
        await session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(RenderChunk.frames_done), 0)).where(
                RenderChunk.render_id == render_id
            )
        )
        or 0
    )
    total = int(
        await session.scalar(sa.select(Render.frames_total).where(Render.id == render_id)) or 0
    )
    progress = min(99, done * 100 // total) if total else 0
    await session.execute(
        sa.update(Render)
        .where(Render.id == render_id, Render.status.in_(RUNNING))
        .values(frames_done=min(done, total) if total else done, progress=progress)
        .execution_options(synchronize_session=False)
    )


async def start_chunks(
    session: AsyncSession,
    render: Render,
    owner: str,
    ranges: Sequence[tuple[int, int, int]],
) -> list[RenderChunk] | None:
    """Hand a claimed render to its chunks: ``ranges`` are ``(f_start, f_end, frames)``.

    Chunks completed by an earlier attempt with the same ranges are kept; the others are
    (re)set to pending and queued. When all are already completed the finalize actor is
    queued instead. Returns the chunks, or None when ``owner`` no longer holds the render
    (cancelled or lost meanwhile).
    """
    if not await compare_and_set(
        session,
        render.id,
        [JobStatus.Processing],
        {"lease_owner": CHUNKED, "lease_expires_at": None},
        owner=owner,
    ):
        return None
    existing = await chunks_of(session, render.id)
    wanted = [(i, a, b) for i, (a, b, _) in enumerate(ranges)]
    if [(c.index, c.f_start, c.f_end) for c in existing] != wanted:
        # First attempt, or the chunk size changed since: start from scratch.
        await session.execute(
            sa.delete(RenderChunk)
            .where(RenderChunk.render_id == render.id)
            .execution_options(synchronize_session=False)
        )
        for i, (a, b, frames) in enumerate(ranges):
            session.add(
                RenderChunk(
                    id=uuid.uuid4(),
                    render_id=render.id,
                    index=i,
                    f_start=a,
                    f_end=b,
                    frames_total=frames,
                    frames_done=0,
                    status=JobStatus.Pending,
                    attempts=0,
                    queued_at=utcnow(),
                    created_at=utcnow(),
                )
            )
        await session.flush()
    else:
        await session.execute(
            sa.update(RenderChunk)
            .where(RenderChunk.render_id == render.id, RenderChunk.status != JobStatus.Completed)
            .values(
                status=JobStatus.Pending,
                lease_owner=None,
                lease_expires_at=None,
                frames_done=0,
                output_path=None,
                reason=None,
                queued_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
    chunks = await chunks_of(session, render.id)
    await sync_progress(session, render.id)
    todo = [c for c in chunks if c.status != JobStatus.Completed]
    for chunk in todo:
        enqueue(session, CHUNK_ACTOR, chunk.id)
    if not todo:
        enqueue(session, FINALIZE_ACTOR, render.id)
    return chunks


async def claim_chunk(
    session: AsyncSession, chunk_id: uuid.UUID, owner: str, lease_seconds: float
) -> RenderChunk | None:
    """Pending -> Processing for ``owner``, only while its render is processing in chunks;
    None otherwise (the message is dropped)."""
    now = utcnow()
    parent_ok = (
        sa.select(Render.id)
        .where(
            Render.id == RenderChunk.render_id,
            Render.status == JobStatus.Processing,
            Render.lease_owner == CHUNKED,
        )
        .exists()
    )
    result = await session.execute(
        sa.update(RenderChunk)
        .where(RenderChunk.id == chunk_id, RenderChunk.status == JobStatus.Pending, parent_ok)
        .values(
            status=JobStatus.Processing,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=now,
            attempts=RenderChunk.attempts + 1,
            frames_done=0,
        )
        .execution_options(synchronize_session=False)
    )
    if not updated_one(result):
        return None
    chunk = await session.scalar(
        sa.select(RenderChunk)
        .where(RenderChunk.id == chunk_id)
        .execution_options(populate_existing=True)
    )
    if chunk is not None:
        session.expunge(chunk)
    return chunk


async def chunk_heartbeat(
    session: AsyncSession,
    chunk: RenderChunk,
    owner: str,
    *,
    lease_seconds: float | None,
    frames_done: int | None,
) -> Beat:
    """Renew the chunk's lease (when ``lease_seconds`` is given), record its progress and
    the render's (the sum over chunks). ``owned`` is False when the chunk's lease was lost;
    ``status`` is the render's (anything but processing tells the chunk to stop)."""
    values: dict[str, Any] = {}
    if lease_seconds is not None:
        values["lease_expires_at"] = utcnow() + timedelta(seconds=lease_seconds)
    if frames_done is not None:
        values["frames_done"] = min(frames_done, chunk.frames_total)
    owned = True
    if values:
        owned = await compare_and_set(
            session, chunk.id, [JobStatus.Processing], values, owner=owner, table=RenderChunk
        )
        if owned and frames_done is not None:
            await sync_progress(session, chunk.render_id)
    else:
        row = (
            await session.execute(
                sa.select(RenderChunk.status, RenderChunk.lease_owner).where(
                    RenderChunk.id == chunk.id
                )
            )
        ).first()
        owned = row is not None and row[0] == JobStatus.Processing and row[1] == owner
    status = await session.scalar(sa.select(Render.status).where(Render.id == chunk.render_id))
    return Beat(owned, status)


async def complete_chunk(
    session: AsyncSession,
    chunk: RenderChunk,
    owner: str,
    output_path: str,
    encoder_used: str,
    *,
    cached_frames: int = 0,
) -> bool:
    """Processing -> Completed with its file at ``output_path`` (relative to the storage
    root); the last chunk of a render still processing queues the finalize actor."""
    await lock_render(session, chunk.render_id)
    ok = await compare_and_set(
        session,
        chunk.id,
        [JobStatus.Processing],
        {
            "status": JobStatus.Completed,
            "output_path": output_path,
            "encoder_used": encoder_used,
            "cached_frames": cached_frames,
            "frames_done": chunk.frames_total,
            "completed_at": utcnow(),
            # lease_owner stays: it records which worker rendered the chunk.
            "lease_expires_at": None,
        },
        owner=owner,
        table=RenderChunk,
    )
    if not ok:
        return False
    await sync_progress(session, chunk.render_id)
    left = int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(RenderChunk)
            .where(
                RenderChunk.render_id == chunk.render_id,
                RenderChunk.status != JobStatus.Completed,
            )
        )
        or 0
    )
    status = await session.scalar(sa.select(Render.status).where(Render.id == chunk.render_id))
    if left == 0 or status != JobStatus.Processing:
        enqueue(session, FINALIZE_ACTOR, chunk.render_id)
    return True


async def end_chunk(
    session: AsyncSession,
    chunk: RenderChunk,
    owner: str | None,
    status: Literal[JobStatus.Failed, JobStatus.Cancelled],
    *,
    reason: str,
    code: str | None = None,
) -> bool:
    """A chunk stops without output. A failed chunk fails its render with the chunk's
    reason (the other chunks see that in their heartbeat and stop). Queues the finalize
    actor, which settles a cancel and removes chunk files once no chunk is running."""
    await lock_render(session, chunk.render_id)
    ok = await compare_and_set(
        session,
        chunk.id,
        [JobStatus.Processing],
        {
            "status": status,
            "reason": reason,
            "completed_at": utcnow(),
            "lease_owner": None,
            "lease_expires_at": None,
        },
        owner=owner,
        table=RenderChunk,
    )
    if not ok:
        return False
    if status == JobStatus.Failed:
        await fail_chunked(session, chunk.render_id, reason=reason, code=code)
    enqueue(session, FINALIZE_ACTOR, chunk.render_id)
    return True


async def fail_chunked(
    session: AsyncSession, render_id: uuid.UUID, *, reason: str, code: str | None
) -> bool:
    """Fail a render that is out in chunks (releasing its reservations); pending chunks are
    cancelled."""
    render = await fresh_render(session, render_id)
    if render is None or render.lease_owner != CHUNKED:
        return False
    ok = await finish_unsuccessful(
        session, render, CHUNKED, JobStatus.Failed, reason=reason, code=code
    )
    if ok:
        await stop_chunks(session, render_id)
    return ok


FinalizeStep = Literal["join", "cancelled", "cleanup", "wait"]


async def begin_finalize(
    session: AsyncSession, render_id: uuid.UUID, owner: str, lease_seconds: float
) -> tuple[FinalizeStep, Render | None, list[RenderChunk]]:
    """Decide what the finalize actor does for a chunked render, taking the render's lease
    when the chunks are ready to be joined.

    Returns ``join`` (every chunk completed; the render is now leased by ``owner``),
    ``cancelled`` (a cancel was settled here), ``cleanup`` (the render is finished and no
    chunk runs: remove the chunk files) or ``wait`` (chunks still running, or nothing to do).
    """
    await lock_render(session, render_id)
    render = await fresh_render(session, render_id)
    chunks = await chunks_of(session, render_id)
    if render is None or not chunks:
        return "wait", render, chunks
    if any(c.status == JobStatus.Processing for c in chunks):
        return "wait", render, chunks
    if render.lease_owner == CHUNKED and render.status == JobStatus.Processing:
        broken = next(
            (c for c in chunks if c.status in (JobStatus.Failed, JobStatus.Cancelled)), None
        )
        if broken is not None:
            # Normally failed together with its chunk; this settles a render left behind.
            await fail_chunked(
                session, render_id, reason=broken.reason or "A chunk failed", code="chunk_failed"
            )
            return "cleanup", render, chunks
        if all(c.status == JobStatus.Completed for c in chunks):
            ok = await compare_and_set(
                session,
                render_id,
                [JobStatus.Processing],
                {
                    "lease_owner": owner,
                    "lease_expires_at": utcnow() + timedelta(seconds=lease_seconds),
                },
                owner=CHUNKED,
            )
            if ok:
                render.lease_owner = owner
                return "join", render, chunks
        return "wait", render, chunks
    if render.lease_owner == CHUNKED and render.status == JobStatus.Cancelling:
        await stop_chunks(session, render_id)
        ok = await finish_unsuccessful(
            session,
            render,
            CHUNKED,
            JobStatus.Cancelled,
            reason="Cancelled",
            code=None,
            expected=[JobStatus.Cancelling],
        )
        return ("cancelled" if ok else "wait"), render, chunks
    if render.status in RUNNING:
        return "wait", render, chunks  # a single-piece attempt, or being joined
    return "cleanup", render, chunks
