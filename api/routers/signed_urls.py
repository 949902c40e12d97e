"""``POST /{render,template,audio}/{id}/signed-url``: an expiring download link that needs no
``X-API-Key`` (for a ``<video>`` element, a player or a CDN). See ``api.signing``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import SessionDep, UserDep
from api.errors import NotFound
from api.schemas.common import ApiModel, UtcDateTime, error_responses, examples
from api.signing import DEFAULT_TTL_S, MAX_TTL_S, SecretDep, sign_download
from jobs.library import store as library
from jobs.models import JobStatus
from jobs.renders import queries as render_queries

router = APIRouter(tags=["signed URLs"], responses=error_responses(400, 401, 404, "default"))

_TTL = Query(ge=1, le=MAX_TTL_S, description="Seconds the link stays valid (default one hour)")


class SignedUrlDto(ApiModel):
    """A relative download URL carrying ``expires`` and ``signature``; ranges and HEAD work
    on it like on the keyed download."""

    model_config = examples(
        {
            "url": "/render/123e4567-e89b-12d3-a456-426614174000/download"
            "?expires=1705314600&signature=3f1c…",
            "expires": 1705314600,
            "expiresAt": "2024-01-15T10:30:00Z",
        }
    )

    url: str
    expires: int
    expires_at: UtcDateTime


def _dto(secret: bytes, kind: str, object_id: uuid.UUID, ttl: int) -> SignedUrlDto:
    signed = sign_download(secret, kind, object_id, ttl)
    return SignedUrlDto(
        url=signed.url,
        expires=signed.expires,
        expires_at=datetime.fromtimestamp(signed.expires, UTC),
    )


@router.post(
    "/render/{render_id}/signed-url",
    response_model=SignedUrlDto,
    summary="A signed, expiring link to a completed render's MP4",
)
async def render_signed_url(
    render_id: uuid.UUID,
    session: SessionDep,
    user: UserDep,
    secret: SecretDep,
    ttl: Annotated[int, _TTL] = DEFAULT_TTL_S,
) -> SignedUrlDto:
    """404 while the render is not completed (there is nothing to download yet)."""
    render = await render_queries.get_render(session, user.id, render_id)
    if render.status != JobStatus.Completed:
        raise NotFound(
            f"render {render_id} is {render.status.value}, not completed; nothing to download",
            "render_not_completed",
        )
    return _dto(secret, "render", render.id, ttl)


@router.post(
    "/template/{template_id}/signed-url",
    response_model=SignedUrlDto,
    summary="A signed, expiring link to a template's ZIP",
)
async def template_signed_url(
    template_id: uuid.UUID,
    session: SessionDep,
    user: UserDep,
    secret: SecretDep,
    ttl: Annotated[int, _TTL] = DEFAULT_TTL_S,
) -> SignedUrlDto:
    """404 for a template that failed processing (its ZIP was not kept)."""
    template = await library.get_template(session, user.id, template_id)
    if template is None or template.status == JobStatus.Failed:
        raise NotFound(f"Template {template_id} not found")
    return _dto(secret, "template", template.id, ttl)


@router.post(
    "/audio/{audio_id}/signed-url",
    response_model=SignedUrlDto,
    summary="A signed, expiring link to an audio file",
)
async def audio_signed_url(
    audio_id: uuid.UUID,
    session: SessionDep,
    user: UserDep,
    secret: SecretDep,
    ttl: Annotated[int, _TTL] = DEFAULT_TTL_S,
) -> SignedUrlDto:
    """404 while the audio is not processed."""
    audio = await library.get_audio(session, user.id, audio_id)
    if audio is None or audio.status != JobStatus.Completed:
        raise NotFound(f"Audio {audio_id} not found or not processed")
    return _dto(secret, "audio", audio.id, ttl)
