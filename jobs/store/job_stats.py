"""Counts of jobs by kind and state, and the age of the oldest pending one, for
``GET /metrics`` (read at scrape time, so every process reports the whole service)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.models import Asset, AudioJob, JobStatus, TemplateJob, utcnow
from jobs.models.render import Render, RenderChunk
from jobs.queues import LIBRARY_QUEUE, RENDERS_QUEUE

# kind -> (model, queue)
KINDS: dict[str, tuple[type[object], str]] = {
    "render": (Render, RENDERS_QUEUE),
    "chunk": (RenderChunk, RENDERS_QUEUE),
    "template": (TemplateJob, LIBRARY_QUEUE),
    "audio": (AudioJob, LIBRARY_QUEUE),
    "asset": (Asset, LIBRARY_QUEUE),
}


async def job_counts(session: AsyncSession) -> list[tuple[str, str, str, int]]:
    """``(kind, queue, state, count)`` for every kind and state that has rows."""
    out: list[tuple[str, str, str, int]] = []
    for kind, (model, queue) in KINDS.items():
        status = model.status  # type: ignore[attr-defined]
        rows = (await session.execute(sa.select(status, sa.func.count()).group_by(status))).all()
        out += [(kind, queue, JobStatus(state).value, int(n)) for state, n in rows]
    return out


async def oldest_pending_seconds(session: AsyncSession) -> dict[str, float]:
    """Per kind, seconds since the oldest pending job was created (0 when none)."""
    now = utcnow()
    ages: dict[str, float] = {}
    for kind, (model, _queue) in KINDS.items():
        oldest: datetime | None = await session.scalar(
            sa.select(sa.func.min(model.created_at)).where(  # type: ignore[attr-defined]
                model.status == JobStatus.Pending  # type: ignore[attr-defined]
            )
        )
        if oldest is not None and oldest.tzinfo is None:  # SQLite aggregates lose the type
            from datetime import UTC

            oldest = oldest.replace(tzinfo=UTC)
        ages[kind] = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    return ages


async def failures_by_code(session: AsyncSession) -> dict[str, int]:
    """Failed renders by failure code (all time, as stored)."""
    rows = (
        await session.execute(
            sa.select(Render.failure_code, sa.func.count())
            .where(Render.status == JobStatus.Failed)
            .group_by(Render.failure_code)
        )
    ).all()
    return {str(code or "unknown"): int(n) for code, n in rows}
