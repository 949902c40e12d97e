"""Media assets for customisations: upload (image or video, kind found by probing), status,
delete. Assets count against the storage quota."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from fastapi import APIRouter, Request

from api.deps import SessionDep, SettingsDep, StorageDep, UserDep
from api.errors import BadRequest, NotFound
from api.routers.audio import UPLOAD_BODY
from api.schemas.common import MessageResponse, error_responses
from api.schemas.library import AssetStatusDto, AssetUploaded
from api.uploads import display_name, reserve_upload, stream_upload
from jobs.actors import ASSET_ACTOR
from jobs.messages import enqueue
from jobs.models import ACTIVE_STATUSES, new_id
from jobs.store import library
from jobs.store import renders as render_store

router = APIRouter(prefix="/asset", tags=["assets"])
_EXT_RE = re.compile(r"^\.[a-z0-9]{1,5}$")


@router.post(
    "/upload",
    response_model=AssetUploaded,
    summary="Upload an image or video for customisations",
    responses=error_responses(400, 401, 413),
    openapi_extra=UPLOAD_BODY,
)
async def upload_asset(
    request: Request,
    user: UserDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> AssetUploaded:
    """Multipart ``file`` → ``{assetId, status}``; poll ``/asset/{id}/status``."""
    form = await stream_upload(request, session, user, settings, storage)
    received = form.file
    assert received is not None
    final_path: Path | None = None
    try:
        if received.size == 0:
            raise BadRequest("The uploaded file is empty", "invalid_file_format")
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
        final_path = storage.move_into_place(received.path, rel)
        await session.commit()
    except BaseException:
        received.path.unlink(missing_ok=True)
        if final_path is not None:
            final_path.unlink(missing_ok=True)
        raise
    return AssetUploaded(asset_id=asset_id, status="processing")


@router.get(
    "/{asset_id}/status",
    response_model=AssetStatusDto,
    summary="Asset status",
    responses=error_responses(404),
)
async def asset_status(asset_id: uuid.UUID, user: UserDep, session: SessionDep) -> AssetStatusDto:
    """Status, detected kind (image or video) and failure reason."""
    asset = await library.get_asset(session, user.id, asset_id)
    if asset is None:
        raise NotFound(f"Asset {asset_id} not found")
    return AssetStatusDto.of(asset)


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
    asset = await library.get_asset(session, user.id, asset_id)
    if asset is None:
        raise NotFound(f"Asset {asset_id} not found")
    if asset.status in ACTIVE_STATUSES:
        raise BadRequest("Asset is still being processed; try again shortly", "asset_busy")
    if await render_store.asset_in_use(session, asset):
        raise BadRequest("Asset is used by active renders; cancel them first", "asset_in_use")
    paths = await library.delete_asset(session, asset)
    await session.commit()
    for path in paths:
        storage.remove(path)
    return MessageResponse(message="Asset deleted successfully")
