"""Campaigns, their template instances and linked audio groups (campaign mode, SPEC §3).

Store functions only flush; the request's session commits. Another account's ids are
reported as not found.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.errors import Refused, bad_request, not_found
from jobs.models.base import ACTIVE_STATUSES, utcnow
from jobs.models.library import AudioGroup
from jobs.models.render import Campaign, CampaignAudioGroup, Render, TemplateInstance
from jobs.renders.submission import (
    check_assets,
    manifest_lottie_text_names,
    owned_template,
    stored_template_model,
)
from renderer.errors import InvalidCustomization
from renderer.template.customize import validate_customizations


def _not_found(what: str, ident: uuid.UUID) -> Refused:
    return not_found(f"{what} {ident} not found")


async def create_campaign(session: AsyncSession, user_id: uuid.UUID, name: str) -> Campaign:
    """A new, empty campaign."""
    campaign = Campaign(id=uuid.uuid4(), user_id=user_id, name=name, created_at=utcnow())
    session.add(campaign)
    await session.flush()
    return campaign


async def get_campaign(
    session: AsyncSession, user_id: uuid.UUID, campaign_id: uuid.UUID
) -> Campaign:
    """The account's campaign.

    Raises:
        Refused: ``not_found``.
    """
    campaign = await session.scalar(
        sa.select(Campaign).where(Campaign.id == campaign_id, Campaign.user_id == user_id)
    )
    if campaign is None:
        raise _not_found("campaign", campaign_id)
    return campaign


async def list_campaigns(session: AsyncSession, user_id: uuid.UUID) -> list[Campaign]:
    """The account's campaigns, newest first."""
    rows = await session.scalars(
        sa.select(Campaign)
        .where(Campaign.user_id == user_id)
        .order_by(Campaign.created_at.desc(), Campaign.id)
    )
    return list(rows)


async def delete_campaign(
    session: AsyncSession, user_id: uuid.UUID, campaign_id: uuid.UUID
) -> None:
    """Delete a campaign with its instances and audio-group links (renders stay).

    Raises:
        Refused: ``not_found``; ``bad_request`` while a render of it is active.
    """
    campaign = await get_campaign(session, user_id, campaign_id)
    active = await session.scalar(
        sa.select(sa.func.count())
        .select_from(Render)
        .where(Render.campaign_id == campaign.id, Render.status.in_(list(ACTIVE_STATUSES)))
    )
    if active:
        raise bad_request(
            f"campaign {campaign_id} has {active} active render(s); cancel them first",
            "campaign_in_use",
        )
    # Explicit deletes (not only ON DELETE CASCADE) so the result does not depend on SQLite's
    # foreign_keys pragma.
    await session.execute(
        sa.update(Render)
        .where(Render.campaign_id == campaign.id)
        .values(campaign_id=None, template_instance_id=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        sa.delete(CampaignAudioGroup).where(CampaignAudioGroup.campaign_id == campaign.id)
    )
    await session.execute(
        sa.delete(TemplateInstance).where(TemplateInstance.campaign_id == campaign.id)
    )
    await session.execute(sa.delete(Campaign).where(Campaign.id == campaign.id))


async def create_template_instance(
    session: AsyncSession,
    user_id: uuid.UUID,
    campaign_id: uuid.UUID,
    *,
    template_id: uuid.UUID,
    name: str,
    customization_map: list[Any],
) -> TemplateInstance:
    """Add a template to a campaign with default customisations (validated like a render's).

    Raises:
        Refused: ``not_found`` (campaign or template); ``bad_request`` for a template
            not yet completed or an invalid customisation (naming the entry).
    """
    campaign = await get_campaign(session, user_id, campaign_id)
    template = await owned_template(session, user_id, template_id, "")
    model = stored_template_model(template, "")
    try:
        entries = validate_customizations(
            model, customization_map, lottie_text_layers=manifest_lottie_text_names(template)
        )
    except InvalidCustomization as err:
        raise bad_request(str(err), "invalid_customization") from None
    await check_assets(session, user_id, model, entries, "")
    instance = TemplateInstance(
        id=uuid.uuid4(),
        user_id=user_id,
        campaign_id=campaign.id,
        template_id=template.id,
        name=name,
        customization_map=[
            e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in entries
        ],
        created_at=utcnow(),
    )
    session.add(instance)
    await session.flush()
    return instance


async def list_template_instances(
    session: AsyncSession, user_id: uuid.UUID, campaign_id: uuid.UUID
) -> list[TemplateInstance]:
    """The campaign's template instances, oldest first."""
    campaign = await get_campaign(session, user_id, campaign_id)
    rows = await session.scalars(
        sa.select(TemplateInstance)
        .where(TemplateInstance.campaign_id == campaign.id)
        .order_by(TemplateInstance.created_at, TemplateInstance.id)
    )
    return list(rows)


async def linked_group_ids(session: AsyncSession, campaign_id: uuid.UUID) -> list[uuid.UUID]:
    """Audio groups linked to the campaign."""
    rows = await session.scalars(
        sa.select(CampaignAudioGroup.group_id)
        .where(CampaignAudioGroup.campaign_id == campaign_id)
        .order_by(CampaignAudioGroup.created_at)
    )
    return list(rows)


async def _owned_group(
    session: AsyncSession, user_id: uuid.UUID, group_id: uuid.UUID
) -> AudioGroup:
    group = await session.scalar(
        sa.select(AudioGroup).where(AudioGroup.id == group_id, AudioGroup.user_id == user_id)
    )
    if group is None:
        raise _not_found("audio group", group_id)
    return group


async def link_audio_group(
    session: AsyncSession, user_id: uuid.UUID, campaign_id: uuid.UUID, group_id: uuid.UUID
) -> None:
    """Link an audio group to a campaign (idempotent).

    Raises:
        Refused: ``not_found`` for the campaign or the group.
    """
    campaign = await get_campaign(session, user_id, campaign_id)
    group = await _owned_group(session, user_id, group_id)
    exists = await session.scalar(
        sa.select(sa.func.count())
        .select_from(CampaignAudioGroup)
        .where(
            CampaignAudioGroup.campaign_id == campaign.id,
            CampaignAudioGroup.group_id == group.id,
        )
    )
    if not exists:
        session.add(
            CampaignAudioGroup(campaign_id=campaign.id, group_id=group.id, created_at=utcnow())
        )
        await session.flush()


async def unlink_audio_group(
    session: AsyncSession, user_id: uuid.UUID, campaign_id: uuid.UUID, group_id: uuid.UUID
) -> None:
    """Remove the link between a campaign and an audio group.

    Raises:
        Refused: ``not_found`` for the campaign, or when the group is not linked.
    """
    campaign = await get_campaign(session, user_id, campaign_id)
    result = await session.execute(
        sa.delete(CampaignAudioGroup).where(
            CampaignAudioGroup.campaign_id == campaign.id,
            CampaignAudioGroup.group_id == group_id,
        )
    )
    if int(getattr(result, "rowcount", 0)) == 0:
        raise _not_found("linked audio group", group_id)
