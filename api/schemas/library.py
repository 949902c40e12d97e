"""DTOs of the template, audio, audio-group and asset endpoints (reference field names)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from api.schemas.common import ApiModel, OptionalUtcDateTime, UtcDateTime, status_text
from jobs.models import Asset, Audio, AudioGroup, AudioJob, Template, TemplateJob


class TemplateUploaded(ApiModel):
    status: str = Field(examples=["uploaded"])
    template_id: uuid.UUID


class TemplateDto(ApiModel):
    id: uuid.UUID
    name: str
    size_bytes: int
    created_at: UtcDateTime

    @classmethod
    def of(cls, t: Template) -> TemplateDto:
        return cls(id=t.id, name=t.name, size_bytes=t.size_bytes, created_at=t.created_at)


class TemplateJobDto(ApiModel):
    job_id: uuid.UUID
    template_id: uuid.UUID
    template_name: str
    status: str = Field(examples=["processing"])
    stage: str = Field(examples=["extracting"])
    created_at: UtcDateTime
    completed_at: OptionalUtcDateTime = None
    reason: str | None = None
    code: str | None = None

    @classmethod
    def of(cls, job: TemplateJob, t: Template) -> TemplateJobDto:
        return cls(
            job_id=job.id,
            template_id=t.id,
            template_name=t.name,
            status=status_text(job.status),
            stage=job.stage,
            created_at=job.created_at,
            completed_at=job.completed_at,
            reason=job.reason,
            code=job.code,
        )


class TemplateDetail(ApiModel):
    """``GET /template/{id}``: the template and its manifest (size, fps, layers, audio)."""

    id: uuid.UUID
    name: str
    status: str
    size_bytes: int
    created_at: UtcDateTime
    manifest: dict[str, Any]


class PreviewRequest(ApiModel):
    frame: int = Field(default=0, ge=0)
    customization_map: list[dict[str, Any]] = Field(default_factory=list)


class AudioGroupDto(ApiModel):
    id: uuid.UUID
    name: str
    created_at: UtcDateTime

    @classmethod
    def of(cls, g: AudioGroup) -> AudioGroupDto:
        return cls(id=g.id, name=g.name, created_at=g.created_at)


class AudioGroupCreate(ApiModel):
    name: str = Field(min_length=1, max_length=255)


class AudioDto(ApiModel):
    """``AudioDto``; the group id is given under both names the reference uses."""

    id: uuid.UUID
    audio_asset_group_id: uuid.UUID
    audio_group_id: uuid.UUID
    name: str
    size_bytes: int
    created_at: UtcDateTime
    original_format: str
    status: str
    duration_seconds: float | None = None

    @classmethod
    def of(cls, a: Audio) -> AudioDto:
        return cls(
            id=a.id,
            audio_asset_group_id=a.group_id,
            audio_group_id=a.group_id,
            name=a.name,
            size_bytes=a.size_bytes,
            created_at=a.created_at,
            original_format=a.format,
            status=status_text(a.status),
            duration_seconds=a.duration_s,
        )


class AudioGroupDetail(AudioGroupDto):
    audios: list[AudioDto]


class AudioListItem(AudioDto):
    group_name: str


class AudioUploaded(ApiModel):
    audio_id: uuid.UUID
    job_id: uuid.UUID
    audio_group_id: uuid.UUID
    status: str = Field(examples=["processing"])


class AudioJobDto(ApiModel):
    job_id: uuid.UUID
    audio_id: uuid.UUID
    audio_asset_group_id: uuid.UUID
    audio_group_id: uuid.UUID
    audio_name: str
    status: str
    created_at: UtcDateTime
    completed_at: OptionalUtcDateTime = None
    reason: str | None = None
    code: str | None = None

    @classmethod
    def of(cls, job: AudioJob, a: Audio) -> AudioJobDto:
        return cls(
            job_id=job.id,
            audio_id=a.id,
            audio_asset_group_id=a.group_id,
            audio_group_id=a.group_id,
            audio_name=a.name,
            status=status_text(job.status),
            created_at=job.created_at,
            completed_at=job.completed_at,
            reason=job.reason,
            code=job.code,
        )


class AssetUploaded(ApiModel):
    asset_id: uuid.UUID
    status: str = Field(examples=["processing"])


class AssetStatusDto(ApiModel):
    asset_id: uuid.UUID
    name: str
    kind: str | None
    status: str
    size_bytes: int
    created_at: UtcDateTime
    completed_at: OptionalUtcDateTime = None
    reason: str | None = None
    code: str | None = None

    @classmethod
    def of(cls, a: Asset) -> AssetStatusDto:
        return cls(
            asset_id=a.id,
            name=a.name,
            kind=a.kind,
            status=status_text(a.status),
            size_bytes=a.size_bytes,
            created_at=a.created_at,
            completed_at=a.completed_at,
            reason=a.reason,
            code=a.code,
        )
