"""Library actors: template, audio and asset processing (queue ``library``).

Each actor takes one id, claims its job with a compare-and-set (pending → processing), so a
duplicated or replayed message is a no-op, does the slow work outside any transaction, and
finishes with another compare-and-set. Every outcome is recorded on the row: a renderer error
keeps its ``code`` and message; anything unexpected (a malformed file crashing a decoder)
still ends the job as ``failed`` with a reason, never as a stuck ``processing``.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware.time_limit import TimeLimitExceeded
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.actors import current_storage, run_job
from jobs.db import Database, updated_one
from jobs.failures import JobFailure
from jobs.faults import STORAGE_FULL, is_disk_full
from jobs.models import Asset, Audio, AudioJob, JobStatus, Template, TemplateJob, utcnow
from jobs.queues import ASSET_ACTOR, AUDIO_ACTOR, LIBRARY_QUEUE, TEMPLATE_ACTOR
from jobs.quota import release_storage, reserve_storage, settle_storage
from jobs.storage import Storage

log = logging.getLogger(__name__)

TEMPLATE_TIME_LIMIT_MS = 30 * 60 * 1000
MEDIA_TIME_LIMIT_MS = 10 * 60 * 1000
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})


def _failure_from(exc: BaseException, doing: str) -> JobFailure:
    from renderer.errors import RendererError

    if isinstance(exc, JobFailure):
        return exc
    if isinstance(exc, RendererError):
        return JobFailure(exc.code, str(exc))
    if isinstance(exc, TimeLimitExceeded):
        return JobFailure("timeout", f"Processing took too long while {doing}")
    if is_disk_full(exc):
        log.error("storage full while %s", doing)
        return JobFailure(
            STORAGE_FULL,
            f"The server ran out of disk space while {doing}; upload the file again later",
        )
    log.exception("unexpected error while %s", doing)
    return JobFailure(
        "internal_error",
        f"The file could not be processed: unexpected {type(exc).__name__} while {doing}. "
        "It may be corrupt or in an unsupported format.",
    )


async def _cas(db: Database, stmt: sa.Update) -> bool:
    async with db.session() as s:
        result = await s.execute(stmt.execution_options(synchronize_session=False))
        return updated_one(result)


Item = Template | Audio | Asset


@dataclass(frozen=True)
class _Tracked:
    """Where a kind of upload keeps its job state, its storage figures and its file."""

    job: type[TemplateJob | AudioJob | Asset]  # the row the actor claims and finishes
    item: type[Item]  # the row holding reserved/size bytes (the same row for assets)
    path_attr: str  # the item's stored file to drop when it fails

    async def get_item(self, s: AsyncSession, item_id: uuid.UUID) -> Item | None:
        return cast("Item | None", await s.get(self.item, item_id))


TEMPLATES = _Tracked(TemplateJob, Template, "zip_path")
AUDIO = _Tracked(AudioJob, Audio, "path")
ASSETS = _Tracked(Asset, Asset, "path")


def _claim(tracked: _Tracked, job_id: uuid.UUID, **values: Any) -> sa.Update:
    """pending → processing, so a duplicated or replayed message claims nothing."""
    job = tracked.job
    return (
        sa.update(job)
        .where(job.id == job_id, job.status == JobStatus.Pending)
        .values(status=JobStatus.Processing, **values)
    )


async def _finish(s: AsyncSession, tracked: _Tracked, job_id: uuid.UUID, **values: Any) -> bool:
    """processing → ``values`` (a final status) with ``completed_at``; False when the job was
    not processing any more (finished or recovered elsewhere)."""
    job = tracked.job
    result = await s.execute(
        sa.update(job)
        .where(job.id == job_id, job.status == JobStatus.Processing)
        .values(completed_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return updated_one(result)


async def _complete_media(
    db: Database, tracked: _Tracked, job_id: uuid.UUID, item_id: uuid.UUID, **found: Any
) -> None:
    """Complete a media job, move the item's reservation to used storage and record what
    probing ``found`` on the item; a job finished elsewhere changes nothing."""
    async with db.session() as s:
        done = await _finish(s, tracked, job_id, status=JobStatus.Completed)
        row = await tracked.get_item(s, item_id)
        if not done or row is None:
            return
        await settle_storage(s, row.user_id, row.reserved_bytes, row.size_bytes)
        row.status = JobStatus.Completed
        row.reserved_bytes = 0
        for name, value in found.items():
            setattr(row, name, value)


async def _fail(
    db: Database,
    storage: Storage,
    tracked: _Tracked,
    job_id: uuid.UUID,
    item_id: uuid.UUID,
    *,
    failure: JobFailure,
) -> None:
    """Fail the job, give the item's reservation back and drop its stored file."""
    path_rel: str | None = None
    async with db.session() as s:
        failed = await _finish(
            s, tracked, job_id, status=JobStatus.Failed, reason=failure.reason, code=failure.code
        )
        if not failed:
            return
        row = await tracked.get_item(s, item_id)
        if row is not None:
            await release_storage(s, row.user_id, row.reserved_bytes)
            row.status = JobStatus.Failed
            row.reserved_bytes = 0
            row.size_bytes = 0
            path_rel = getattr(row, tracked.path_attr)
    # A refused upload keeps no files: the job's reason is what the user needs.
    storage.remove(path_rel)


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total


def _library_actor(name: str, time_limit_ms: int) -> Callable[[Callable[[str], None]], Any]:
    """A ``library`` queue actor: retried three times with backoff (a worker lost mid-job),
    stopped after ``time_limit_ms``."""
    return dramatiq.actor(
        actor_name=name,
        queue_name=LIBRARY_QUEUE,
        max_retries=3,
        min_backoff=1_000,
        max_backoff=30_000,
        time_limit=time_limit_ms,
    )


# --- templates --------------------------------------------------------------------------------


@_library_actor(TEMPLATE_ACTOR, TEMPLATE_TIME_LIMIT_MS)
def process_template(job_id: str) -> None:
    """Validate, extract and analyse the template of template job ``job_id``."""
    run_job(lambda db: process_template_job(db, current_storage(), uuid.UUID(job_id)))


async def _set_stage(db: Database, job_id: uuid.UUID, stage: str) -> None:
    await _cas(
        db,
        sa.update(TemplateJob)
        .where(TemplateJob.id == job_id, TemplateJob.status == JobStatus.Processing)
        .values(stage=stage),
    )


async def process_template_job(db: Database, storage: Storage, job_id: uuid.UUID) -> None:
    """The template pipeline (stages validating → extracting → analyzing → done).

    Args:
        db: database of this worker thread.
        storage: the storage root.
        job_id: the ``TemplateJob`` id.
    """
    claimed = await _claim_template(db, job_id)
    if claimed is None:
        return
    template_id, user_id, zip_rel = claimed
    workdir = storage.tmp_path()
    doing = "validating the archive"
    final_rel: str | None = None
    try:
        from renderer.template.archive import safe_extract

        plan = _inspect(storage.abs(zip_rel))
        await _reserve_extraction(db, user_id, template_id, plan.declared_bytes)
        doing = "extracting the archive"
        await _set_stage(db, job_id, "extracting")
        safe_extract(storage.abs(zip_rel), workdir, budget_bytes=plan.declared_bytes)
        extracted_bytes = _tree_size(workdir)

        doing = "analyzing data.json and its files"
        await _set_stage(db, job_id, "analyzing")
        analysis = _analyze(workdir)

        final_rel = storage.new_path("template_files", user_id, template_id)
        final_abs = storage.abs(final_rel)
        if final_abs.exists():
            shutil.rmtree(final_abs, ignore_errors=True)
        os.replace(workdir, final_abs)
        await _complete_template(db, job_id, template_id, final_rel, extracted_bytes, analysis)
    except BaseException as exc:
        failure = _failure_from(exc, doing)
        if final_rel:
            storage.remove(final_rel)
        if failure.code != "superseded":
            await _fail(db, storage, TEMPLATES, job_id, template_id, failure=failure)
        if not isinstance(exc, (Exception, TimeLimitExceeded)):
            raise
    finally:
        from renderer.template.archive import remove_tree

        remove_tree(workdir)


async def _claim_template(
    db: Database, job_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID, str] | None:
    """Claim a pending template job: (template id, user id, ZIP path), or None when it is
    not pending any more (or its rows are gone)."""
    if not await _cas(db, _claim(TEMPLATES, job_id, stage="validating", started_at=utcnow())):
        return None
    async with db.session() as s:
        job = await s.get(TemplateJob, job_id)
        template = await s.get(Template, job.template_id) if job else None
        if job is None or template is None:
            return None
        template.status = JobStatus.Processing
        return template.id, template.user_id, template.zip_path


def _inspect(zip_abs: Path) -> Any:
    """The archive's plan (entries, declared size), checked before a byte is written."""
    from renderer.errors import InvalidTemplate
    from renderer.template.archive import inspect_archive

    if not zipfile.is_zipfile(zip_abs):
        raise InvalidTemplate("The upload is not a ZIP archive (template uploads must be .zip)")
    return inspect_archive(zip_abs)


async def _reserve_extraction(
    db: Database, user_id: uuid.UUID, template_id: uuid.UUID, declared_bytes: int
) -> None:
    """Reserve the quota for what the central directory declares before a byte is written;
    extraction then counts the bytes it really writes against that reservation, entry by
    entry (an entry larger than declared is refused)."""
    async with db.session() as s:
        if not await reserve_storage(s, user_id, declared_bytes):
            raise JobFailure(
                "storage_quota_exceeded",
                f"Storage quota exceeded: the extracted template needs "
                f"{declared_bytes / 1e6:.1f} MB more than the account has left",
            )
        await s.execute(
            sa.update(Template)
            .where(Template.id == template_id)
            .values(reserved_bytes=Template.reserved_bytes + declared_bytes)
        )


@dataclass(frozen=True)
class _Analysis:
    manifest: dict[str, Any]
    definition: dict[str, Any]
    name: str | None


def _analyze(workdir: Path) -> _Analysis:
    """Load and probe the extracted template, and describe it for clients."""
    from renderer.compose.layers.lottie import check_template_lotties
    from renderer.template.loader import load_template
    from renderer.template.manifest import build_manifest

    loaded = load_template(workdir)
    # Sample frames of each Lottie drawn in the sandbox: a file that crashes or hangs
    # the engine is refused here, not at its first render.
    check_template_lotties(loaded)
    return _Analysis(
        manifest=build_manifest(loaded),
        definition=loaded.template.model_dump(mode="json", by_alias=True),
        name=loaded.template.name or None,
    )


async def _complete_template(  # noqa: PLR0917 - the job's ids and what analysis found
    db: Database,
    job_id: uuid.UUID,
    template_id: uuid.UUID,
    final_rel: str,
    extracted_bytes: int,
    analysis: _Analysis,
) -> None:
    """Mark the job done and the template completed, settling its storage reservation."""
    async with db.session() as s:
        if not await _finish(s, TEMPLATES, job_id, status=JobStatus.Completed, stage="done"):
            raise JobFailure("superseded", "job was finished elsewhere")
        row = await s.get(Template, template_id)
        if row is None:
            raise JobFailure("superseded", "template was deleted")
        size = row.zip_bytes + extracted_bytes
        await settle_storage(s, row.user_id, row.reserved_bytes, size)
        row.status = JobStatus.Completed
        row.extracted_dir = final_rel
        row.manifest = analysis.manifest
        row.definition = analysis.definition
        row.size_bytes = size
        row.reserved_bytes = 0
        if analysis.name:
            row.name = analysis.name[:255]


# --- audio --------------------------------------------------------------------------------------


@_library_actor(AUDIO_ACTOR, MEDIA_TIME_LIMIT_MS)
def process_audio(job_id: str) -> None:
    """Validate the audio file of audio job ``job_id`` and record its duration."""
    run_job(lambda db: process_audio_job(db, current_storage(), uuid.UUID(job_id)))


async def process_audio_job(db: Database, storage: Storage, job_id: uuid.UUID) -> None:
    """Probe an uploaded audio file (MP3, WAV or AAC) and complete or fail its job."""
    if not await _cas(db, _claim(AUDIO, job_id)):
        return
    async with db.session() as s:
        job = await s.get(AudioJob, job_id)
        audio = await s.get(Audio, job.audio_id) if job else None
        if job is None or audio is None:
            return
        audio.status = JobStatus.Processing
        audio_id, path_rel, name = audio.id, audio.path, audio.name
    try:
        from renderer.media.probe import validate_media_file

        info: Any = validate_media_file(storage.abs(path_rel), "audio", name)
        duration = float(getattr(info, "duration_s", 0.0) or 0.0)
        await _complete_media(db, AUDIO, job_id, audio_id, duration_s=duration)
    except BaseException as exc:
        failure = _failure_from(exc, "checking the audio file")
        await _fail(db, storage, AUDIO, job_id, audio_id, failure=failure)
        if not isinstance(exc, (Exception, TimeLimitExceeded)):
            raise


# --- assets -------------------------------------------------------------------------------------


@_library_actor(ASSET_ACTOR, MEDIA_TIME_LIMIT_MS)
def process_asset(asset_id: str) -> None:
    """Probe asset ``asset_id`` as an image or a video and record its kind."""
    run_job(lambda db: process_asset_job(db, current_storage(), uuid.UUID(asset_id)))


async def process_asset_job(db: Database, storage: Storage, asset_id: uuid.UUID) -> None:
    """Decide an asset's kind by probing (image first unless it looks like a video)."""
    if not await _cas(db, _claim(ASSETS, asset_id)):
        return
    async with db.session() as s:
        asset = await s.get(Asset, asset_id)
        if asset is None:
            return
        path_rel, name = asset.path, asset.name
    try:
        from renderer.errors import RendererError
        from renderer.media.probe import validate_media_file

        path = storage.abs(path_rel)
        order = ["image", "video"]
        if Path(name).suffix.lower() in VIDEO_SUFFIXES:
            order.reverse()
        kind: str | None = None
        first_error: RendererError | None = None
        for candidate in order:
            try:
                validate_media_file(path, candidate, name)  # type: ignore[arg-type]
            except RendererError as err:
                first_error = first_error or err
                continue
            kind = candidate
            break
        if kind is None:
            assert first_error is not None
            raise first_error
        await _complete_media(db, ASSETS, asset_id, asset_id, kind=kind)
    except BaseException as exc:
        failure = _failure_from(exc, "checking the media file")
        await _fail(db, storage, ASSETS, asset_id, asset_id, failure=failure)
        if not isinstance(exc, (Exception, TimeLimitExceeded)):
            raise
