"""Render endpoints (reference "Render Endpoints" plus batch, long-poll and webhooks).

Validation, reservations and the concurrency check live in
``jobs.renders.submission``; this module parses requests, maps refusals to status codes
and shapes responses.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response

from api.deps import DbDep, SessionDep, SettingsDep, StorageDep, UserDep, require_free_space
from api.downloads import file_response
from api.errors import NotFound
from api.schemas.common import (
    MAX_SKIP,
    MessageResponse,
    error_responses,
    status_filter,
    status_query,
)
from api.schemas.renders import (
    RenderBatchCreated,
    RenderBatchRequest,
    RenderCreated,
    RenderDto,
    RenderJob,
    RenderRequest,
    RenderTimeBudgetStatus,
)
from api.signing import RenderDownloadUser
from jobs import budget
from jobs.models.base import JobStatus
from jobs.models.render import Render
from jobs.renders import lifecycle as render_lifecycle
from jobs.renders import queries as render_queries
from jobs.renders import submission as render_submission
from jobs.renders.base import ACTIVE, TERMINAL

router = APIRouter(prefix="/render", tags=["renders"])

MAX_WAIT_S = 60
POLL_INTERVAL_S = 0.25


async def _submit(
    session: SessionDep, settings: SettingsDep, user: UserDep, requests: list[RenderRequest]
) -> list[Render]:
    return await render_submission.submit_renders(
        session, settings, user, [r.to_spec() for r in requests]
    )


@router.post(
    "",
    response_model=RenderCreated,
    summary="Create a render job",
    responses=error_responses(400, 401, 402, 404, 429, 507),
    dependencies=[Depends(require_free_space)],
)
async def create_render(
    body: RenderRequest, session: SessionDep, settings: SettingsDep, user: UserDep
) -> RenderCreated:
    """Validate the request (template, customisations, encoder config, frame range, audio),
    reserve render time (402) and storage, enforce the concurrency limit (429), then queue
    the render. Answers ``{renderId, status: "pending"}``."""
    (render,) = await _submit(session, settings, user, [body])
    return RenderCreated(render_id=render.id, status="pending")


@router.post(
    "/batch",
    response_model=RenderBatchCreated,
    summary="Create up to 100 render jobs at once",
    responses=error_responses(400, 401, 402, 404, 429, 507),
    dependencies=[Depends(require_free_space)],
)
async def create_render_batch(
    body: RenderBatchRequest, session: SessionDep, settings: SettingsDep, user: UserDep
) -> RenderBatchCreated:
    """All items are validated and reserved together: one invalid item (named
    ``items[i]``) refuses the whole batch and nothing is queued."""
    renders = await _submit(session, settings, user, body.items)
    return RenderBatchCreated(
        items=[RenderCreated(render_id=r.id, status="pending") for r in renders]
    )


async def _list(
    session: SessionDep,
    user: UserDep,
    statuses: tuple[JobStatus, ...],
    skip: int,
    take: int,
) -> list[Render]:
    return await render_queries.list_renders(session, user.id, statuses, skip=skip, take=take)


@router.get("/all", response_model=list[RenderDto], summary="Completed renders")
async def all_renders(
    session: SessionDep,
    user: UserDep,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    take: Annotated[int, Query(ge=1, le=100)] = 50,
) -> list[RenderDto]:
    """The account's completed renders, newest first."""
    rows = await _list(session, user, (JobStatus.Completed,), skip, take)
    return [RenderDto.of(r) for r in rows]


@router.get("/active", response_model=list[RenderJob], summary="Pending and processing renders")
async def active_renders(session: SessionDep, user: UserDep) -> list[RenderJob]:
    """Renders queued, processing or being cancelled, oldest first."""
    rows = await render_queries.list_renders(
        session, user.id, ACTIVE, skip=0, take=1000, newest_first=False
    )
    return [RenderJob.of(r) for r in rows]


@router.get("/history", response_model=list[RenderJob], summary="Finished renders")
async def render_history(
    session: SessionDep,
    user: UserDep,
    status: Annotated[str | None, status_query("completed", "failed", "cancelled")] = None,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    take: Annotated[int, Query(ge=1, le=200)] = 100,
) -> list[RenderJob]:
    """Completed, failed and cancelled renders, newest first; ``status`` filters."""
    statuses = tuple(status_filter(status, {s.value: s for s in TERMINAL}))
    rows = await _list(session, user, statuses, skip, take)
    return [RenderJob.of(r) for r in rows]


@router.get(
    "/render-time-budget-status",
    response_model=RenderTimeBudgetStatus,
    summary="Render-time budget and usage",
)
async def render_time_budget_status(session: SessionDep, user: UserDep) -> RenderTimeBudgetStatus:
    """Milliseconds of worker time: total, used (charged plus reserved by active renders)
    and remaining."""
    status = await budget.budget_status(session, user.id)
    used = status.used_ms + status.reserved_ms
    total = status.total_ms
    percentage = round(100.0 * used / total, 2) if total else (100.0 if used else 0.0)
    return RenderTimeBudgetStatus(
        used_milliseconds=used,
        remaining_milliseconds=status.remaining_ms,
        total_milliseconds=total,
        usage_percentage=percentage,
        charged_milliseconds=status.used_ms,
        reserved_milliseconds=status.reserved_ms,
    )


async def _get(session: SessionDep, user: UserDep, render_id: uuid.UUID) -> Render:
    return await render_queries.get_render(session, user.id, render_id)


@router.get(
    "/renders/{render_id}",
    response_model=RenderDto,
    summary="A completed render",
    responses=error_responses(404),
)
async def completed_render(render_id: uuid.UUID, session: SessionDep, user: UserDep) -> RenderDto:
    """Details of a completed render (404 while it is not completed)."""
    render = await _get(session, user, render_id)
    if render.status != JobStatus.Completed:
        raise NotFound(
            f"render {render_id} is {render.status.value}, not completed; use "
            "GET /render/{id}/status",
            "render_not_completed",
        )
    return RenderDto.of(render)


@router.get(
    "/{render_id}/status",
    response_model=RenderJob,
    summary="Status and progress of a render (optionally long-polled)",
    responses=error_responses(404),
)
async def render_status(
    *,
    render_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    db: DbDep,
    user: UserDep,
    wait: Annotated[
        int,
        Query(ge=0, le=MAX_WAIT_S, description="seconds to wait for a status/progress change"),
    ] = 0,
) -> RenderJob:
    """The render's status, progress (0-100) and frame counts. With ``wait=N`` the answer
    comes as soon as the status or progress changes, or after N seconds at most."""
    render = await _get(session, user, render_id)
    if wait == 0 or render.status in TERMINAL:
        return RenderJob.of(render)
    # Do not hold a connection (or a PostgreSQL transaction) while waiting.
    await session.commit()
    seen = (render.status, render.progress)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        await asyncio.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
        if await request.is_disconnected():
            break
        async with db.session() as s:
            fresh = await s.scalar(
                sa.select(Render).where(Render.id == render.id, Render.user_id == user.id)
            )
        if fresh is None:
            raise NotFound(f"render {render_id} not found")
        render = fresh
        if (render.status, render.progress) != seen:
            break
    return RenderJob.of(render)


@router.post(
    "/{render_id}/cancel",
    response_model=RenderCreated,
    summary="Cancel a pending or processing render",
    responses=error_responses(404, 409),
)
async def cancel_render(render_id: uuid.UUID, session: SessionDep, user: UserDep) -> RenderCreated:
    """A pending render is cancelled at once; a processing one becomes ``cancelling`` and
    the worker stops between frames (about a second), deletes the partial output and charges
    the time used. 409 for completed, failed or cancelled renders."""
    render = await render_lifecycle.cancel_render(session, user.id, render_id)
    return RenderCreated(render_id=render.id, status=render.status.value)


@router.delete(
    "/{render_id}",
    response_model=MessageResponse,
    summary="Delete a finished render and its video",
    responses=error_responses(400, 404),
)
async def delete_render(
    render_id: uuid.UUID, session: SessionDep, storage: StorageDep, user: UserDep
) -> MessageResponse:
    """Removes the video and frees its storage; refused (400) while pending or processing.
    Render time already used is not refunded."""
    await render_lifecycle.delete_render(session, storage, user.id, render_id)
    return MessageResponse(message="Render deleted successfully")


_UNSAFE = re.compile(r"[^\w.\- ]+")


@router.get(
    "/{render_id}/download",
    summary="Download the rendered MP4 (byte ranges supported)",
    responses={
        200: {"content": {"video/mp4": {}}},
        206: {"description": "Partial content"},
        **error_responses(403, 404, 416),
    },
    response_class=Response,
)
async def download_render(
    render_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    storage: StorageDep,
    user: RenderDownloadUser,
) -> Response:
    """Streams the video; honours ``Range``, ``If-Range`` and ``If-None-Match``. Authorised
    by ``X-API-Key`` or by a signed link (``POST /render/{id}/signed-url``)."""
    render = await _get(session, user, render_id)
    if render.status != JobStatus.Completed or not render.output_path:
        raise NotFound(
            f"render {render_id} is {render.status.value}, not completed; nothing to download",
            "render_not_completed",
        )
    stem = _UNSAFE.sub("_", render.name).strip() or "render"
    return file_response(
        request,
        storage.abs(render.output_path),
        filename=f"{stem[:100]}.mp4",
        media_type="video/mp4",
        etag_seed=str(render.id),
    )
