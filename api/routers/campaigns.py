"""Campaigns, template instances and linked audio groups (campaign mode of ``POST /render``)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api.deps import SessionDep, UserDep
from api.schemas.campaigns import (
    AudioGroupLink,
    CampaignCreate,
    CampaignDetail,
    CampaignDto,
    TemplateInstanceCreate,
    TemplateInstanceDto,
)
from api.schemas.common import MessageResponse, error_responses
from jobs.store import campaigns as store

router = APIRouter(prefix="/campaign", tags=["campaigns"])


@router.post("", response_model=CampaignDto, summary="Create a campaign")
async def create_campaign(body: CampaignCreate, session: SessionDep, user: UserDep) -> CampaignDto:
    """A new, empty campaign: add template instances and link audio groups to it."""
    return CampaignDto.of(await store.create_campaign(session, user.id, body.name))


@router.get("/all", response_model=list[CampaignDto], summary="List campaigns")
async def list_campaigns(session: SessionDep, user: UserDep) -> list[CampaignDto]:
    """The account's campaigns, newest first."""
    return [CampaignDto.of(c) for c in await store.list_campaigns(session, user.id)]


@router.get(
    "/{campaign_id}",
    response_model=CampaignDetail,
    summary="A campaign with its instances and audio groups",
    responses=error_responses(404),
)
async def get_campaign(
    campaign_id: uuid.UUID, session: SessionDep, user: UserDep
) -> CampaignDetail:
    """The campaign, its template instances and the ids of its linked audio groups."""
    campaign = await store.get_campaign(session, user.id, campaign_id)
    instances = await store.list_template_instances(session, user.id, campaign_id)
    groups = await store.linked_group_ids(session, campaign.id)
    return CampaignDetail(
        id=campaign.id,
        name=campaign.name,
        created_at=campaign.created_at,
        template_instances=[TemplateInstanceDto.of(i) for i in instances],
        audio_group_ids=groups,
    )


@router.delete(
    "/{campaign_id}",
    response_model=MessageResponse,
    summary="Delete a campaign",
    responses=error_responses(400, 404),
)
async def delete_campaign(
    campaign_id: uuid.UUID, session: SessionDep, user: UserDep
) -> MessageResponse:
    """Deletes the campaign, its template instances and audio-group links; its renders stay.
    Refused (400) while one of its renders is pending or processing."""
    await store.delete_campaign(session, user.id, campaign_id)
    return MessageResponse(message="Campaign deleted successfully")


@router.post(
    "/{campaign_id}/template-instances",
    response_model=TemplateInstanceDto,
    summary="Add a template instance with default customisations",
    responses=error_responses(400, 404),
)
async def create_template_instance(
    campaign_id: uuid.UUID, body: TemplateInstanceCreate, session: SessionDep, user: UserDep
) -> TemplateInstanceDto:
    """``customizationMap`` is validated against the template now and merged under each
    render's own customisations (the render's entries win)."""
    instance = await store.create_template_instance(
        session,
        user.id,
        campaign_id,
        template_id=body.template_id,
        name=body.name,
        customization_map=[entry.wire() for entry in body.customization_map],
    )
    return TemplateInstanceDto.of(instance)


@router.get(
    "/{campaign_id}/template-instances",
    response_model=list[TemplateInstanceDto],
    summary="The campaign's template instances",
    responses=error_responses(404),
)
async def list_template_instances(
    campaign_id: uuid.UUID, session: SessionDep, user: UserDep
) -> list[TemplateInstanceDto]:
    """Oldest first."""
    rows = await store.list_template_instances(session, user.id, campaign_id)
    return [TemplateInstanceDto.of(r) for r in rows]


@router.post(
    "/{campaign_id}/audio-groups/{group_id}",
    response_model=AudioGroupLink,
    summary="Link an audio group to the campaign",
    responses=error_responses(404),
)
async def link_audio_group(
    campaign_id: uuid.UUID, group_id: uuid.UUID, session: SessionDep, user: UserDep
) -> AudioGroupLink:
    """Audio of linked groups may be used in this campaign's renders. Idempotent."""
    await store.link_audio_group(session, user.id, campaign_id, group_id)
    return AudioGroupLink(campaign_id=campaign_id, audio_group_id=group_id, linked=True)


@router.delete(
    "/{campaign_id}/audio-groups/{group_id}",
    response_model=AudioGroupLink,
    summary="Unlink an audio group from the campaign",
    responses=error_responses(404),
)
async def unlink_audio_group(
    campaign_id: uuid.UUID, group_id: uuid.UUID, session: SessionDep, user: UserDep
) -> AudioGroupLink:
    """Renders already queued keep their audio."""
    await store.unlink_audio_group(session, user.id, campaign_id, group_id)
    return AudioGroupLink(campaign_id=campaign_id, audio_group_id=group_id, linked=False)
