"""DTOs of the template, audio, audio-group and asset endpoints (reference field names).

Each model carries OpenAPI examples in wire form (camelCase), taken from the reference's
example bodies where it has one.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from api.schemas.common import (
    ApiModel,
    OptionalUtcDateTime,
    RequestModel,
    UtcDateTime,
    examples,
    status_text,
)
from api.schemas.renders import CustomizationMap
from jobs.models import Asset, Audio, AudioGroup, AudioJob, JobStatus, Template, TemplateJob

# The reference's example ids.
ID_1 = "123e4567-e89b-12d3-a456-426614174000"
ID_2 = "456e7890-e12b-34d5-a678-901234567000"
ID_3 = "789a0123-b45c-67d8-e901-234567890000"
ASSET_ID = "9b2f6c1e-4d3a-4f8b-a1c2-3d4e5f607182"


def _outcome(job: TemplateJob | AudioJob | Asset) -> dict[str, Any]:
    """The fields every job DTO reports about how its job went."""
    return {
        "status": status_text(job.status),
        "created_at": job.created_at,
        "completed_at": job.completed_at,
        "reason": job.reason,
        "code": job.code,
    }


class TemplateUploaded(ApiModel):
    model_config = examples({"status": "uploaded", "templateId": ID_1})

    status: str = Field(examples=["uploaded"])
    template_id: uuid.UUID


class TemplateDto(ApiModel):
    model_config = examples(
        {
            "id": ID_1,
            "name": "Product Promo",
            "sizeBytes": 52428800,
            "storageBytes": 61865984,
            "createdAt": "2024-01-15T10:30:00Z",
        }
    )

    id: uuid.UUID
    name: str
    size_bytes: int = Field(description="size of the uploaded ZIP (what a download returns)")
    storage_bytes: int = Field(
        description="storage the template uses against the quota: the ZIP plus its extracted files"
    )
    created_at: UtcDateTime

    @classmethod
    def of(cls, t: Template) -> TemplateDto:
        return cls(
            id=t.id,
            name=t.name,
            size_bytes=t.zip_bytes,
            storage_bytes=t.size_bytes,
            created_at=t.created_at,
        )


class TemplateJobDto(ApiModel):
    """``TemplateJobDto``; ``stage`` is uploaded, validating, extracting, analyzing or done."""

    model_config = examples(
        {
            "jobId": ID_1,
            "templateId": ID_2,
            "templateName": "Product Promo",
            "status": "completed",
            "stage": "done",
            "createdAt": "2024-01-15T10:30:00Z",
            "completedAt": "2024-01-15T10:30:45Z",
            "reason": None,
            "code": None,
        },
        {
            "jobId": ID_1,
            "templateId": ID_2,
            "templateName": "Product Promo",
            "status": "failed",
            "stage": "analyzing",
            "createdAt": "2024-01-15T10:30:00Z",
            "completedAt": "2024-01-15T10:30:15Z",
            "reason": "layer 'logo': images/logo.png is not in the ZIP",
            "code": "invalid_template",
        },
    )

    job_id: uuid.UUID
    template_id: uuid.UUID
    template_name: str
    status: JobStatus = Field(examples=["processing"])
    stage: str = Field(examples=["extracting"])
    created_at: UtcDateTime
    completed_at: OptionalUtcDateTime = None
    reason: str | None = None
    code: str | None = None

    @classmethod
    def of(cls, job: TemplateJob, t: Template) -> TemplateJobDto:
        return cls(
            job_id=job.id, template_id=t.id, template_name=t.name, stage=job.stage, **_outcome(job)
        )


class TemplateDetail(ApiModel):
    """``GET /template/{id}``: the template and its manifest (size, fps, layers, audio)."""

    model_config = examples(
        {
            "id": ID_1,
            "name": "Product Promo",
            "status": "completed",
            "sizeBytes": 52428800,
            "storageBytes": 61865984,
            "createdAt": "2024-01-15T10:30:00Z",
            "manifest": {
                "name": "Product Promo",
                "width": 1920,
                "height": 1080,
                "fps": [30, 1],
                "frames": 300,
                "durationSeconds": 10.0,
                "background": "#000000",
                "layers": [
                    {
                        "id": "title",
                        "type": "text",
                        "in": 0,
                        "out": 300,
                        "box": {"x": 160, "y": 120, "w": 1600, "h": 200},
                        "customizable": ["text", "color", "visible"],
                        "assetKind": None,
                        "defaults": {"visible": True, "text": "Summer Sale", "color": "#FFFFFF"},
                    }
                ],
                "audio": [{"id": "music", "src": "audio/music.mp3", "replaceable": True}],
                "fonts": ["fonts/Inter-Bold.ttf"],
            },
        }
    )

    id: uuid.UUID
    name: str
    status: JobStatus
    size_bytes: int = Field(description="size of the uploaded ZIP")
    storage_bytes: int = Field(description="storage used: the ZIP plus its extracted files")
    created_at: UtcDateTime
    manifest: dict[str, Any]


class PreviewRequest(RequestModel):
    """A frame to preview and the ``customizationMap`` to apply (as in ``POST /render``)."""

    model_config = examples(
        {
            "frame": 30,
            "customizationMap": [
                {"layerId": "title", "text": "Winter Sale", "color": "#FFCC00"},
                {"layerId": "logo", "assetId": ASSET_ID},
            ],
        }
    )

    frame: int = Field(default=0, ge=0, le=2**31 - 1)
    customization_map: CustomizationMap = Field(default_factory=list)


class AudioGroupDto(ApiModel):
    model_config = examples(
        {"id": ID_1, "name": "Background music", "createdAt": "2024-01-15T10:00:00Z"}
    )

    id: uuid.UUID
    name: str
    created_at: UtcDateTime

    @classmethod
    def of(cls, g: AudioGroup) -> AudioGroupDto:
        return cls(id=g.id, name=g.name, created_at=g.created_at)


class AudioGroupCreate(RequestModel):
    model_config = examples({"name": "Background music"})

    name: str = Field(min_length=1, max_length=255)


AUDIO_EXAMPLE: dict[str, Any] = {
    "id": ID_2,
    "audioAssetGroupId": ID_1,
    "audioGroupId": ID_1,
    "name": "background_music.mp3",
    "sizeBytes": 5242880,
    "createdAt": "2024-01-15T10:30:00Z",
    "originalFormat": "mp3",
    "status": "completed",
    "durationSeconds": 31.5,
}


class AudioDto(ApiModel):
    """``AudioDto``; the group id is given under both names the reference uses."""

    model_config = examples(AUDIO_EXAMPLE)

    id: uuid.UUID
    audio_asset_group_id: uuid.UUID
    audio_group_id: uuid.UUID
    name: str
    size_bytes: int
    created_at: UtcDateTime
    original_format: str
    status: JobStatus
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
    model_config = examples(
        {
            "id": ID_1,
            "name": "Background music",
            "createdAt": "2024-01-15T10:00:00Z",
            "audios": [AUDIO_EXAMPLE],
        }
    )

    audios: list[AudioDto]


class AudioListItem(AudioDto):
    """An ``/audio/list`` item: the audio with its group (``groupId``, ``groupName``)."""

    model_config = examples({**AUDIO_EXAMPLE, "groupId": ID_1, "groupName": "Background music"})

    group_id: uuid.UUID
    group_name: str


class AudioUploaded(ApiModel):
    model_config = examples(
        {
            "audioId": ID_2,
            "jobId": ID_3,
            "audioGroupId": ID_1,
            "status": "processing",
        }
    )

    audio_id: uuid.UUID
    job_id: uuid.UUID
    audio_group_id: uuid.UUID
    status: JobStatus = Field(examples=["processing"])


class AudioJobDto(ApiModel):
    """``AudioJobDto``; the group id is given under both names the reference uses."""

    model_config = examples(
        {
            "jobId": ID_3,
            "audioId": ID_2,
            "audioAssetGroupId": ID_1,
            "audioGroupId": ID_1,
            "audioName": "background_music.mp3",
            "status": "completed",
            "createdAt": "2024-01-15T10:30:00Z",
            "completedAt": "2024-01-15T10:30:15Z",
            "reason": None,
            "code": None,
        },
        {
            "jobId": ID_3,
            "audioId": ID_2,
            "audioAssetGroupId": ID_1,
            "audioGroupId": ID_1,
            "audioName": "corrupted_audio.aac",
            "status": "failed",
            "createdAt": "2024-01-15T10:30:00Z",
            "completedAt": "2024-01-15T10:30:05Z",
            "reason": "Unsupported audio codec",
            "code": "unsupported_media",
        },
    )

    job_id: uuid.UUID
    audio_id: uuid.UUID
    audio_asset_group_id: uuid.UUID
    audio_group_id: uuid.UUID
    audio_name: str
    status: JobStatus
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
            **_outcome(job),
        )


class AssetUploaded(ApiModel):
    model_config = examples({"assetId": ASSET_ID, "status": "processing"})

    asset_id: uuid.UUID
    status: JobStatus = Field(examples=["processing"])


class AssetStatusDto(ApiModel):
    """An uploaded image or video; ``kind`` is decided by probing once processing ends."""

    model_config = examples(
        {
            "assetId": ASSET_ID,
            "name": "logo.png",
            "kind": "image",
            "status": "completed",
            "sizeBytes": 48213,
            "createdAt": "2024-01-15T10:30:00Z",
            "completedAt": "2024-01-15T10:30:02Z",
            "reason": None,
            "code": None,
        }
    )

    asset_id: uuid.UUID
    name: str
    kind: str | None
    status: JobStatus
    size_bytes: int
    created_at: UtcDateTime
    completed_at: OptionalUtcDateTime = None
    reason: str | None = None
    code: str | None = None

    @classmethod
    def of(cls, a: Asset) -> AssetStatusDto:
        return cls(asset_id=a.id, name=a.name, kind=a.kind, size_bytes=a.size_bytes, **_outcome(a))
