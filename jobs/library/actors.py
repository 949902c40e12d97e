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
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware.time_limit import TimeLimitExceeded

from jobs.actors import current_storage, run_job
from jobs.db import Database
from jobs.failures import JobFailure
from jobs.faults import STORAGE_FULL, is_disk_full
from jobs.library import lifecycle
from jobs.queues import ASSET_ACTOR, AUDIO_ACTOR, LIBRARY_QUEUE, TEMPLATE_ACTOR
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


async def _set_stage(db: Database, job_id: uuid.UUID, stage: str) -> None:
    async with db.session() as s:
        await lifecycle.set_stage(s, job_id, stage)


async def _complete_media(
    db: Database, tracked: lifecycle.Tracked, job_id: uuid.UUID, item_id: uuid.UUID, **found: Any
) -> None:
    async with db.session() as s:
        await lifecycle.complete_media(s, tracked, job_id, item_id, **found)


async def _fail(  # noqa: PLR0917 - the job, its item and why
    db: Database,
    storage: Storage,
    tracked: lifecycle.Tracked,
    job_id: uuid.UUID,
    item_id: uuid.UUID,
    failure: JobFailure,
) -> None:
    """Fail the job and drop the item's stored file: a refused upload keeps no files, the
    job's reason is what the user needs."""
    async with db.session() as s:
        path_rel = await lifecycle.fail(s, tracked, job_id, item_id, failure)
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


async def process_template_job(db: Database, storage: Storage, job_id: uuid.UUID) -> None:
    """The template pipeline (stages validating → extracting → analyzing → done).

    Args:
        db: database of this worker thread.
        storage: the storage root.
        job_id: the ``TemplateJob`` id.
    """
    async with db.session() as s:
        claimed = await lifecycle.claim_template(s, job_id)
    if claimed is None:
        return
    template_id, user_id, zip_rel = claimed
    workdir = storage.tmp_path()
    doing = "validating the archive"
    final_rel: str | None = None
    try:
        from renderer.template.archive import safe_extract

        plan = _inspect(storage.abs(zip_rel))
        async with db.session() as s:
            await lifecycle.reserve_extraction(s, user_id, template_id, plan.declared_bytes)
        doing = "extracting the archive"
        await _set_stage(db, job_id, "extracting")
        safe_extract(storage.abs(zip_rel), workdir, budget_bytes=plan.declared_bytes)
        extracted_bytes = _tree_size(workdir)

        doing = "analyzing data.json and its files"
        await _set_stage(db, job_id, "analyzing")
        manifest, definition, name = _analyze(workdir)

        final_rel = storage.new_path("template_files", user_id, template_id)
        final_abs = storage.abs(final_rel)
        if final_abs.exists():
            shutil.rmtree(final_abs, ignore_errors=True)
        os.replace(workdir, final_abs)
        found = lifecycle.TemplateFound(final_rel, extracted_bytes, manifest, definition, name)
        async with db.session() as s:
            await lifecycle.complete_template(s, job_id, template_id, found)
    except BaseException as exc:
        failure = _failure_from(exc, doing)
        if final_rel:
            storage.remove(final_rel)
        if failure.code != "superseded":
            await _fail(db, storage, lifecycle.TEMPLATES, job_id, template_id, failure)
        if not isinstance(exc, (Exception, TimeLimitExceeded)):
            raise
    finally:
        from renderer.template.archive import remove_tree

        remove_tree(workdir)


def _inspect(zip_abs: Path) -> Any:
    """The archive's plan (entries, declared size), checked before a byte is written."""
    from renderer.errors import InvalidTemplate
    from renderer.template.archive import inspect_archive

    if not zipfile.is_zipfile(zip_abs):
        raise InvalidTemplate("The upload is not a ZIP archive (template uploads must be .zip)")
    return inspect_archive(zip_abs)


def _analyze(workdir: Path) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """Load and probe the extracted template, and describe it for clients."""
    from renderer.compose.layers.lottie import check_template_lotties
    from renderer.template.loader import load_template
    from renderer.template.manifest import build_manifest

    loaded = load_template(workdir)
    # Sample frames of each Lottie drawn in the sandbox: a file that crashes or hangs
    # the engine is refused here, not at its first render.
    check_template_lotties(loaded)
    definition = loaded.template.model_dump(mode="json", by_alias=True)
    return build_manifest(loaded), definition, loaded.template.name or None


# --- audio --------------------------------------------------------------------------------------


@_library_actor(AUDIO_ACTOR, MEDIA_TIME_LIMIT_MS)
def process_audio(job_id: str) -> None:
    """Validate the audio file of audio job ``job_id`` and record its duration."""
    run_job(lambda db: process_audio_job(db, current_storage(), uuid.UUID(job_id)))


async def process_audio_job(db: Database, storage: Storage, job_id: uuid.UUID) -> None:
    """Probe an uploaded audio file (MP3, WAV or AAC) and complete or fail its job."""
    async with db.session() as s:
        claimed = await lifecycle.claim_audio(s, job_id)
    if claimed is None:
        return
    audio_id, path_rel, name = claimed
    try:
        from renderer.media.probe import validate_media_file

        info: Any = validate_media_file(storage.abs(path_rel), "audio", name)
        duration = float(getattr(info, "duration_s", 0.0) or 0.0)
        await _complete_media(db, lifecycle.AUDIO, job_id, audio_id, duration_s=duration)
    except BaseException as exc:
        failure = _failure_from(exc, "checking the audio file")
        await _fail(db, storage, lifecycle.AUDIO, job_id, audio_id, failure)
        if not isinstance(exc, (Exception, TimeLimitExceeded)):
            raise


# --- assets -------------------------------------------------------------------------------------


@_library_actor(ASSET_ACTOR, MEDIA_TIME_LIMIT_MS)
def process_asset(asset_id: str) -> None:
    """Probe asset ``asset_id`` as an image or a video and record its kind."""
    run_job(lambda db: process_asset_job(db, current_storage(), uuid.UUID(asset_id)))


async def process_asset_job(db: Database, storage: Storage, asset_id: uuid.UUID) -> None:
    """Decide an asset's kind by probing (image first unless it looks like a video)."""
    async with db.session() as s:
        claimed = await lifecycle.claim_asset(s, asset_id)
    if claimed is None:
        return
    path_rel, name = claimed
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
        await _complete_media(db, lifecycle.ASSETS, asset_id, asset_id, kind=kind)
    except BaseException as exc:
        failure = _failure_from(exc, "checking the media file")
        await _fail(db, storage, lifecycle.ASSETS, asset_id, asset_id, failure)
        if not isinstance(exc, (Exception, TimeLimitExceeded)):
            raise
