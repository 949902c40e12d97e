"""Campaign DTOs (campaigns, their template instances and audio group links), camelCase."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from api.schemas.common import ApiModel, RequestModel, UtcDateTime
from api.schemas.renders import CustomizationMap
from jobs.models.render import Campaign, TemplateInstance


class CampaignCreate(RequestModel):
    name: str = Field(min_length=1, max_length=255, examples=["Spring sale"])


class TemplateInstanceCreate(RequestModel):
    template_id: uuid.UUID
    name: str = Field(min_length=1, max_length=255, examples=["Promo for Anna"])
    customization_map: CustomizationMap = Field(default_factory=list)


class TemplateInstanceDto(ApiModel):
    id: uuid.UUID
    campaign_id: uuid.UUID
    template_id: uuid.UUID
    name: str
    customization_map: list[dict[str, Any]]
    created_at: UtcDateTime

    @classmethod
    def of(cls, row: TemplateInstance) -> TemplateInstanceDto:
        return cls(
            id=row.id,
            campaign_id=row.campaign_id,
            template_id=row.template_id,
            name=row.name,
            customization_map=list(row.customization_map or []),
            created_at=row.created_at,
        )


class CampaignDto(ApiModel):
    id: uuid.UUID
    name: str
    created_at: UtcDateTime

    @classmethod
    def of(cls, row: Campaign) -> CampaignDto:
        return cls(id=row.id, name=row.name, created_at=row.created_at)


class CampaignDetail(CampaignDto):
    """A campaign with its template instances and linked audio group ids."""

    template_instances: list[TemplateInstanceDto]
    audio_group_ids: list[uuid.UUID]


class AudioGroupLink(ApiModel):
    campaign_id: uuid.UUID
    audio_group_id: uuid.UUID
    linked: bool
