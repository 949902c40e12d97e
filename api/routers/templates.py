"""Template endpoints: upload, status, listings, manifest, preview, download, delete."""

from __future__ import annotations

import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response

from api.deps import SessionDep, SettingsDep, StorageDep, UserDep
from api.downloads import file_response
from api.errors import BadRequest, Conflict, NotFound
from api.schemas.common import (
    MAX_SKIP,
    MessageResponse,
    StorageStatus,
    error_responses,
    history_statuses,
    status_query,
    upload_body,
)
from api.schemas.library import (
    PreviewRequest,
    TemplateDetail,
    TemplateDto,
    TemplateJobDto,
    TemplateUploaded,
)
from api.signing import TemplateDownloadUser
from api.uploads import commit_and_remove, display_name, receive_upload, reserve_upload
from jobs.library import store as library
from jobs.messages import enqueue
from jobs.models import ACTIVE_STATUSES, JobStatus, Template, new_id
from jobs.queues import TEMPLATE_ACTOR
from jobs.quota import storage_status
from jobs.renders import queries as render_store

router = APIRouter(
    prefix="/template", tags=["templates"], responses=error_responses(401, "default")
)


@router.post(
    "/upload",
    response_model=TemplateUploaded,
    summary="Upload a template ZIP",
    responses=error_responses(400, 401, 413),
    openapi_extra=upload_body(name="Template name (default: the ZIP's file name)"),
)
async def upload_template(
    request: Request,
    user: UserDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> TemplateUploaded:
    """Stream the ZIP (multipart field ``file``) to storage and queue its processing."""
    async with receive_upload(
        request, session, user, settings, storage, fields=("name",)
    ) as upload:
        received = upload.file
        if not await anyio.to_thread.run_sync(zipfile.is_zipfile, received.path):
            raise BadRequest(
                "Invalid file format: template uploads must be ZIP archives", "invalid_file_format"
            )
        await reserve_upload(session, user, received)
        template_id = new_id()
        zip_rel = storage.new_path("templates", user.id, template_id, ".zip")
        filename = display_name(received.filename, "template.zip")
        name = upload.form.fields.get("name", "").strip()[:255] or Path(filename).stem or "template"
        _template, job = await library.create_template(
            session,
            template_id=template_id,
            user_id=user.id,
            name=name,
            original_filename=filename,
            zip_path=zip_rel,
            zip_bytes=received.size,
        )
        enqueue(session, TEMPLATE_ACTOR, job.id)
        await upload.keep(zip_rel)
    return TemplateUploaded(status="uploaded", template_id=template_id)


@router.get("/all", response_model=list[TemplateDto], summary="Ready templates")
async def list_templates(user: UserDep, session: SessionDep) -> list[TemplateDto]:
    """Templates that were processed successfully, newest first."""
    return [TemplateDto.of(t) for t in await library.list_completed_templates(session, user.id)]


@router.get("/active", response_model=list[TemplateJobDto], summary="Templates being processed")
async def active_templates(user: UserDep, session: SessionDep) -> list[TemplateJobDto]:
    """Processing jobs with their stage (uploaded, validating, extracting, analyzing)."""
    rows = await library.list_template_jobs(session, user.id, list(ACTIVE_STATUSES))
    return [TemplateJobDto.of(job, t) for job, t in rows]


@router.get(
    "/history",
    response_model=list[TemplateJobDto],
    summary="Processing history",
    responses=error_responses(400),
)
async def template_history(
    user: UserDep,
    session: SessionDep,
    status: Annotated[str | None, status_query("completed", "failed")] = None,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    take: Annotated[int, Query(ge=1, le=100)] = 50,
) -> list[TemplateJobDto]:
    """Completed and failed template jobs, newest first."""
    rows = await library.list_template_jobs(
        session, user.id, history_statuses(status), skip=skip, take=take
    )
    return [TemplateJobDto.of(job, t) for job, t in rows]


@router.get("/storage-status", response_model=StorageStatus, summary="Storage quota and usage")
async def template_storage_status(user: UserDep, session: SessionDep) -> StorageStatus:
    """Quota, used (including in-flight reservations) and available bytes."""
    await session.refresh(user)
    return StorageStatus.model_validate(storage_status(user))


async def _owned(session: Any, user_id: uuid.UUID, template_id: uuid.UUID) -> Template:
    template = await library.get_template(session, user_id, template_id)
    if template is None:
        raise NotFound(f"Template {template_id} not found")
    return template


@router.get(
    "/{template_id}/status",
    response_model=TemplateJobDto,
    summary="Processing status",
    responses=error_responses(400, 404),
)
async def template_status(
    template_id: uuid.UUID, user: UserDep, session: SessionDep
) -> TemplateJobDto:
    """The template's latest processing job (also accepts the job id)."""
    found = await library.template_job_for(session, user.id, template_id)
    if found is None:
        raise NotFound(f"Template {template_id} not found")
    return TemplateJobDto.of(*found)


@router.get(
    "/{template_id}",
    response_model=TemplateDetail,
    summary="Template manifest",
    responses=error_responses(400, 404, 409),
)
async def template_detail(
    template_id: uuid.UUID, user: UserDep, session: SessionDep
) -> TemplateDetail:
    """Size, fps, frames, duration, layers (with what can be customised) and audio tracks."""
    template = await _owned(session, user.id, template_id)
    if template.status != JobStatus.Completed or template.manifest is None:
        raise Conflict(
            f"Template {template_id} is {template.status.value}; its manifest exists once "
            "processing has completed",
            "template_not_ready",
        )
    return TemplateDetail(
        id=template.id,
        name=template.name,
        status=template.status,
        size_bytes=template.zip_bytes,
        storage_bytes=template.size_bytes,
        created_at=template.created_at,
        manifest=template.manifest,
    )


@router.get(
    "/{template_id}/download",
    summary="Download the original ZIP",
    responses={
        200: {"content": {"application/zip": {}}, "description": "The ZIP (206 for a range)"},
        **error_responses(400, 403, 404, 416),
    },
)
async def download_template(
    template_id: uuid.UUID,
    request: Request,
    user: TemplateDownloadUser,
    session: SessionDep,
    storage: StorageDep,
) -> Response:
    """The uploaded ZIP, byte-identical, with range support."""
    template = await _owned(session, user.id, template_id)
    if template.status == JobStatus.Failed:
        raise NotFound(f"Template {template_id} failed processing; its file was not kept")
    return file_response(
        request,
        storage.abs(template.zip_path),
        filename=template.original_filename,
        media_type="application/zip",
        etag_seed=str(template.id),
    )


@router.delete(
    "/{template_id}",
    response_model=MessageResponse,
    summary="Delete a template",
    responses=error_responses(400, 404),
)
async def delete_template(
    template_id: uuid.UUID, user: UserDep, session: SessionDep, storage: StorageDep
) -> MessageResponse:
    """Delete the ZIP, extracted files and history; refused while renders use it."""
    template = await _owned(session, user.id, template_id)
    if template.status in ACTIVE_STATUSES:
        raise BadRequest(
            "Template is still being processed; delete it once processing has finished",
            "template_busy",
        )
    if await render_store.template_in_use(session, template.id):
        raise BadRequest("Template is used by active renders; cancel them first", "template_in_use")
    await commit_and_remove(session, storage, await library.delete_template(session, template))
    return MessageResponse(message="Template deleted successfully")


async def _preview(
    template_id: uuid.UUID,
    frame: int,
    *,
    customization_map: list[dict[str, Any]],
    user: Any,
    session: Any,
    storage: Any,
) -> Response:
    template = await _owned(session, user.id, template_id)
    if template.status != JobStatus.Completed or not template.extracted_dir:
        raise Conflict(f"Template {template_id} is not processed yet", "template_not_ready")
    entries = await library.resolve_customization_assets(
        session, storage, user.id, customization_map
    )
    root = storage.abs(template.extracted_dir)
    await session.commit()

    def render() -> bytes:
        # The media stack is imported in the worker thread only, never at API import time.
        from renderer.render import render_frame_png
        from renderer.template.customize import validate_customizations
        from renderer.template.loader import load_template

        loaded = load_template(root, trusted=True)
        checked = validate_customizations(loaded.template, entries)
        with tempfile.TemporaryDirectory(prefix="velocity-preview-") as tmp:
            out = Path(tmp) / "frame.png"
            render_frame_png(loaded, checked, frame, out)
            return out.read_bytes()

    png = await anyio.to_thread.run_sync(render)
    return Response(content=png, media_type="image/png")


@router.get(
    "/{template_id}/preview",
    summary="Preview one frame as PNG",
    responses={200: {"content": {"image/png": {}}}, **error_responses(400, 404, 409)},
)
async def preview_template(
    template_id: uuid.UUID,
    user: UserDep,
    session: SessionDep,
    storage: StorageDep,
    frame: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Response:
    """Frame ``frame`` of the template without customisations."""
    return await _preview(
        template_id, frame, customization_map=[], user=user, session=session, storage=storage
    )


@router.post(
    "/{template_id}/preview",
    summary="Preview one frame with customisations",
    responses={200: {"content": {"image/png": {}}}, **error_responses(400, 404, 409)},
)
async def preview_template_custom(
    template_id: uuid.UUID,
    body: PreviewRequest,
    *,
    user: UserDep,
    session: SessionDep,
    storage: StorageDep,
    frame: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
) -> Response:
    """Frame ``frame`` (query or body) with a ``customizationMap`` applied."""
    index = frame if frame is not None else body.frame
    return await _preview(
        template_id,
        index,
        customization_map=[entry.wire() for entry in body.customization_map],
        user=user,
        session=session,
        storage=storage,
    )
