"""Library job transitions (templates, audio, assets): claim, stage, finish, complete, fail.

Store functions: they take the caller's session and only flush; the actor's
``Database.session()`` commits. Every transition is a compare-and-set on the job's status,
so a duplicated or replayed message, or a job finished or recovered elsewhere, changes
nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.db import updated_one
from jobs.failures import JobFailure
from jobs.models import Asset, Audio, AudioJob, JobStatus, Template, TemplateJob, utcnow
from jobs.quota import release_storage, reserve_storage, settle_storage

Item = Template | Audio | Asset


@dataclass(frozen=True)
class Tracked:
    """Where a kind of upload keeps its job state, its storage figures and its file."""

    job: type[TemplateJob | AudioJob | Asset]  # the row the actor claims and finishes
    item: type[Item]  # the row holding reserved/size bytes (the same row for assets)
    path_attr: str  # the item's stored file to drop when it fails

    async def get_item(self, s: AsyncSession, item_id: uuid.UUID) -> Item | None:
        return cast("Item | None", await s.get(self.item, item_id))


TEMPLATES = Tracked(TemplateJob, Template, "zip_path")
AUDIO = Tracked(AudioJob, Audio, "path")
ASSETS = Tracked(Asset, Asset, "path")


async def _cas(session: AsyncSession, stmt: sa.Update) -> bool:
    result = await session.execute(stmt.execution_options(synchronize_session=False))
    return updated_one(result)


async def claim(session: AsyncSession, tracked: Tracked, job_id: uuid.UUID, **values: Any) -> bool:
    """pending → processing, so a duplicated or replayed message claims nothing."""
    job = tracked.job
    return await _cas(
        session,
        sa.update(job)
        .where(job.id == job_id, job.status == JobStatus.Pending)
        .values(status=JobStatus.Processing, **values),
    )


async def claim_template(
    session: AsyncSession, job_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID, str] | None:
    """Claim a pending template job and mark its template processing: (template id, user
    id, ZIP path), or None when it is not pending any more (or its rows are gone)."""
    if not await claim(session, TEMPLATES, job_id, stage="validating", started_at=utcnow()):
        return None
    job = await session.get(TemplateJob, job_id)
    template = await session.get(Template, job.template_id) if job else None
    if job is None or template is None:
        return None
    template.status = JobStatus.Processing
    return template.id, template.user_id, template.zip_path


async def claim_audio(
    session: AsyncSession, job_id: uuid.UUID
) -> tuple[uuid.UUID, str, str] | None:
    """Claim a pending audio job and mark its audio processing: (audio id, path, name)."""
    if not await claim(session, AUDIO, job_id):
        return None
    job = await session.get(AudioJob, job_id)
    audio = await session.get(Audio, job.audio_id) if job else None
    if job is None or audio is None:
        return None
    audio.status = JobStatus.Processing
    return audio.id, audio.path, audio.name


async def claim_asset(session: AsyncSession, asset_id: uuid.UUID) -> tuple[str, str] | None:
    """Claim a pending asset (it is its own job): (path, name)."""
    if not await claim(session, ASSETS, asset_id):
        return None
    asset = await session.get(Asset, asset_id)
    return None if asset is None else (asset.path, asset.name)


async def set_stage(session: AsyncSession, job_id: uuid.UUID, stage: str) -> None:
    """Record the stage a processing template job has reached (shown in its status)."""
    await _cas(
        session,
        sa.update(TemplateJob)
        .where(TemplateJob.id == job_id, TemplateJob.status == JobStatus.Processing)
        .values(stage=stage),
    )


async def finish(session: AsyncSession, tracked: Tracked, job_id: uuid.UUID, **values: Any) -> bool:
    """processing → ``values`` (a final status) with ``completed_at``; False when the job was
    not processing any more (finished or recovered elsewhere)."""
    job = tracked.job
    return await _cas(
        session,
        sa.update(job)
        .where(job.id == job_id, job.status == JobStatus.Processing)
        .values(completed_at=utcnow(), **values),
    )


async def complete_media(
    session: AsyncSession, tracked: Tracked, job_id: uuid.UUID, item_id: uuid.UUID, **found: Any
) -> None:
    """Complete a media job, move the item's reservation to used storage and record what
    probing ``found`` on the item; a job finished elsewhere changes nothing."""
    done = await finish(session, tracked, job_id, status=JobStatus.Completed)
    row = await tracked.get_item(session, item_id)
    if not done or row is None:
        return
    await settle_storage(session, row.user_id, row.reserved_bytes, row.size_bytes)
    row.status = JobStatus.Completed
    row.reserved_bytes = 0
    for name, value in found.items():
        setattr(row, name, value)


async def fail(
    session: AsyncSession,
    tracked: Tracked,
    job_id: uuid.UUID,
    item_id: uuid.UUID,
    failure: JobFailure,
) -> str | None:
    """Fail the job and give the item's reservation back; the item's stored file, for the
    caller to remove after the commit (None when there is none, or the job was finished
    elsewhere)."""
    failed = await finish(
        session, tracked, job_id, status=JobStatus.Failed, reason=failure.reason, code=failure.code
    )
    if not failed:
        return None
    row = await tracked.get_item(session, item_id)
    if row is None:
        return None
    await release_storage(session, row.user_id, row.reserved_bytes)
    row.status = JobStatus.Failed
    row.reserved_bytes = 0
    row.size_bytes = 0
    return cast("str | None", getattr(row, tracked.path_attr))


async def reserve_extraction(
    session: AsyncSession, user_id: uuid.UUID, template_id: uuid.UUID, declared_bytes: int
) -> None:
    """Reserve the quota for what a template archive's central directory declares, before a
    byte is written; extraction then counts the bytes it really writes against it.

    Raises:
        JobFailure: ``storage_quota_exceeded`` when the account has not that much left.
    """
    if not await reserve_storage(session, user_id, declared_bytes):
        raise JobFailure(
            "storage_quota_exceeded",
            f"Storage quota exceeded: the extracted template needs "
            f"{declared_bytes / 1e6:.1f} MB more than the account has left",
        )
    await session.execute(
        sa.update(Template)
        .where(Template.id == template_id)
        .values(reserved_bytes=Template.reserved_bytes + declared_bytes)
    )


@dataclass(frozen=True)
class TemplateFound:
    """What analysing an extracted template found, recorded on its row."""

    extracted_dir: str
    extracted_bytes: int
    manifest: dict[str, Any]
    definition: dict[str, Any]
    name: str | None


async def complete_template(
    session: AsyncSession, job_id: uuid.UUID, template_id: uuid.UUID, found: TemplateFound
) -> None:
    """Mark the job done and the template completed, settling its storage reservation.

    Raises:
        JobFailure: ``superseded`` when the job was finished elsewhere or the template was
            deleted meanwhile.
    """
    if not await finish(session, TEMPLATES, job_id, status=JobStatus.Completed, stage="done"):
        raise JobFailure("superseded", "job was finished elsewhere")
    row = await session.get(Template, template_id)
    if row is None:
        raise JobFailure("superseded", "template was deleted")
    size = row.zip_bytes + found.extracted_bytes
    await settle_storage(session, row.user_id, row.reserved_bytes, size)
    row.status = JobStatus.Completed
    row.extracted_dir = found.extracted_dir
    row.manifest = found.manifest
    row.definition = found.definition
    row.size_bytes = size
    row.reserved_bytes = 0
    if found.name:
        row.name = found.name[:255]
