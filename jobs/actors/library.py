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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware.time_limit import TimeLimitExceeded

from jobs.actors import ASSET_ACTOR, AUDIO_ACTOR, TEMPLATE_ACTOR, current_storage, run_job
from jobs.broker import LIBRARY_QUEUE
from jobs.db import Database
from jobs.models import Asset, Audio, AudioJob, JobStatus, Template, TemplateJob, utcnow
from jobs.quota import release_storage, reserve_storage, settle_storage
from jobs.storage import Storage

log = logging.getLogger(__name__)

TEMPLATE_TIME_LIMIT_MS = 30 * 60 * 1000
MEDIA_TIME_LIMIT_MS = 10 * 60 * 1000
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})


@dataclass
class JobFailure(Exception):
    """A failure to record on the job: a machine ``code`` and a reason for a person."""

    code: str
    reason: str


def _failure_from(exc: BaseException, doing: str) -> JobFailure:
    from renderer.errors import RendererError

    if isinstance(exc, JobFailure):
        return exc
    if isinstance(exc, RendererError):
        return JobFailure(exc.code, str(exc))
    if isinstance(exc, TimeLimitExceeded):
        return JobFailure("timeout", f"Processing took too long while {doing}")
    log.exception("unexpected error while %s", doing)
    return JobFailure(
        "internal_error",
        f"The file could not be processed: unexpected {type(exc).__name__} while {doing}. "
        "It may be corrupt or in an unsupported format.",
    )


async def _cas(db: Database, stmt: sa.Update) -> bool:
    async with db.session() as s:
        result = await s.execute(stmt.execution_options(synchronize_session=False))
        return bool(getattr(result, "rowcount", 0) == 1)


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total


# --- templates --------------------------------------------------------------------------------


@dramatiq.actor(
    actor_name=TEMPLATE_ACTOR,
    queue_name=LIBRARY_QUEUE,
    max_retries=3,
    min_backoff=1_000,
    max_backoff=30_000,
    time_limit=TEMPLATE_TIME_LIMIT_MS,
)
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
    claimed = await _cas(
        db,
        sa.update(TemplateJob)
        .where(TemplateJob.id == job_id, TemplateJob.status == JobStatus.Pending)
        .values(status=JobStatus.Processing, stage="validating", started_at=utcnow()),
    )
    if not claimed:
        return
    async with db.session() as s:
        job = await s.get(TemplateJob, job_id)
        template = await s.get(Template, job.template_id) if job else None
        if job is None or template is None:
            return
        template.status = JobStatus.Processing
        template_id, user_id, zip_rel = template.id, template.user_id, template.zip_path

    workdir = storage.tmp_path()
    doing = "validating the archive"
    final_rel: str | None = None
    try:
        from renderer.archive import safe_extract
        from renderer.errors import InvalidTemplate
        from renderer.loader import load_template
        from renderer.manifest import build_manifest

        zip_abs = storage.abs(zip_rel)
        if not zipfile.is_zipfile(zip_abs):
            raise InvalidTemplate("The upload is not a ZIP archive (template uploads must be .zip)")

        doing = "extracting the archive"
        await _set_stage(db, job_id, "extracting")
        safe_extract(zip_abs, workdir)
        extracted_bytes = _tree_size(workdir)
        async with db.session() as s:
            if not await reserve_storage(s, user_id, extracted_bytes):
                raise JobFailure(
                    "storage_quota_exceeded",
                    f"Storage quota exceeded: the extracted template needs "
                    f"{extracted_bytes / 1e6:.1f} MB more than the account has left",
                )
            await s.execute(
                sa.update(Template)
                .where(Template.id == template_id)
                .values(reserved_bytes=Template.reserved_bytes + extracted_bytes)
            )

        doing = "analyzing data.json and its files"
        await _set_stage(db, job_id, "analyzing")
        loaded = load_template(workdir)
        manifest = build_manifest(loaded)
        definition = loaded.template.model_dump(mode="json", by_alias=True)
        name = loaded.template.name or None

        final_rel = storage.new_path("template_files", user_id, template_id)
        final_abs = storage.abs(final_rel)
        if final_abs.exists():
            shutil.rmtree(final_abs, ignore_errors=True)
        os.replace(workdir, final_abs)

        async with db.session() as s:
            done = await s.execute(
                sa.update(TemplateJob)
                .where(TemplateJob.id == job_id, TemplateJob.status == JobStatus.Processing)
                .values(status=JobStatus.Completed, stage="done", completed_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if getattr(done, "rowcount", 0) != 1:
                raise JobFailure("superseded", "job was finished elsewhere")
            row = await s.get(Template, template_id)
            if row is None:
                raise JobFailure("superseded", "template was deleted")
            size = row.zip_bytes + extracted_bytes
            await settle_storage(s, user_id, row.reserved_bytes, size)
            row.status = JobStatus.Completed
            row.extracted_dir = final_rel
            row.manifest = manifest
            row.definition = definition
            row.size_bytes = size
            row.reserved_bytes = 0
            if name:
                row.name = name[:255]
    except BaseException as exc:
        failure = _failure_from(exc, doing)
        if final_rel:
            storage.remove(final_rel)
        if failure.code != "superseded":
            await _fail_template(db, storage, job_id, template_id, failure)
        if not isinstance(exc, (Exception, TimeLimitExceeded)):
            raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _fail_template(
    db: Database, storage: Storage, job_id: uuid.UUID, template_id: uuid.UUID, failure: JobFailure
) -> None:
    zip_rel: str | None = None
    async with db.session() as s:
        result = await s.execute(
            sa.update(TemplateJob)
            .where(TemplateJob.id == job_id, TemplateJob.status == JobStatus.Processing)
            .values(
                status=JobStatus.Failed,
                reason=failure.reason,
                code=failure.code,
                completed_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return
        row = await s.get(Template, template_id)
        if row is not None:
            await release_storage(s, row.user_id, row.reserved_bytes)
            row.status = JobStatus.Failed
            row.reserved_bytes = 0
            row.size_bytes = 0
            zip_rel = row.zip_path
    # A refused template keeps no files: the job's reason is what the user needs.
    storage.remove(zip_rel)


# --- audio --------------------------------------------------------------------------------------


@dramatiq.actor(
    actor_name=AUDIO_ACTOR,
    queue_name=LIBRARY_QUEUE,
    max_retries=3,
    min_backoff=1_000,
    max_backoff=30_000,
    time_limit=MEDIA_TIME_LIMIT_MS,
)
def process_audio(job_id: str) -> None:
    """Validate the audio file of audio job ``job_id`` and record its duration."""
    run_job(lambda db: process_audio_job(db, current_storage(), uuid.UUID(job_id)))


async def process_audio_job(db: Database, storage: Storage, job_id: uuid.UUID) -> None:
    """Probe an uploaded audio file (MP3, WAV or AAC) and complete or fail its job."""
    claimed = await _cas(
        db,
        sa.update(AudioJob)
        .where(AudioJob.id == job_id, AudioJob.status == JobStatus.Pending)
        .values(status=JobStatus.Processing),
    )
    if not claimed:
        return
    async with db.session() as s:
        job = await s.get(AudioJob, job_id)
        audio = await s.get(Audio, job.audio_id) if job else None
        if job is None or audio is None:
            return
        audio.status = JobStatus.Processing
        audio_id, path_rel, name = audio.id, audio.path, audio.name
    try:
        from renderer.probe import validate_media_file

        info: Any = validate_media_file(storage.abs(path_rel), "audio", name)
        duration = float(getattr(info, "duration_s", 0.0) or 0.0)
        async with db.session() as s:
            result = await s.execute(
                sa.update(AudioJob)
                .where(AudioJob.id == job_id, AudioJob.status == JobStatus.Processing)
                .values(status=JobStatus.Completed, completed_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            row = await s.get(Audio, audio_id)
            if getattr(result, "rowcount", 0) != 1 or row is None:
                return
            await settle_storage(s, row.user_id, row.reserved_bytes, row.size_bytes)
            row.status = JobStatus.Completed
            row.duration_s = duration
            row.reserved_bytes = 0
    except BaseException as exc:
        failure = _failure_from(exc, "checking the audio file")
        await _fail_audio(db, storage, job_id, audio_id, failure)
        if not isinstance(exc, (Exception, TimeLimitExceeded)):
            raise


async def _fail_audio(
    db: Database, storage: Storage, job_id: uuid.UUID, audio_id: uuid.UUID, failure: JobFailure
) -> None:
    path_rel: str | None = None
    async with db.session() as s:
        result = await s.execute(
            sa.update(AudioJob)
            .where(AudioJob.id == job_id, AudioJob.status == JobStatus.Processing)
            .values(
                status=JobStatus.Failed,
                reason=failure.reason,
                code=failure.code,
                completed_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return
        row = await s.get(Audio, audio_id)
        if row is not None:
            await release_storage(s, row.user_id, row.reserved_bytes)
            row.status = JobStatus.Failed
            row.reserved_bytes = 0
            row.size_bytes = 0
            path_rel = row.path
    storage.remove(path_rel)


# --- assets -------------------------------------------------------------------------------------


@dramatiq.actor(
    actor_name=ASSET_ACTOR,
    queue_name=LIBRARY_QUEUE,
    max_retries=3,
    min_backoff=1_000,
    max_backoff=30_000,
    time_limit=MEDIA_TIME_LIMIT_MS,
)
def process_asset(asset_id: str) -> None:
    """Probe asset ``asset_id`` as an image or a video and record its kind."""
    run_job(lambda db: process_asset_job(db, current_storage(), uuid.UUID(asset_id)))


async def process_asset_job(db: Database, storage: Storage, asset_id: uuid.UUID) -> None:
    """Decide an asset's kind by probing (image first unless it looks like a video)."""
    claimed = await _cas(
        db,
        sa.update(Asset)
        .where(Asset.id == asset_id, Asset.status == JobStatus.Pending)
        .values(status=JobStatus.Processing),
    )
    if not claimed:
        return
    async with db.session() as s:
        asset = await s.get(Asset, asset_id)
        if asset is None:
            return
        path_rel, name = asset.path, asset.name
    try:
        from renderer.errors import RendererError
        from renderer.probe import validate_media_file

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
        async with db.session() as s:
            result = await s.execute(
                sa.update(Asset)
                .where(Asset.id == asset_id, Asset.status == JobStatus.Processing)
                .values(status=JobStatus.Completed, kind=kind, completed_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            row = await s.get(Asset, asset_id)
            if getattr(result, "rowcount", 0) != 1 or row is None:
                return
            await settle_storage(s, row.user_id, row.reserved_bytes, row.size_bytes)
            row.reserved_bytes = 0
    except BaseException as exc:
        failure = _failure_from(exc, "checking the media file")
        await _fail_asset(db, storage, asset_id, failure)
        if not isinstance(exc, (Exception, TimeLimitExceeded)):
            raise


async def _fail_asset(
    db: Database, storage: Storage, asset_id: uuid.UUID, failure: JobFailure
) -> None:
    path_rel: str | None = None
    async with db.session() as s:
        result = await s.execute(
            sa.update(Asset)
            .where(Asset.id == asset_id, Asset.status == JobStatus.Processing)
            .values(
                status=JobStatus.Failed,
                reason=failure.reason,
                code=failure.code,
                completed_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return
        row = await s.get(Asset, asset_id)
        if row is not None:
            await release_storage(s, row.user_id, row.reserved_bytes)
            row.reserved_bytes = 0
            row.size_bytes = 0
            path_rel = row.path
    storage.remove(path_rel)
