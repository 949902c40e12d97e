"""Media assets for customisations: upload (image or video, kind found by probing), status,
delete. Assets count against the storage quota."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from api.deps import SessionDep, SettingsDep, StorageDep, UserDep
from api.errors import BadRequest, NotFound
from api.schemas.common import MessageResponse, error_responses, upload_body
from api.schemas.library import AssetStatusDto, AssetUploaded
from api.uploads import commit_and_remove, display_name, receive_upload, reserve_upload
from jobs.library import store as library
from jobs.messages import enqueue
from jobs.models import ACTIVE_STATUSES, Asset, new_id
from jobs.queues import ASSET_ACTOR
from jobs.renders import queries as render_store

router = APIRouter(prefix="/asset", tags=["assets"], responses=error_responses(401, "default"))
_EXT_RE = re.compile(r"^\.[a-z0-9]{1,5}$")


@router.post(
    "/upload",
    response_model=AssetUploaded,
    summary="Upload an image or video for customisations",
    responses=error_responses(400, 401, 413),
    openapi_extra=upload_body(),
)
async def upload_asset(
    request: Request,
    user: UserDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> AssetUploaded:
    """Multipart ``file`` → ``{assetId, status}``; poll ``/asset/{id}/status``."""
    async with receive_upload(request, session, user, settings, storage) as upload:
        received = upload.file
        filename = display_name(received.filename, "asset")
        suffix = Path(filename).suffix.lower()
        suffix = suffix if _EXT_RE.match(suffix) else ""
        await reserve_upload(session, user, received)
        asset_id = new_id()
        rel = storage.new_path("assets", user.id, asset_id, suffix)
        await library.create_asset(
            session,
            asset_id=asset_id,
            user_id=user.id,
            name=filename,
            fmt=suffix.lstrip("."),
            path=rel,
            size=received.size,
        )
        enqueue(session, ASSET_ACTOR, asset_id)
        await upload.keep(rel)
    return AssetUploaded(asset_id=asset_id, status="processing")


async def _owned(session: Any, user_id: uuid.UUID, asset_id: uuid.UUID) -> Asset:
    asset = await library.get_asset(session, user_id, asset_id)
    if asset is None:
        raise NotFound(f"Asset {asset_id} not found")
    return asset


@router.get(
    "/{asset_id}/status",
    response_model=AssetStatusDto,
    summary="Asset status",
    responses=error_responses(400, 404),
)
async def asset_status(asset_id: uuid.UUID, user: UserDep, session: SessionDep) -> AssetStatusDto:
    """Status, detected kind (image or video) and failure reason."""
    return AssetStatusDto.of(await _owned(session, user.id, asset_id))


@router.delete(
    "/{asset_id}",
    response_model=MessageResponse,
    summary="Delete an asset",
    responses=error_responses(400, 404),
)
async def delete_asset(
    asset_id: uuid.UUID, user: UserDep, session: SessionDep, storage: StorageDep
) -> MessageResponse:
    """Delete the file and give its storage back."""
    asset = await _owned(session, user.id, asset_id)
    if asset.status in ACTIVE_STATUSES:
        raise BadRequest("Asset is still being processed; try again shortly", "asset_busy")
    if await render_store.asset_in_use(session, asset):
        raise BadRequest("Asset is used by active renders; cancel them first", "asset_in_use")
    await commit_and_remove(session, storage, await library.delete_asset(session, asset))
    return MessageResponse(message="Asset deleted successfully")
