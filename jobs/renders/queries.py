"""Render look-ups for the API and the workers, and whether active renders still use a
library item."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.errors import not_found
from jobs.models.account import User
from jobs.models.base import JobStatus
from jobs.models.library import Asset, Audio, Template
from jobs.models.render import Render
from jobs.renders.base import (
    ACTIVE,
    TERMINAL,
)


async def get_render(session: AsyncSession, user_id: uuid.UUID, render_id: uuid.UUID) -> Render:
    """The account's render (never a deleted one).

    Raises:
        Refused: ``not_found`` (also for another account's render).
    """
    render = await session.scalar(
        sa.select(Render).where(
            Render.id == render_id,
            Render.user_id == user_id,
            Render.status != JobStatus.Deleted,
        )
    )
    if render is None:
        raise not_found(f"render {render_id} not found")
    return render


async def list_renders(
    session: AsyncSession,
    user_id: uuid.UUID,
    statuses: Iterable[JobStatus],
    *,
    skip: int = 0,
    take: int = 100,
    newest_first: bool = True,
) -> list[Render]:
    """The account's renders in ``statuses``, newest first, paginated."""
    order = Render.created_at.desc() if newest_first else Render.created_at.asc()
    rows = await session.scalars(
        sa.select(Render)
        .where(Render.user_id == user_id, Render.status.in_(list(statuses)))
        .order_by(order, Render.id)
        .offset(skip)
        .limit(take)
    )
    return list(rows)


async def active_renders_using(
    session: AsyncSession,
    *,
    template_id: uuid.UUID | None = None,
    audio_id: uuid.UUID | None = None,
    audio_group_id: uuid.UUID | None = None,
) -> int:
    """How many pending/processing renders use the template, audio or audio group (the
    library refuses to delete those while this is non-zero)."""
    stmt = sa.select(sa.func.count()).select_from(Render).where(Render.status.in_(ACTIVE))
    if template_id is not None:
        stmt = stmt.where(Render.template_id == template_id)
    if audio_id is not None:
        stmt = stmt.where(Render.audio_id == audio_id)
    if audio_group_id is not None:
        stmt = stmt.where(
            Render.audio_id.in_(sa.select(Audio.id).where(Audio.group_id == audio_group_id))
        )
    return int(await session.scalar(stmt) or 0)


async def template_in_use(session: AsyncSession, template_id: uuid.UUID) -> bool:
    """True while a pending/processing/cancelling render uses the template."""
    return await active_renders_using(session, template_id=template_id) > 0


async def audio_in_use(session: AsyncSession, audio_id: uuid.UUID) -> bool:
    """True while a pending/processing/cancelling render uses the audio."""
    return await active_renders_using(session, audio_id=audio_id) > 0


async def asset_in_use(session: AsyncSession, asset: Asset) -> bool:
    """True while a pending/processing/cancelling render of the asset's owner names it in its
    customisations (an account has at most ``max_concurrent_renders`` such renders)."""
    requests = await session.scalars(
        sa.select(Render.request).where(Render.user_id == asset.user_id, Render.status.in_(ACTIVE))
    )
    wanted = str(asset.id)
    return any(
        entry.get("assetId") == wanted
        for request in requests
        for entry in (request or {}).get("customizationMap", [])
    )


async def audio_group_in_use(session: AsyncSession, group_id: uuid.UUID) -> bool:
    """True while a pending/processing/cancelling render uses audio of the group."""
    return await active_renders_using(session, audio_group_id=group_id) > 0


# --- worker side ---------------------------------------------------------------------------


async def render_status(session: AsyncSession, render_id: uuid.UUID) -> JobStatus | None:
    """The render's status as committed now (None: no such render)."""
    return await session.scalar(sa.select(Render.status).where(Render.id == render_id))


async def lease_owner(session: AsyncSession, render_id: uuid.UUID) -> str | None:
    """Who holds the render's lease now (None: nobody, or no such render)."""
    return await session.scalar(sa.select(Render.lease_owner).where(Render.id == render_id))


async def completed_output(session: AsyncSession, render_id: uuid.UUID) -> str | None:
    """The stored output path of a completed render; None while it is not completed."""
    row = (
        await session.execute(
            sa.select(Render.status, Render.output_path).where(Render.id == render_id)
        )
    ).first()
    return row[1] if row is not None and row[0] == JobStatus.Completed else None


async def template_to_render(session: AsyncSession, render: Render) -> Template | None:
    """The render's template while it can still be rendered (extracted and not deleted)."""
    if render.template_id is None:
        return None
    return await session.scalar(
        sa.select(Template).where(
            Template.id == render.template_id,
            Template.extracted_dir.is_not(None),
            Template.deleted_at.is_(None),
        )
    )


async def audio_to_render(session: AsyncSession, render: Render) -> Audio | None:
    """The render's extra audio while it is still there (completed); None when the render
    has none or it was deleted."""
    if render.audio_id is None:
        return None
    return await session.scalar(
        sa.select(Audio).where(Audio.id == render.audio_id, Audio.status == JobStatus.Completed)
    )


async def webhook_to_send(session: AsyncSession, render_id: uuid.UUID) -> tuple[Render, str] | None:
    """The finished render whose webhook is still to be delivered, with its account's
    signing secret; None when there is nothing to send (no ``webhookUrl``, not finished
    yet, or already delivered)."""
    render = await session.scalar(sa.select(Render).where(Render.id == render_id))
    if render is None or not render.webhook_url or render.webhook_delivered_at is not None:
        return None
    if render.status not in TERMINAL:
        return None
    secret = await session.scalar(sa.select(User.webhook_secret).where(User.id == render.user_id))
    return render, secret or ""
