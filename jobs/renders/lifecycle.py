"""A render's transitions: cancel and delete (API side); claim, heartbeat, complete and
finish unsuccessfully (worker side), each a compare-and-set (see ``render_base``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from jobs import budget, metrics, quota
from jobs.errors import Refused, bad_request
from jobs.faults import STORAGE_FULL
from jobs.messages import enqueue
from jobs.models.base import JobStatus, utcnow
from jobs.models.render import Render, RenderChunk
from jobs.queues import FINALIZE_ACTOR, WEBHOOK_ACTOR
from jobs.renders.base import (
    ACTIVE,
    RUNNING,
    compare_and_set,
)
from jobs.renders.queries import get_render
from jobs.storage import Storage

# --- API-side transitions -----------------------------------------------------------------


async def release_reservations(session: AsyncSession, render: Render) -> None:
    """Give back the budget and storage a render that produced no output still holds."""
    await budget.release_render(session, render)
    held = render.reserved_storage_bytes
    if held > 0:
        await quota.release_storage(session, render.user_id, held)
        await session.execute(
            sa.update(Render)
            .where(Render.id == render.id)
            .values(reserved_storage_bytes=Render.reserved_storage_bytes - held)
            .execution_options(synchronize_session=False)
        )
        render.reserved_storage_bytes -= held


def notify_terminal(session: AsyncSession, render: Render) -> None:
    """Queue the webhook for a render that just reached a terminal state."""
    if render.webhook_url:
        enqueue(session, WEBHOOK_ACTOR, render.id)


async def mark_webhook_delivered(session: AsyncSession, render_id: uuid.UUID) -> None:
    """Record that the render's webhook was delivered (the first delivery wins)."""
    await session.execute(
        sa.update(Render)
        .where(Render.id == render_id, Render.webhook_delivered_at.is_(None))
        .values(webhook_delivered_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def cancel_render(session: AsyncSession, user_id: uuid.UUID, render_id: uuid.UUID) -> Render:
    """Cancel a render: pending ones at once, processing ones via ``cancelling`` (the worker
    stops between frames and finishes the transition).

    Raises:
        Refused: ``not_found``; ``conflict`` when already completed, failed or cancelled.
    """
    render = await get_render(session, user_id, render_id)
    for _ in range(3):
        if render.status == JobStatus.Pending:
            now = utcnow()
            if await compare_and_set(
                session,
                render.id,
                [JobStatus.Pending],
                {"status": JobStatus.Cancelled, "completed_at": now, "reason": "Cancelled"},
            ):
                render.status, render.completed_at = JobStatus.Cancelled, now
                render.reason = "Cancelled"
                await release_reservations(session, render)
                await stop_chunks(session, render.id)
                notify_terminal(session, render)
                return render
        elif render.status == JobStatus.Processing:
            if await compare_and_set(
                session, render.id, [JobStatus.Processing], {"status": JobStatus.Cancelling}
            ):
                render.status = JobStatus.Cancelling
                await stop_chunks(session, render.id)
                return render
        elif render.status == JobStatus.Cancelling:
            return render
        else:
            raise Refused(
                "conflict",
                f"render {render_id} is already {render.status.value}; only pending or "
                "processing renders can be cancelled",
                "render_not_active",
            )
        # Lost a race with a worker (claim or finish): look again.
        await session.refresh(render)
    raise Refused("conflict", f"render {render_id} changed state; retry", "retry")


async def delete_render(
    session: AsyncSession, storage: Storage, user_id: uuid.UUID, render_id: uuid.UUID
) -> None:
    """Mark a finished render deleted, remove its video and free its storage.

    Raises:
        Refused: ``not_found``; ``bad_request`` while pending, processing or cancelling.
    """
    render = await get_render(session, user_id, render_id)
    if render.status in ACTIVE:
        raise bad_request(
            f"render {render_id} is {render.status.value}; cancel it with "
            "POST /render/{id}/cancel before deleting",
            "render_active",
        )
    if not await compare_and_set(
        session,
        render.id,
        [render.status],
        {"status": JobStatus.Deleted, "output_path": None},
    ):
        raise Refused("conflict", f"render {render_id} changed state; retry", "retry")
    if render.size_bytes and render.output_path:
        await quota.free_storage(session, user_id, render.size_bytes)
    await release_reservations(session, render)
    if render.output_path:
        # Removing before commit is safe: a failed commit leaves a deleted file behind a
        # completed row, which the user can delete again; the reverse would leak the file.
        storage.remove(render.output_path)
    render.status = JobStatus.Deleted


# --- worker-side transitions --------------------------------------------------------------


class OverQuota(Exception):
    """The finished output does not fit the account's storage quota (its reservation plus
    the free space). Raised inside the completing transaction, so leaving the session rolls
    the completion back; the caller then fails the render and removes the file."""

    def __init__(self, size_bytes: int) -> None:
        super().__init__(f"output of {size_bytes} bytes does not fit the storage quota")
        self.size_bytes = size_bytes


async def claim(
    session: AsyncSession, render_id: uuid.UUID, owner: str, lease_seconds: float
) -> Render | None:
    """Pending -> Processing for ``owner`` with a fresh lease; None when someone else has it
    (or it is no longer pending), in which case the message is dropped."""
    now = utcnow()
    ok = await compare_and_set(
        session,
        render_id,
        [JobStatus.Pending],
        {
            "status": JobStatus.Processing,
            "lease_owner": owner,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "started_at": now,
            "attempts": Render.attempts + 1,
            "progress": 0,
            "frames_done": 0,
        },
    )
    if not ok:
        return None
    return await session.scalar(
        sa.select(Render).where(Render.id == render_id).execution_options(populate_existing=True)
    )


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learnt: whether the lease is still ours and the current status."""

    owned: bool
    status: JobStatus | None


async def heartbeat(
    session: AsyncSession,
    render_id: uuid.UUID,
    owner: str,
    *,
    lease_seconds: float | None,
    frames_done: int | None = None,
    frames_total: int | None = None,
) -> Beat:
    """Record progress and (when ``lease_seconds`` is given) extend the lease, if ``owner``
    still holds it; report the status (a pending cancel shows as ``cancelling``)."""
    values: dict[str, Any] = {}
    if lease_seconds is not None:
        values["lease_expires_at"] = utcnow() + timedelta(seconds=lease_seconds)
    if frames_done is not None and frames_total:
        values["frames_done"] = frames_done
        values["frames_total"] = frames_total
        values["progress"] = min(99, frames_done * 100 // frames_total)
    if values:
        if not await compare_and_set(session, render_id, RUNNING, values, owner=owner):
            row = None
        else:
            row = (
                await session.execute(
                    sa.select(Render.status, Render.lease_owner).where(Render.id == render_id)
                )
            ).first()
    else:
        row = (
            await session.execute(
                sa.select(Render.status, Render.lease_owner).where(Render.id == render_id)
            )
        ).first()
    if row is None:
        status = await session.scalar(sa.select(Render.status).where(Render.id == render_id))
        return Beat(False, status)
    return Beat(row[1] == owner and row[0] in RUNNING, row[0])


async def complete(
    session: AsyncSession,
    storage: Storage,
    render: Render,
    owner: str,
    tmp: Any,
    *,
    size_bytes: int,
    encoder_used: str,
    frames_total: int,
    cached_frames: int = 0,
) -> bool:
    """Processing -> Completed and move the output into place, once.

    The compare-and-set runs first and the rename happens while this transaction still holds
    the row, so of two workers racing (one whose lease expired), only the winner's file is
    moved into place. False when the render is no longer ours or was cancelled meanwhile.

    Raises:
        OverQuota: ``size_bytes`` does not fit the quota; nothing was moved, and the session
            must be rolled back (leaving it with the exception does).
    """
    final = storage.new_path("renders", render.user_id, render.id, ".mp4")
    now = utcnow()
    ok = await compare_and_set(
        session,
        render.id,
        [JobStatus.Processing],
        {
            "status": JobStatus.Completed,
            "output_path": final,
            "size_bytes": size_bytes,
            "encoder_used": encoder_used,
            "cached_frames": cached_frames,
            "progress": 100,
            "frames_done": frames_total,
            "frames_total": frames_total,
            "completed_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "reason": None,
            "failure_code": None,
        },
        owner=owner,
    )
    if not ok:
        return False
    held = render.reserved_storage_bytes
    if not await quota.settle_within_quota(session, render.user_id, held, size_bytes):
        raise OverQuota(size_bytes)
    storage.move_into_place(tmp, final)
    await session.execute(
        sa.update(Render)
        .where(Render.id == render.id)
        .values(reserved_storage_bytes=0)
        .execution_options(synchronize_session=False)
    )
    render.reserved_storage_bytes = 0
    await budget.release_render(session, render)
    render.status, render.completed_at, render.output_path = JobStatus.Completed, now, final
    render.size_bytes = size_bytes
    notify_terminal(session, render)
    return True


async def finish_unsuccessful(
    session: AsyncSession,
    render: Render,
    owner: str | None,
    status: Literal[JobStatus.Failed, JobStatus.Cancelled],
    *,
    reason: str,
    code: str | None,
    expected: Sequence[JobStatus] = RUNNING,
) -> bool:
    """Processing/Cancelling -> Failed or Cancelled (if ``owner`` still holds the lease, when
    given); releases the reservations and queues the webhook."""
    now = utcnow()
    ok = await compare_and_set(
        session,
        render.id,
        expected,
        {
            "status": status,
            "reason": reason,
            "failure_code": code,
            "completed_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
        },
        owner=owner,
    )
    if not ok:
        return False
    render.status, render.reason, render.failure_code, render.completed_at = (
        status,
        reason,
        code,
        now,
    )
    if status == JobStatus.Failed:
        metrics.FAILURES.labels(code or "unknown").inc()
    if code == STORAGE_FULL:
        # The service's disk, not the user's request: nothing is charged.
        await budget.refund_render(session, render)
    await release_reservations(session, render)
    notify_terminal(session, render)
    return True


# Here rather than in render_chunks: cancel needs it, and render_chunks imports this module.
async def stop_chunks(session: AsyncSession, render_id: uuid.UUID) -> None:
    """Cancel the render's chunks nobody has claimed and, when it has chunks, queue the
    finalize actor (which settles the render once no chunk is running)."""
    result = await session.execute(
        sa.update(RenderChunk)
        .where(RenderChunk.render_id == render_id, RenderChunk.status == JobStatus.Pending)
        .values(status=JobStatus.Cancelled, reason="Cancelled", completed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    stopped = int(getattr(result, "rowcount", 0))
    has_chunks = stopped or await session.scalar(
        sa.select(sa.func.count())
        .select_from(RenderChunk)
        .where(RenderChunk.render_id == render_id)
    )
    if has_chunks:
        enqueue(session, FINALIZE_ACTOR, render_id)
