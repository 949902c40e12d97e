"""Recovery sweeper, run when ``velocity serve`` or ``velocity worker`` starts.

Library jobs (template, audio, asset processing) that are pending were possibly never sent
(a crash between commit and send) and are re-enqueued; duplicates are harmless because each
actor claims its job with a compare-and-set. Jobs stuck in ``processing`` are put back to
``pending`` first when their worker must be dead: in the embedded mode every one of them (the
only worker is this process), with an external broker those older than the actor's time limit.
Renders are recovered by ``jobs.renders.sweeper.recover_renders`` (lease based).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import dramatiq
import sqlalchemy as sa

from jobs.db import Database
from jobs.messages import enqueue
from jobs.models import Asset, Audio, AudioJob, JobStatus, Template, TemplateJob, utcnow
from jobs.queues import ASSET_ACTOR, AUDIO_ACTOR, TEMPLATE_ACTOR
from jobs.storage import Storage

log = logging.getLogger(__name__)

TEMPLATE_STALE = timedelta(minutes=31)
MEDIA_STALE = timedelta(minutes=11)


async def recover_library(db: Database, *, embedded: bool) -> int:
    """Reset dead processing library jobs to pending and re-enqueue every pending one.

    Args:
        db: the database.
        embedded: True when this process is the only worker (every processing job is dead).

    Returns:
        How many messages were enqueued.
    """
    now = utcnow()
    template_cut = None if embedded else now - TEMPLATE_STALE
    media_cut = None if embedded else now - MEDIA_STALE
    count = 0
    async with db.session() as s:
        stale = sa.update(TemplateJob).where(TemplateJob.status == JobStatus.Processing)
        if template_cut is not None:
            stale = stale.where(
                sa.or_(TemplateJob.started_at.is_(None), TemplateJob.started_at < template_cut)
            )
        await s.execute(
            stale.values(status=JobStatus.Pending, stage="uploaded").execution_options(
                synchronize_session=False
            )
        )
        stale_audio = sa.update(AudioJob).where(AudioJob.status == JobStatus.Processing)
        if media_cut is not None:
            stale_audio = stale_audio.where(AudioJob.created_at < media_cut)
        await s.execute(
            stale_audio.values(status=JobStatus.Pending).execution_options(
                synchronize_session=False
            )
        )
        stale_asset = sa.update(Asset).where(Asset.status == JobStatus.Processing)
        if media_cut is not None:
            stale_asset = stale_asset.where(Asset.created_at < media_cut)
        await s.execute(
            stale_asset.values(status=JobStatus.Pending).execution_options(
                synchronize_session=False
            )
        )

        pending_templates = (
            await s.execute(
                sa.select(TemplateJob.id, TemplateJob.template_id).where(
                    TemplateJob.status == JobStatus.Pending
                )
            )
        ).all()
        for job_id, template_id in pending_templates:
            await back_to_pending(s, Template, template_id)
            enqueue(s, TEMPLATE_ACTOR, job_id)
            count += 1
        pending_audio = (
            await s.execute(
                sa.select(AudioJob.id, AudioJob.audio_id).where(
                    AudioJob.status == JobStatus.Pending
                )
            )
        ).all()
        for job_id, audio_id in pending_audio:
            await back_to_pending(s, Audio, audio_id)
            enqueue(s, AUDIO_ACTOR, job_id)
            count += 1
        pending_assets = (
            await s.execute(sa.select(Asset.id).where(Asset.status == JobStatus.Pending))
        ).scalars()
        for asset_id in pending_assets:
            enqueue(s, ASSET_ACTOR, asset_id)
            count += 1
    return count


async def back_to_pending(session: Any, model: Any, row_id: Any) -> None:
    """A template or audio whose job is sent again shows ``pending`` again (not
    ``processing``) until a worker claims the job."""
    await session.execute(
        sa.update(model)
        .where(model.id == row_id, model.status == JobStatus.Processing)
        .values(status=JobStatus.Pending)
        .execution_options(synchronize_session=False)
    )


async def recover(
    db: Database, broker: dramatiq.Broker, *, embedded: bool, storage: Storage
) -> dict[str, Any]:
    """Recover library jobs and renders at start-up; returns what was done (for logs).

    ``storage`` lets render recovery delete the partial outputs of the attempts it requeues
    or gives up on (otherwise they would stay under ``tmp/`` for good).
    """
    # Actor modules declare their actors on import, so they load after setup_broker.
    from jobs.renders.sweeper import recover_renders

    done: dict[str, Any] = {"library": await recover_library(db, embedded=embedded)}
    done["renders"] = await recover_renders(db, broker, storage=storage)
    if done["library"]:
        log.info("recovery re-enqueued %s library jobs", done["library"])
    return done
