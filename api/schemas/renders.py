"""Render DTOs, camelCase as in the reference (plus documented extensions)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from api.schemas.common import (
    ApiModel,
    OptionalUtcDateTime,
    RequestModel,
    StrictFields,
    UtcDateTime,
    examples,
)
from jobs.models.base import JobStatus
from jobs.models.render import Render
from jobs.renders.base import TERMINAL
from jobs.renders.submission import MAX_BATCH, RenderSpec
from renderer.encode import config as _encoder

MAX_CUSTOMIZATIONS = 1000
MAX_TEXT = 10_000
MAX_LOTTIE_TEXTS = 200

_ENCODER_EXAMPLE = {"bitrate": 5_000_000, "codec": 0, "preset": 2}
_RENDER_ID = "123e4567-e89b-12d3-a456-426614174000"
_TEMPLATE_ID = "550e8400-e29b-41d4-a716-446655440000"


class JobInfo(RequestModel):
    """Half-open template frame range ``[fStart, fEnd)`` in template frames; ``fStart <
    fEnd``. Defaults: the whole template."""

    f_start: int | None = Field(
        default=None, alias="fStart", ge=0, le=2**31 - 1, examples=[0], description="first frame"
    )
    f_end: int | None = Field(
        default=None,
        alias="fEnd",
        ge=0,
        le=2**31 - 1,
        examples=[300],
        description="frame after the last one (exclusive)",
    )


class EncoderConfig(StrictFields, _encoder.EncoderConfig):
    """``EncoderConfig`` (SPEC section 6). ``bitrate`` is bits per second and required.
    ``codec``: 0 H.264, 1 H.265, 2 AV1. ``preset``: 0 slowest/smallest ... 5 fastest/largest.
    ``rc``: 0 CBR, 1 VBR, 2 CQP (with ``qp``), 3 CRF (with ``crf``). ``gop``: frames between
    keyframes; ``idr``: frames between IDR frames, a multiple of ``gop``. ``profile`` and
    ``level`` use FFmpeg's numbering (H.264 profiles 66, 77, 100; level 41 = 4.1).
    ``fpsNum``/``fpsDenum``: output frame rate (1-240 fps). ``res``: ``[width, height]``,
    even, 16-8192, rendered at that size."""

    model_config = ConfigDict(
        populate_by_name=False, validate_by_name=False, validate_by_alias=True
    )

    # Required in a render request (the reference's EncoderConfig), unlike in the CLI.
    bitrate: int = Field(  # type: ignore[assignment]
        ge=_encoder.MIN_BITRATE,
        le=_encoder.MAX_BITRATE,
        description="bits per second (not bytes), e.g. 5000000",
    )


LayerId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
LongText = Annotated[str, StringConstraints(max_length=MAX_TEXT)]


class CustomizationEntry(RequestModel):
    """One ``customizationMap`` entry: the layer it targets and what to set. What each layer
    type takes: text ``text``, ``color``, ``visible``; solid ``color``, ``visible``; image and
    video ``assetId`` (an uploaded asset of that kind), ``visible``; lottie ``lottieText``
    (text layer name inside the Lottie file -> text), ``visible``. A property the layer does
    not take is a 400 naming the entry. Entries carry no type tag (the layer's type comes
    from the template), so this is one object rather than a union."""

    model_config = examples({"layerId": "headline", "text": "Hi Anna!"})

    layer_id: LayerId = Field(description="id of a layer of the template")
    text: LongText | None = Field(default=None, description="text layers: the new text")
    color: Annotated[str, StringConstraints(max_length=9)] | None = Field(
        default=None, description="text and solid layers: #rgb, #rrggbb or #rrggbbaa"
    )
    asset_id: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="image and video layers: an uploaded asset's id"
    )
    visible: bool | None = Field(default=None, description="any layer: show or hide it")
    lottie_text: dict[ShortText, LongText] | None = Field(
        default=None,
        max_length=MAX_LOTTIE_TEXTS,
        description="lottie layers: text layer name inside the animation -> new text",
    )
    # Not part of the API: accepted here only so the service can say why it refuses it.
    src: SkipJsonSchema[Annotated[str, StringConstraints(max_length=4096)] | None] = Field(
        default=None, exclude=True
    )

    def wire(self) -> dict[str, Any]:
        """The entry as sent (explicitly given fields only, camelCase)."""
        out = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        if "src" in self.model_fields_set:
            out["src"] = self.src
        return out


CustomizationMap = Annotated[
    list[CustomizationEntry],
    Field(
        max_length=MAX_CUSTOMIZATIONS,
        examples=[[{"layerId": "headline", "text": "Hi Anna!"}]],
        description="customisations applied on top of the template (later entries win)",
    ),
]


class RenderRequest(RequestModel):
    """``RenderRequest``: exactly one of ``templateId`` (direct) or ``templateInstanceId``
    (campaign). ``webhookUrl`` (extension) receives a signed POST on every terminal state."""

    model_config = examples(
        {"templateId": _TEMPLATE_ID, "name": "DirectVideo", "encoderConfig": _ENCODER_EXAMPLE},
        {
            "templateId": _TEMPLATE_ID,
            "name": "VideoName",
            "audioId": "789a0123-b45c-67d8-e901-234567890000",
            "jobInfo": {"fStart": 0, "fEnd": 300},
            "encoderConfig": {
                "fpsNum": 30,
                "res": [1920, 1080],
                "bitrate": 5_000_000,
                "codec": 0,
                "preset": 2,
            },
            "customizationMap": [
                {"layerId": "headline", "text": "Hi Anna!"},
                {"layerId": "photo", "assetId": "5b0c1f9e-6d3a-4c52-9a57-0d7f3c1e2b4a"},
            ],
        },
    )

    template_instance_id: uuid.UUID | None = Field(
        default=None, description="campaign render: the template instance"
    )
    template_id: uuid.UUID | None = Field(default=None, description="direct render: the template")
    name: str = Field(min_length=1, max_length=255, examples=["DirectVideo"])
    audio_id: uuid.UUID | None = Field(
        default=None, description="audio replacing the template's replaceable track"
    )
    job_info: JobInfo | None = None
    encoder_config: EncoderConfig = Field(
        description="bitrate (bits per second) is required", examples=[_ENCODER_EXAMPLE]
    )
    customization_map: CustomizationMap = Field(default_factory=list)
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="receives a signed POST (X-Velocity-Signature) on every terminal state",
    )
    cache: bool = Field(
        default=True,
        description="false: render every span afresh, neither reading nor filling the span "
        "cache (the output is the same either way)",
    )

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an absolute http:// or https:// URL")
        return value

    def to_spec(self) -> RenderSpec:
        """The store's view of this request."""
        job = self.job_info or JobInfo()
        return RenderSpec(
            name=self.name,
            template_id=self.template_id,
            template_instance_id=self.template_instance_id,
            audio_id=self.audio_id,
            f_start=job.f_start,
            f_end=job.f_end,
            encoder_config=self.encoder_config.model_dump(
                mode="json", by_alias=True, exclude_unset=True
            ),
            customization_map=[entry.wire() for entry in self.customization_map],
            webhook_url=self.webhook_url,
            cache=self.cache,
        )


class RenderBatchRequest(RequestModel):
    """``POST /render/batch``: up to 100 requests, validated all-or-nothing."""

    items: list[RenderRequest] = Field(min_length=1, max_length=MAX_BATCH)


class RenderCreated(ApiModel):
    model_config = examples({"renderId": _RENDER_ID, "status": "pending"})

    render_id: uuid.UUID
    status: JobStatus = Field(examples=["pending"])


class RenderBatchCreated(ApiModel):
    """One ``{renderId, status}`` per request item, in order."""

    items: list[RenderCreated]


def download_url(render: Render) -> str | None:
    """The relative download URL of a completed render."""
    if render.status != JobStatus.Completed:
        return None
    return f"/render/{render.id}/download"


class RenderJobDto(ApiModel):
    """``RenderJobDto`` plus ``progress`` (0-100), frame counts, ``failureCode``,
    ``encoderUsed``, ``audioId`` and ``createdAt``."""

    model_config = examples(
        {
            "renderId": _RENDER_ID,
            "name": "MyVideo",
            "templateInstanceId": None,
            "campaignId": None,
            "templateInstanceName": None,
            "templateId": _TEMPLATE_ID,
            "templateName": "MyTemplate",
            "isDirectRender": True,
            "status": "completed",
            "progress": 100,
            "framesDone": 300,
            "framesTotal": 300,
            "videoDownloadUrl": f"/render/{_RENDER_ID}/download",
            "createdAt": "2024-01-15T10:29:58Z",
            "startedAt": "2024-01-15T10:30:00Z",
            "completedAt": "2024-01-15T10:35:30Z",
            "renderTimeMilliseconds": 330000,
            "sizeBytes": 15728640,
            "reason": None,
            "failureCode": None,
            "encoderUsed": "libx264",
            "audioId": None,
            "cachedFrames": 0,
        }
    )

    render_id: uuid.UUID
    name: str
    template_instance_id: uuid.UUID | None
    campaign_id: uuid.UUID | None
    template_instance_name: str | None
    template_id: uuid.UUID | None
    template_name: str | None
    is_direct_render: bool
    status: JobStatus
    progress: int = Field(ge=0, le=100)
    frames_done: int
    frames_total: int
    video_download_url: str | None
    created_at: UtcDateTime
    started_at: OptionalUtcDateTime
    completed_at: OptionalUtcDateTime
    render_time_milliseconds: int | None
    size_bytes: int | None
    reason: str | None
    failure_code: str | None
    encoder_used: str | None
    audio_id: uuid.UUID | None
    cached_frames: int = Field(
        default=0,
        description="output frames taken from the span cache instead of rendered (they are "
        "not charged: the render is charged the worker time it used)",
    )

    @classmethod
    def of(cls, render: Render) -> RenderJobDto:
        terminal = render.status in TERMINAL
        return cls(
            render_id=render.id,
            name=render.name,
            template_instance_id=render.template_instance_id,
            campaign_id=render.campaign_id,
            template_instance_name=render.template_instance_name,
            template_id=render.template_id,
            template_name=render.template_name,
            is_direct_render=render.template_instance_name is None,
            status=render.status,
            progress=render.progress,
            frames_done=render.frames_done,
            frames_total=render.frames_total,
            video_download_url=download_url(render),
            created_at=render.created_at,
            started_at=render.started_at,
            completed_at=render.completed_at,
            render_time_milliseconds=render.render_time_ms if terminal else None,
            size_bytes=render.size_bytes if render.status == JobStatus.Completed else None,
            reason=render.reason if render.status != JobStatus.Completed else None,
            failure_code=render.failure_code,
            encoder_used=render.encoder_used,
            audio_id=render.audio_id,
            cached_frames=render.cached_frames,
        )


RenderJob = RenderJobDto  # the name before the DTOs took the reference's names


class RenderDto(ApiModel):
    """``RenderDto``: a completed render."""

    render_id: uuid.UUID
    template_instance_id: uuid.UUID | None
    template_id: uuid.UUID | None
    campaign_id: uuid.UUID | None
    name: str
    video_download_url: str | None
    template_instance_name: str | None
    template_name: str | None
    is_direct_render: bool
    rendered_at: OptionalUtcDateTime
    render_time_milliseconds: int
    size_bytes: int | None
    encoder_used: str | None

    @classmethod
    def of(cls, render: Render) -> RenderDto:
        return cls(
            render_id=render.id,
            template_instance_id=render.template_instance_id,
            template_id=render.template_id,
            campaign_id=render.campaign_id,
            name=render.name,
            video_download_url=download_url(render),
            template_instance_name=render.template_instance_name,
            template_name=render.template_name,
            is_direct_render=render.template_instance_name is None,
            rendered_at=render.completed_at,
            render_time_milliseconds=render.render_time_ms,
            size_bytes=render.size_bytes,
            encoder_used=render.encoder_used,
        )


class RenderTimeBudgetStatusDto(ApiModel):
    """``RenderTimeBudgetStatusDto``. As for storage, time reserved by pending and processing
    renders counts as used; ``chargedMilliseconds`` and ``reservedMilliseconds`` split it."""

    model_config = examples(
        {
            "usedMilliseconds": 180000,
            "remainingMilliseconds": 120000,
            "totalMilliseconds": 300000,
            "usagePercentage": 60.0,
            "chargedMilliseconds": 150000,
            "reservedMilliseconds": 30000,
        }
    )

    used_milliseconds: int
    remaining_milliseconds: int
    total_milliseconds: int
    usage_percentage: float
    charged_milliseconds: int
    reserved_milliseconds: int


RenderTimeBudgetStatus = RenderTimeBudgetStatusDto
