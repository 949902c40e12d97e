"""Audio asset groups (SPEC §3): create, list, show with audio, delete, upload into."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request

from api.deps import SessionDep, SettingsDep, StorageDep, UserDep
from api.errors import BadRequest, NotFound
from api.routers.audio import receive_audio
from api.schemas.common import MessageResponse, error_responses, upload_body
from api.schemas.library import (
    AudioDto,
    AudioGroupCreate,
    AudioGroupDetail,
    AudioGroupDto,
    AudioUploaded,
)
from api.uploads import commit_and_remove
from jobs.library import store as library
from jobs.models import AudioGroup
from jobs.renders import queries as render_store

router = APIRouter(
    prefix="/audio-asset-group", tags=["audio groups"], responses=error_responses(401, "default")
)


async def _owned(session: Any, user_id: uuid.UUID, group_id: uuid.UUID) -> AudioGroup:
    group = await library.get_group(session, user_id, group_id)
    if group is None:
        raise NotFound(f"Audio asset group {group_id} not found")
    return group


@router.post(
    "",
    response_model=AudioGroupDto,
    summary="Create an audio asset group",
    responses=error_responses(400),
)
async def create_group(body: AudioGroupCreate, user: UserDep, session: SessionDep) -> AudioGroupDto:
    """``{name}`` → ``{id, name, createdAt}``."""
    return AudioGroupDto.of(await library.create_group(session, user.id, body.name.strip()))


@router.get("", response_model=list[AudioGroupDto], summary="List audio asset groups")
async def list_groups(user: UserDep, session: SessionDep) -> list[AudioGroupDto]:
    """The account's groups, oldest first."""
    return [AudioGroupDto.of(g) for g in await library.list_groups(session, user.id)]


@router.get(
    "/{group_id}",
    response_model=AudioGroupDetail,
    summary="A group with its audio",
    responses=error_responses(400, 404),
)
async def get_group(group_id: uuid.UUID, user: UserDep, session: SessionDep) -> AudioGroupDetail:
    """The group and every audio in it (any status)."""
    group = await _owned(session, user.id, group_id)
    audios = await library.audios_in_group(session, user.id, group.id)
    return AudioGroupDetail(
        id=group.id,
        name=group.name,
        created_at=group.created_at,
        audios=[AudioDto.of(a) for a in audios],
    )


@router.delete(
    "/{group_id}",
    response_model=MessageResponse,
    summary="Delete a group and its audio",
    responses=error_responses(400, 404),
)
async def delete_group(
    group_id: uuid.UUID, user: UserDep, session: SessionDep, storage: StorageDep
) -> MessageResponse:
    """Refused (400) while any of its audio is used by an active render."""
    group = await _owned(session, user.id, group_id)
    for audio in await library.audios_in_group(session, user.id, group.id):
        if await render_store.audio_in_use(session, audio.id):
            raise BadRequest(
                f"Audio {audio.id} ({audio.name}) of this group is used by active renders; "
                "cancel them first",
                "audio_in_use",
            )
    await commit_and_remove(session, storage, await library.delete_group(session, group))
    return MessageResponse(message="Audio asset group deleted successfully")


@router.post(
    "/{group_id}/audio",
    response_model=AudioUploaded,
    summary="Upload audio into a group",
    responses=error_responses(400, 404, 413),
    openapi_extra=upload_body(),
)
async def upload_into_group(
    group_id: uuid.UUID,
    request: Request,
    *,
    user: UserDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> AudioUploaded:
    """Multipart ``file`` (MP3, WAV or AAC) → ``{audioId, status: "processing"}``."""
    group = await _owned(session, user.id, group_id)
    return await receive_audio(
        request, user=user, session=session, settings=settings, storage=storage, group=group
    )
