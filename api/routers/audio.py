"""Audio endpoints: details, status, download, delete, listings, and uploads."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from api.deps import SessionDep, SettingsDep, StorageDep, UserDep
from api.downloads import file_response
from api.errors import BadRequest, NotFound
from api.schemas.common import (
    MAX_SKIP,
    MessageResponse,
    error_responses,
    history_statuses,
    status_query,
    upload_body,
)
from api.schemas.library import AudioDto, AudioJobDto, AudioListItem, AudioUploaded
from api.signing import AudioDownloadUser
from api.uploads import commit_and_remove, display_name, receive_upload, reserve_upload
from jobs.library import store as library
from jobs.messages import enqueue
from jobs.models import ACTIVE_STATUSES, AudioGroup, JobStatus, new_id
from jobs.queues import AUDIO_ACTOR
from jobs.renders import queries as render_store

router = APIRouter(tags=["audio"], responses=error_responses(401, "default"))

AUDIO_FORMATS = {
    ".mp3": ("mp3", "audio/mpeg"),
    ".wav": ("wav", "audio/wav"),
    ".aac": ("aac", "audio/aac"),
    ".m4a": ("aac", "audio/aac"),
}
MEDIA_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "aac": "audio/aac"}


def _audio_format(filename: str, content_type: str | None) -> tuple[str, str]:
    suffix = Path(filename).suffix.lower()
    if suffix in AUDIO_FORMATS:
        return AUDIO_FORMATS[suffix]
    by_type = {
        "audio/mpeg": ".mp3",
        "audio/mp3": ".mp3",
        "audio/wav": ".wav",
        "audio/x-wav": ".wav",
        "audio/aac": ".aac",
    }
    if content_type and content_type.lower() in by_type:
        return AUDIO_FORMATS[by_type[content_type.lower()]]
    raise BadRequest(
        f"Unsupported audio file {filename!r}: upload MP3, WAV or AAC (.mp3, .wav, .aac, .m4a)",
        "unsupported_media",
    )


async def _form_group(session: Any, user_id: uuid.UUID, fields: dict[str, str]) -> uuid.UUID:
    """The group named by the form's ``groupId`` (or ``audioGroupId``), else the default."""
    raw = fields.get("groupId") or fields.get("audioGroupId")
    if not raw:
        return (await library.default_group(session, user_id)).id
    try:
        wanted = uuid.UUID(raw.strip())
    except ValueError:
        raise BadRequest(
            f"form field 'groupId': {raw!r} is not a UUID", "invalid_request"
        ) from None
    found = await library.get_group(session, user_id, wanted)
    if found is None:
        raise NotFound(f"Audio asset group {wanted} not found")
    return found.id


async def receive_audio(
    request: Request,
    *,
    user: Any,
    session: Any,
    settings: Any,
    storage: Any,
    group: AudioGroup | None,
) -> AudioUploaded:
    """Stream an audio upload into ``group`` (or the form's ``groupId``, or the default
    group) and queue its validation."""
    group_id = group.id if group else None
    # The group comes from the path (``/audio-asset-group/{id}/audio``) or the form.
    fields = () if group is not None else ("groupId", "audioGroupId")
    async with receive_upload(request, session, user, settings, storage, fields=fields) as upload:
        received = upload.file
        filename = display_name(received.filename, "audio")
        fmt, _media = _audio_format(filename, received.content_type)
        if group_id is None:
            group_id = await _form_group(session, user.id, upload.form.fields)
        await reserve_upload(session, user, received)
        audio_id = new_id()
        rel = storage.new_path("audio", user.id, audio_id, "." + fmt)
        _audio, job = await library.create_audio(
            session,
            audio_id=audio_id,
            user_id=user.id,
            group_id=group_id,
            name=filename,
            fmt=fmt,
            path=rel,
            size=received.size,
        )
        enqueue(session, AUDIO_ACTOR, job.id)
        await upload.keep(rel)
    return AudioUploaded(
        audio_id=audio_id, job_id=job.id, audio_group_id=group_id, status="processing"
    )


@router.post(
    "/audio/upload",
    response_model=AudioUploaded,
    summary="Upload audio (form field groupId optional: default group)",
    responses=error_responses(400, 401, 404, 413),
    openapi_extra=upload_body(
        groupId="Audio asset group id (default: the Default group)",
        audioGroupId="Same as groupId (the reference's other name for it)",
    ),
)
async def upload_audio(
    request: Request,
    user: UserDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> AudioUploaded:
    """Multipart ``file`` (MP3, WAV or AAC) and optional ``groupId``."""
    return await receive_audio(
        request, user=user, session=session, settings=settings, storage=storage, group=None
    )


@router.get("/audio/active", response_model=list[AudioJobDto], summary="Audio being processed")
async def active_audio(user: UserDep, session: SessionDep) -> list[AudioJobDto]:
    """Audio jobs still pending or processing."""
    rows = await library.list_audio_jobs(session, user.id, list(ACTIVE_STATUSES))
    return [AudioJobDto.of(job, a) for job, a in rows]


@router.get(
    "/audio/history",
    response_model=list[AudioJobDto],
    summary="Audio job history",
    responses=error_responses(400),
)
async def audio_history(
    user: UserDep,
    session: SessionDep,
    status: Annotated[str | None, status_query("completed", "failed")] = None,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    take: Annotated[int, Query(ge=1, le=100)] = 50,
) -> list[AudioJobDto]:
    """Completed and failed audio jobs, newest first."""
    statuses = history_statuses(status)
    rows = await library.list_audio_jobs(session, user.id, statuses, skip=skip, take=take)
    return [AudioJobDto.of(job, a) for job, a in rows]


@router.get(
    "/audio/list",
    response_model=list[AudioListItem],
    summary="Ready audio, all groups",
    responses=error_responses(400),
)
async def list_audio(
    *,
    user: UserDep,
    session: SessionDep,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    take: Annotated[int, Query(ge=1, le=100)] = 100,
    search: Annotated[str | None, Query(max_length=200)] = None,
    group_id: Annotated[uuid.UUID | None, Query(alias="groupId")] = None,
) -> list[AudioListItem]:
    """Completed audio with group names; ``search`` matches file or group names."""
    rows = await library.list_completed_audio(
        session, user.id, search=search, group_id=group_id, skip=skip, take=take
    )
    return [
        AudioListItem(**AudioDto.of(a).model_dump(by_alias=False), group_id=g.id, group_name=g.name)
        for a, g in rows
    ]


async def _owned(session: Any, user_id: uuid.UUID, audio_id: uuid.UUID) -> Any:
    audio = await library.get_audio(session, user_id, audio_id)
    if audio is None:
        raise NotFound(f"Audio {audio_id} not found")
    return audio


@router.get(
    "/audio/{audio_id}/status",
    response_model=AudioJobDto,
    summary="Audio processing status",
    responses=error_responses(400, 404),
)
async def audio_status(audio_id: uuid.UUID, user: UserDep, session: SessionDep) -> AudioJobDto:
    """The latest processing job of the audio (also accepts the job id)."""
    found = await library.audio_job_for(session, user.id, audio_id)
    if found is None:
        raise NotFound(f"Audio {audio_id} not found")
    return AudioJobDto.of(*found)


@router.get(
    "/audio/{audio_id}/download",
    summary="Download the original audio",
    responses={
        200: {
            "content": {"audio/mpeg": {}, "audio/wav": {}, "audio/aac": {}},
            "description": "The file in its original format (206 for a range)",
        },
        **error_responses(400, 403, 404, 416),
    },
)
async def download_audio(
    audio_id: uuid.UUID,
    request: Request,
    user: AudioDownloadUser,
    session: SessionDep,
    storage: StorageDep,
) -> Response:
    """The uploaded file with its original format's content type; ranges supported."""
    audio = await _owned(session, user.id, audio_id)
    if audio.status != JobStatus.Completed:
        raise NotFound(f"Audio {audio_id} is {audio.status.value}; only processed audio downloads")
    return file_response(
        request,
        storage.abs(audio.path),
        filename=audio.name,
        media_type=MEDIA_TYPES.get(audio.format, "application/octet-stream"),
        etag_seed=str(audio.id),
    )


@router.get(
    "/audio/{audio_id}",
    response_model=AudioDto,
    summary="Audio details",
    responses=error_responses(400, 404),
)
async def audio_detail(audio_id: uuid.UUID, user: UserDep, session: SessionDep) -> AudioDto:
    """Details of a processed audio file."""
    audio = await _owned(session, user.id, audio_id)
    if audio.status != JobStatus.Completed:
        raise NotFound(f"Audio {audio_id} is {audio.status.value}; see /audio/{audio_id}/status")
    return AudioDto.of(audio)


@router.delete(
    "/audio/{audio_id}",
    response_model=MessageResponse,
    summary="Delete audio",
    responses=error_responses(400, 404),
)
async def delete_audio(
    audio_id: uuid.UUID, user: UserDep, session: SessionDep, storage: StorageDep
) -> MessageResponse:
    """Delete the file and its history; refused while an active render uses it."""
    audio = await _owned(session, user.id, audio_id)
    if audio.status in ACTIVE_STATUSES:
        raise BadRequest("Audio is still being processed; try again shortly", "audio_busy")
    if await render_store.audio_in_use(session, audio.id):
        raise BadRequest("Audio is used by active renders; cancel them first", "audio_in_use")
    await commit_and_remove(session, storage, await library.delete_audio(session, audio))
    return MessageResponse(message="Audio deleted successfully")
