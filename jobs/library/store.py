"""Queries and state changes for templates, audio (and groups) and assets.

Every lookup takes the owner's ``user_id``: another account's ids are simply not found.
Functions only flush; the caller commits (and removes files after the commit).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from jobs.errors import Refused
from jobs.models import (
    Asset,
    Audio,
    AudioGroup,
    AudioJob,
    JobStatus,
    Template,
    TemplateJob,
)
from jobs.quota import free_storage, release_storage
from renderer.template.customize import article, asset_kind_for_layer
from renderer.template.model import Layer

DEFAULT_GROUP_NAME = "Default"

JobT = TypeVar("JobT", TemplateJob, AudioJob)
ItemT = TypeVar("ItemT", Template, Audio)


async def _latest_job(
    session: AsyncSession,
    base: sa.Select[JobT, ItemT],
    job: type[JobT],
    item_key: InstrumentedAttribute[uuid.UUID],
    some_id: uuid.UUID,
) -> tuple[JobT, ItemT] | None:
    """The newest job whose item (``item_key``) is ``some_id``, else the job ``some_id``."""
    row = (
        await session.execute(
            base.where(item_key == some_id).order_by(job.created_at.desc()).limit(1)
        )
    ).first()
    if row is None:
        row = (await session.execute(base.where(job.id == some_id))).first()
    return (row[0], row[1]) if row else None


async def _jobs_page(
    session: AsyncSession,
    base: sa.Select[JobT, ItemT],
    job: type[JobT],
    statuses: Sequence[JobStatus],
    *,
    skip: int,
    take: int | None,
) -> Sequence[tuple[JobT, ItemT]]:
    """Jobs of ``base`` in ``statuses``, newest first, ``skip``/``take`` paginated."""
    stmt = (
        base.where(job.status.in_(list(statuses)))
        .order_by(job.created_at.desc(), job.id)
        .offset(skip)
    )
    if take is not None:
        stmt = stmt.limit(take)
    return [(r[0], r[1]) for r in (await session.execute(stmt)).all()]


async def _insert_with_job(
    session: AsyncSession, item: Template | Audio, job: TemplateJob | AudioJob
) -> None:
    # Flushed one after the other: the job's foreign key needs the item's row first.
    session.add(item)
    await session.flush()
    session.add(job)
    await session.flush()


async def _give_back_storage(session: AsyncSession, row: Template | Audio | Asset) -> None:
    """Free a deleted item's used bytes (once completed) and release what it still reserves."""
    if row.status == JobStatus.Completed and row.size_bytes:
        await free_storage(session, row.user_id, row.size_bytes)
    if row.reserved_bytes:
        await release_storage(session, row.user_id, row.reserved_bytes)


# --- templates --------------------------------------------------------------------------------


async def create_template(
    session: AsyncSession,
    *,
    template_id: uuid.UUID,
    user_id: uuid.UUID,
    name: str,
    original_filename: str,
    zip_path: str,
    zip_bytes: int,
) -> tuple[Template, TemplateJob]:
    """Insert an uploaded template (its ZIP size already reserved) and its pending job."""
    template = Template(
        id=template_id,
        user_id=user_id,
        name=name,
        original_filename=original_filename,
        status=JobStatus.Pending,
        zip_path=zip_path,
        zip_bytes=zip_bytes,
        size_bytes=zip_bytes,
        reserved_bytes=zip_bytes,
    )
    job = TemplateJob(template_id=template_id, user_id=user_id, status=JobStatus.Pending)
    await _insert_with_job(session, template, job)
    return template, job


def _template_jobs(user_id: uuid.UUID) -> sa.Select[TemplateJob, Template]:
    return (
        sa.select(TemplateJob, Template)
        .join(Template, Template.id == TemplateJob.template_id)
        .where(TemplateJob.user_id == user_id)
    )


async def get_template(
    session: AsyncSession, user_id: uuid.UUID, template_id: uuid.UUID
) -> Template | None:
    """The user's template (any status but deleted) or None."""
    stmt = sa.select(Template).where(
        Template.id == template_id,
        Template.user_id == user_id,
        Template.status != JobStatus.Deleted,
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def template_job_for(
    session: AsyncSession, user_id: uuid.UUID, some_id: uuid.UUID
) -> tuple[TemplateJob, Template] | None:
    """The latest job of template ``some_id``, or the job whose id is ``some_id``."""
    base = _template_jobs(user_id).where(Template.status != JobStatus.Deleted)
    return await _latest_job(session, base, TemplateJob, TemplateJob.template_id, some_id)


async def list_completed_templates(session: AsyncSession, user_id: uuid.UUID) -> Sequence[Template]:
    """The user's ready templates, newest first."""
    stmt = (
        sa.select(Template)
        .where(Template.user_id == user_id, Template.status == JobStatus.Completed)
        .order_by(Template.created_at.desc())
    )
    return (await session.execute(stmt)).scalars().all()


async def list_template_jobs(
    session: AsyncSession,
    user_id: uuid.UUID,
    statuses: Sequence[JobStatus],
    *,
    skip: int = 0,
    take: int | None = None,
) -> Sequence[tuple[TemplateJob, Template]]:
    """Template jobs in ``statuses`` with their templates, newest first."""
    return await _jobs_page(
        session, _template_jobs(user_id), TemplateJob, statuses, skip=skip, take=take
    )


async def delete_template(session: AsyncSession, template: Template) -> list[str]:
    """Delete the template row (its jobs cascade) and give its storage back.

    Returns:
        The stored paths to remove once the transaction has committed.
    """
    await _give_back_storage(session, template)
    paths = [p for p in (template.zip_path, template.extracted_dir) if p]
    await session.execute(sa.delete(TemplateJob).where(TemplateJob.template_id == template.id))
    await session.execute(sa.delete(Template).where(Template.id == template.id))
    return paths


# --- audio groups and audio --------------------------------------------------------------------


async def create_group(session: AsyncSession, user_id: uuid.UUID, name: str) -> AudioGroup:
    """Create an audio asset group."""
    group = AudioGroup(user_id=user_id, name=name)
    session.add(group)
    await session.flush()
    return group


async def get_group(
    session: AsyncSession, user_id: uuid.UUID, group_id: uuid.UUID
) -> AudioGroup | None:
    """The user's group or None."""
    stmt = sa.select(AudioGroup).where(AudioGroup.id == group_id, AudioGroup.user_id == user_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def default_group(session: AsyncSession, user_id: uuid.UUID) -> AudioGroup:
    """The user's "Default" group, created on first use."""
    stmt = (
        sa.select(AudioGroup)
        .where(AudioGroup.user_id == user_id, AudioGroup.name == DEFAULT_GROUP_NAME)
        .order_by(AudioGroup.created_at)
        .limit(1)
    )
    group = (await session.execute(stmt)).scalar_one_or_none()
    return group or await create_group(session, user_id, DEFAULT_GROUP_NAME)


async def list_groups(session: AsyncSession, user_id: uuid.UUID) -> Sequence[AudioGroup]:
    """The user's groups, oldest first."""
    stmt = (
        sa.select(AudioGroup)
        .where(AudioGroup.user_id == user_id)
        .order_by(AudioGroup.created_at, AudioGroup.id)
    )
    return (await session.execute(stmt)).scalars().all()


async def audios_in_group(
    session: AsyncSession, user_id: uuid.UUID, group_id: uuid.UUID
) -> Sequence[Audio]:
    """Every audio of the group (any status), oldest first."""
    stmt = (
        sa.select(Audio)
        .where(Audio.user_id == user_id, Audio.group_id == group_id)
        .order_by(Audio.created_at, Audio.id)
    )
    return (await session.execute(stmt)).scalars().all()


async def create_audio(
    session: AsyncSession,
    *,
    audio_id: uuid.UUID,
    user_id: uuid.UUID,
    group_id: uuid.UUID,
    name: str,
    fmt: str,
    path: str,
    size: int,
) -> tuple[Audio, AudioJob]:
    """Insert an uploaded audio file (its size already reserved) and its pending job."""
    audio = Audio(
        id=audio_id,
        user_id=user_id,
        group_id=group_id,
        name=name,
        format=fmt,
        path=path,
        size_bytes=size,
        reserved_bytes=size,
        status=JobStatus.Pending,
    )
    job = AudioJob(audio_id=audio_id, user_id=user_id, status=JobStatus.Pending)
    await _insert_with_job(session, audio, job)
    return audio, job


def _audio_jobs(user_id: uuid.UUID) -> sa.Select[AudioJob, Audio]:
    return (
        sa.select(AudioJob, Audio)
        .join(Audio, Audio.id == AudioJob.audio_id)
        .where(AudioJob.user_id == user_id)
    )


async def get_audio(session: AsyncSession, user_id: uuid.UUID, audio_id: uuid.UUID) -> Audio | None:
    """The user's audio (any status) or None."""
    stmt = sa.select(Audio).where(Audio.id == audio_id, Audio.user_id == user_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def audio_job_for(
    session: AsyncSession, user_id: uuid.UUID, some_id: uuid.UUID
) -> tuple[AudioJob, Audio] | None:
    """The latest job of audio ``some_id``, or the job whose id is ``some_id``."""
    return await _latest_job(session, _audio_jobs(user_id), AudioJob, AudioJob.audio_id, some_id)


async def list_audio_jobs(
    session: AsyncSession,
    user_id: uuid.UUID,
    statuses: Sequence[JobStatus],
    *,
    skip: int = 0,
    take: int | None = None,
) -> Sequence[tuple[AudioJob, Audio]]:
    """Audio jobs in ``statuses`` with their audio, newest first."""
    return await _jobs_page(session, _audio_jobs(user_id), AudioJob, statuses, skip=skip, take=take)


async def list_completed_audio(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    search: str | None = None,
    group_id: uuid.UUID | None = None,
    skip: int = 0,
    take: int = 100,
) -> Sequence[tuple[Audio, AudioGroup]]:
    """Completed audio with their groups, filtered by a case-insensitive name search."""
    stmt = (
        sa.select(Audio, AudioGroup)
        .join(AudioGroup, AudioGroup.id == Audio.group_id)
        .where(Audio.user_id == user_id, Audio.status == JobStatus.Completed)
    )
    if search:
        pattern = (
            "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        stmt = stmt.where(
            sa.or_(
                sa.func.lower(Audio.name).like(pattern, escape="\\"),
                sa.func.lower(AudioGroup.name).like(pattern, escape="\\"),
            )
        )
    if group_id is not None:
        stmt = stmt.where(Audio.group_id == group_id)
    stmt = stmt.order_by(Audio.created_at.desc(), Audio.id).offset(skip).limit(take)
    return [(r[0], r[1]) for r in (await session.execute(stmt)).all()]


async def delete_audio(session: AsyncSession, audio: Audio) -> list[str]:
    """Delete the audio row (its jobs cascade) and give its storage back.

    Returns:
        The stored paths to remove once the transaction has committed.
    """
    await _give_back_storage(session, audio)
    await session.execute(sa.delete(AudioJob).where(AudioJob.audio_id == audio.id))
    await session.execute(sa.delete(Audio).where(Audio.id == audio.id))
    return [audio.path]


async def delete_group(session: AsyncSession, group: AudioGroup) -> list[str]:
    """Delete a group and all of its audio; returns the paths to remove after commit."""
    paths: list[str] = []
    for audio in await audios_in_group(session, group.user_id, group.id):
        paths += await delete_audio(session, audio)
    await session.execute(sa.delete(AudioGroup).where(AudioGroup.id == group.id))
    return paths


# --- assets ------------------------------------------------------------------------------------


async def create_asset(
    session: AsyncSession,
    *,
    asset_id: uuid.UUID,
    user_id: uuid.UUID,
    name: str,
    fmt: str,
    path: str,
    size: int,
) -> Asset:
    """Insert an uploaded asset (its size already reserved), pending probing."""
    asset = Asset(
        id=asset_id,
        user_id=user_id,
        name=name,
        format=fmt,
        path=path,
        size_bytes=size,
        reserved_bytes=size,
        status=JobStatus.Pending,
    )
    session.add(asset)
    await session.flush()
    return asset


async def get_asset(session: AsyncSession, user_id: uuid.UUID, asset_id: uuid.UUID) -> Asset | None:
    """The user's asset or None."""
    stmt = sa.select(Asset).where(Asset.id == asset_id, Asset.user_id == user_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def delete_asset(session: AsyncSession, asset: Asset) -> list[str]:
    """Delete the asset row and give its storage back; returns paths to remove after commit."""
    await _give_back_storage(session, asset)
    await session.execute(sa.delete(Asset).where(Asset.id == asset.id))
    return [asset.path]


# --- customisation media -------------------------------------------------------------------------


class InvalidAssetReference(Refused):
    """A ``customizationMap`` entry names an asset that cannot be used (400
    ``invalid_customization``)."""

    def __init__(self, detail: str) -> None:
        super().__init__("bad_request", detail, "invalid_customization")


def src_refused(where: str) -> InvalidAssetReference:
    """The refusal of an entry that names a file itself (it would name server files)."""
    return InvalidAssetReference(
        f"{where}: 'src' is not accepted; upload the file with POST /asset/upload and pass "
        "its assetId"
    )


async def customization_asset(
    session: AsyncSession,
    user_id: uuid.UUID,
    asset_ref: object,
    where: str,
    layer: Layer | None = None,
) -> Asset:
    """The asset ``asset_ref`` that a customisation entry (``where`` names it) may use: the
    account's own, not deleted, completed, and of the kind ``layer`` takes when the layer is
    known (submission knows it; the preview and the worker resolve without the template).

    Raises:
        InvalidAssetReference: naming ``where`` and the asset: the assetId is not a UUID;
            not found (unknown, another account's, or deleted); not completed; of another
            kind than the layer takes.
    """
    try:
        asset_id = uuid.UUID(str(asset_ref))
    except ValueError:
        raise InvalidAssetReference(f"{where}: assetId {asset_ref!r} is not a UUID") from None
    asset = await get_asset(session, user_id, asset_id)
    if asset is None or asset.status == JobStatus.Deleted:
        raise InvalidAssetReference(f"{where}: asset {asset_id} not found")
    if asset.status != JobStatus.Completed:
        raise InvalidAssetReference(
            f"{where}: asset {asset_id} is {asset.status.value}, not completed"
        )
    if layer is not None and asset.kind != (kind := asset_kind_for_layer(layer)):
        has = asset.kind or "unknown"
        raise InvalidAssetReference(
            f"{where}: asset {asset_id} is {article(has)} {has}, but layer '{layer.id}' needs "
            f"{article(kind or 'no')} {kind or 'no'} asset"
        )
    return asset


async def resolve_customization_assets(
    session: AsyncSession,
    storage: Any,
    user_id: uuid.UUID,
    entries: Sequence[Any],
) -> list[dict[str, Any]]:
    """Turn ``assetId`` references into absolute ``src`` paths of the user's ready assets
    (``customization_asset``).

    Clients may not send ``src`` themselves (it would name server files). Entries are
    returned as plain dicts (camelCase keys kept) for ``renderer.template.customize``.

    Raises:
        InvalidAssetReference: ``entries`` is not a list of objects, an entry carries
            ``src``, or an ``assetId`` cannot be used (see ``customization_asset``).
    """
    if not isinstance(entries, list):
        raise InvalidAssetReference("customizationMap must be an array of objects")
    resolved: list[dict[str, Any]] = []
    for index, raw in enumerate(entries):
        if not isinstance(raw, dict):
            raise InvalidAssetReference(f"customizationMap[{index}] must be an object")
        entry = dict(raw)
        where = f"customizationMap[{index}] (layerId '{entry.get('layerId')}')"
        if "src" in entry:
            raise src_refused(where)
        if entry.get("assetId") is not None:
            asset = await customization_asset(session, user_id, entry["assetId"], where)
            entry["src"] = str(storage.abs(asset.path))
        resolved.append(entry)
    return resolved
