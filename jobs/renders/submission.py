"""Render submission: validation of each request, the budget/storage estimate, the
reservations and the concurrency check, all or nothing for a batch."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from jobs import budget, quota, webhooks
from jobs.errors import Refused, bad_request, not_found
from jobs.library import store as library
from jobs.messages import enqueue
from jobs.models.account import User
from jobs.models.base import JobStatus, utcnow
from jobs.models.library import Audio, Template
from jobs.models.render import CampaignAudioGroup, Render, TemplateInstance
from jobs.queues import RENDER_ACTOR
from jobs.renders.base import (
    ACTIVE,
)
from jobs.settings import Settings
from renderer.encode.config import Codec, EncoderConfig
from renderer.errors import InvalidCustomization, InvalidEncoderConfig, InvalidFrameRange
from renderer.plan import OutputPlan
from renderer.template.customize import validate_customizations
from renderer.template.model import LayerTooLarge
from renderer.template.model import Template as TemplateModel

MAX_BATCH = 100
# How long submission waits for a webhook host to resolve before refusing it.
WEBHOOK_RESOLVE_TIMEOUT_S = 3.0
MIN_ESTIMATE_MS = 1000
# Rough software cost per output pixel (ns) by codec, used only for the budget estimate.
_NS_PER_PIXEL = {Codec.H264: 25, Codec.H265: 70, Codec.AV1: 50}
_AUDIO_BITRATE = 192_000
_CONTAINER_OVERHEAD = 64 * 1024


@dataclass(frozen=True)
class RenderSpec:
    """One render request as the API parsed it (field names as in the reference)."""

    name: str
    template_id: uuid.UUID | None = None
    template_instance_id: uuid.UUID | None = None
    audio_id: uuid.UUID | None = None
    f_start: int | None = None
    f_end: int | None = None
    encoder_config: dict[str, Any] | None = None
    customization_map: list[Any] = field(default_factory=list)
    webhook_url: str | None = None
    cache: bool = True


@dataclass
class _Prepared:
    spec: RenderSpec
    template: Template
    instance: TemplateInstance | None
    request: dict[str, Any]
    frames_total: int
    estimate_ms: int
    estimate_bytes: int


def estimate(plan: OutputPlan) -> tuple[int, int]:
    """(render time ms, output bytes) of rendering ``plan``."""
    ms = plan.frames * plan.width * plan.height * _NS_PER_PIXEL[plan.encoder.codec] // 1_000_000
    bitrate = plan.encoder.effective_bitrate(plan.width, plan.height, plan.fps)
    seconds = plan.duration_s
    nbytes = math.ceil(seconds * (bitrate + _AUDIO_BITRATE) / 8) + _CONTAINER_OVERHEAD
    return max(MIN_ESTIMATE_MS, int(ms)), nbytes


def stored_template_model(template: Template, label: str) -> TemplateModel:
    """The validated model of a completed template's stored definition.

    Raises:
        Refused: ``bad_request`` / ``invalid_template`` when the definition no longer
            passes validation (stored before a limit was introduced), naming the problem.
    """
    from pydantic import ValidationError

    from renderer.template.loader import format_validation_error

    assert template.definition is not None
    try:
        return TemplateModel.model_validate(template.definition)
    except ValidationError as err:
        problem = format_validation_error(err, template.definition)
        raise bad_request(
            f"{label}template {template.id} no longer passes validation ({problem}); "
            "fix it and upload it again",
            "invalid_template",
        ) from None


async def owned_template(
    session: AsyncSession, user_id: uuid.UUID, template_id: uuid.UUID, label: str
) -> Template:
    """The user's completed, undeleted template ``template_id`` (refusals name ``label``)."""
    template = await session.scalar(
        sa.select(Template).where(
            Template.id == template_id,
            Template.user_id == user_id,
            Template.deleted_at.is_(None),
            Template.status != JobStatus.Deleted,
        )
    )
    if template is None:
        raise not_found(f"{label}template {template_id} not found")
    if template.status != JobStatus.Completed or template.definition is None:
        raise bad_request(
            f"{label}template {template_id} is {template.status.value}, not completed; wait "
            "for GET /template/{id}/status to say completed",
            "template_not_ready",
        )
    return template


async def check_assets(
    session: AsyncSession,
    user_id: uuid.UUID,
    model: TemplateModel,
    entries: Sequence[Any],
    label: str,
) -> None:
    """Refuse customizations whose ``assetId`` is not one of the user's ready assets of the
    layer's kind (or that give a raw ``src``)."""
    for index, entry in enumerate(entries):
        where = f"{label}customizationMap[{index}] (layerId '{entry.layer_id}')"
        if entry.src is not None:
            raise library.src_refused(where)
        if entry.asset_id is not None:
            layer = model.layer(entry.layer_id)
            await library.customization_asset(session, user_id, entry.asset_id, where, layer)


def manifest_lottie_text_names(template: Template) -> dict[str, list[str]]:
    """Lottie layer id -> the text layer names of its animation, read from the stored
    manifest's ``defaults.lottieText`` so submission can refuse an unknown ``lottieText`` key
    instead of the render failing later. A layer the manifest does not describe is left out
    (its keys are then checked only when rendering).

    Args:
        template: a completed template row.
    """
    layers = (template.manifest or {}).get("layers") or []
    names: dict[str, list[str]] = {}
    for layer in layers:
        texts = (layer.get("defaults") or {}).get("lottieText")
        if layer.get("type") == "lottie" and isinstance(texts, dict):
            names[str(layer["id"])] = [str(name) for name in texts]
    return names


async def _template_of(
    session: AsyncSession, user_id: uuid.UUID, spec: RenderSpec, label: str
) -> tuple[Template, TemplateInstance | None, list[Any]]:
    """The template a spec renders, its template instance (campaign mode) and the
    instance's default customisations."""
    if (spec.template_id is None) == (spec.template_instance_id is None):
        raise bad_request(f"{label}give exactly one of templateId (direct) or templateInstanceId")
    if spec.template_instance_id is None:
        assert spec.template_id is not None
        return await owned_template(session, user_id, spec.template_id, label), None, []
    instance = await session.scalar(
        sa.select(TemplateInstance).where(
            TemplateInstance.id == spec.template_instance_id,
            TemplateInstance.user_id == user_id,
        )
    )
    if instance is None:
        raise Refused(
            "not_found",
            f"{label}template instance {spec.template_instance_id} not found",
            "not_found",
        )
    template = await owned_template(session, user_id, instance.template_id, label)
    return template, instance, list(instance.customization_map or [])


async def _customizations(  # noqa: PLR0917 - the spec's parts, each checked here
    session: AsyncSession,
    user_id: uuid.UUID,
    template: Template,
    model: TemplateModel,
    defaults: list[Any],
    spec: RenderSpec,
    label: str,
) -> list[Any]:
    """The instance defaults and the spec's entries, validated against the template, with
    every asset checked."""
    # Instance defaults first: later entries win when the renderer applies them.
    raw_entries = [*defaults, *spec.customization_map]
    try:
        entries = validate_customizations(
            model, raw_entries, lottie_text_layers=manifest_lottie_text_names(template)
        )
    except InvalidCustomization as err:
        detail = str(err)
        if defaults:
            detail += (
                f" (entries 0..{len(defaults) - 1} are the template instance's defaults; "
                f"yours start at {len(defaults)})"
            )
        raise bad_request(f"{label}{detail}", "invalid_customization") from None
    await check_assets(session, user_id, model, entries, label)
    return entries


def output_plan(model: TemplateModel, spec: RenderSpec, label: str = "") -> OutputPlan:
    """The request's output plan: what the render will write, so ``frames_total`` and the
    estimate are the renderer's own count.

    Raises:
        Refused: ``bad_request`` (``invalid_encoder_config``, ``invalid_frame_range``)
            naming the field in the request's words.
    """
    if spec.encoder_config is None:
        raise bad_request(f"{label}encoderConfig is required (at least its bitrate)")
    if spec.encoder_config.get("bitrate") is None:
        raise bad_request(
            f"{label}encoderConfig.bitrate is required (bits per second, e.g. 5000000)",
            "invalid_encoder_config",
        )
    try:
        config = EncoderConfig.parse(spec.encoder_config)
        # A larger res scales every layer's box: the plan checks the same ceilings as at
        # upload, at this size.
        plan = OutputPlan.of(model, config, (spec.f_start, spec.f_end))
    except LayerTooLarge as err:
        raise bad_request(f"{label}encoderConfig.res: {err}", "invalid_encoder_config") from None
    except InvalidEncoderConfig as err:
        raise bad_request(f"{label}{err}", "invalid_encoder_config") from None
    except InvalidFrameRange as err:
        raise bad_request(f"{label}{frame_range_message(err)}", "invalid_frame_range") from None
    return plan


def frame_range_message(err: InvalidFrameRange) -> str:
    """The renderer's frame-range refusal in the request's words (``jobInfo.fStart``)."""
    start, end, total = err.start, err.end, err.total
    if err.problem == "start":
        return f"jobInfo.fStart {start} lies outside the template's frames 0..{total}"
    if err.problem == "end":
        return (
            f"jobInfo.fEnd {end} lies outside the template's frames 0..{total} "
            f"(the range is half-open: fEnd {total} renders to the last frame)"
        )
    if err.problem == "order":
        return (
            f"jobInfo.fStart ({start}) must be less than jobInfo.fEnd ({end}); the range "
            f"[fStart, fEnd) is half-open"
        )
    return f"jobInfo: {err}"


async def _prepare(session: AsyncSession, user: User, spec: RenderSpec, label: str) -> _Prepared:
    template, instance, defaults = await _template_of(session, user.id, spec, label)
    model = stored_template_model(template, label)
    entries = await _customizations(session, user.id, template, model, defaults, spec, label)
    plan = output_plan(model, spec, label)
    if spec.audio_id is not None:
        await _check_audio(session, user.id, spec.audio_id, instance, label)

    ms, nbytes = estimate(plan)
    request: dict[str, Any] = {
        "customizationMap": [
            e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in entries
        ],
        "encoderConfig": plan.encoder.model_dump(mode="json", by_alias=True, exclude_none=True),
        "jobInfo": {"fStart": plan.f_start, "fEnd": plan.f_end},
    }
    if not spec.cache:
        request["cache"] = False
    return _Prepared(spec, template, instance, request, plan.frames, ms, nbytes)


async def _check_audio(
    session: AsyncSession,
    user_id: uuid.UUID,
    audio_id: uuid.UUID,
    instance: TemplateInstance | None,
    label: str,
) -> None:
    audio = await session.scalar(
        sa.select(Audio).where(Audio.id == audio_id, Audio.user_id == user_id)
    )
    if audio is None or audio.status == JobStatus.Deleted:
        raise bad_request(f"{label}audio {audio_id} not found", "invalid_audio")
    if audio.status != JobStatus.Completed:
        raise bad_request(
            f"{label}audio {audio_id} is {audio.status.value}, not completed; wait for "
            "GET /audio/{id}/status to say completed",
            "invalid_audio",
        )
    if instance is not None:
        linked = await session.scalar(
            sa.select(sa.func.count())
            .select_from(CampaignAudioGroup)
            .where(
                CampaignAudioGroup.campaign_id == instance.campaign_id,
                CampaignAudioGroup.group_id == audio.group_id,
            )
        )
        if not linked:
            raise bad_request(
                f"{label}audio {audio_id} belongs to audio group {audio.group_id}, which is "
                f"not linked to campaign {instance.campaign_id}; link it with "
                "POST /campaign/{campaignId}/audio-groups/{groupId}",
                "invalid_audio",
            )


def concurrency_limit(user: User, settings: Settings) -> int:
    """The account's cap on pending + processing renders."""
    if user.max_concurrent_renders is not None:
        return user.max_concurrent_renders
    return settings.max_concurrent_renders


async def count_active(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Pending, processing and cancelling renders of the account."""
    return int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(Render)
            .where(Render.user_id == user_id, Render.status.in_(ACTIVE))
        )
        or 0
    )


async def check_webhook_url(
    url: str,
    settings: Settings,
    label: str = "",
    resolver: webhooks.Resolver = webhooks.resolve_host,
) -> None:
    """Refuse a ``webhookUrl`` that is not an http(s) URL of a public host (resolved now;
    delivery checks it again).

    Raises:
        Refused: ``bad_request`` naming the URL and why (``invalid_webhook_url``).
    """
    check = webhooks.check_target
    try:
        await asyncio.wait_for(
            asyncio.to_thread(
                check, url, allow_private=settings.webhook_allow_private, resolver=resolver
            ),
            WEBHOOK_RESOLVE_TIMEOUT_S,
        )
    except webhooks.UnsafeWebhookTarget as err:
        raise bad_request(
            f"{label}webhookUrl {url!r} is refused: {err.reason}; webhooks go to public "
            "http(s) hosts only",
            "invalid_webhook_url",
        ) from None
    except TimeoutError:
        raise bad_request(
            f"{label}webhookUrl {url!r} is refused: its host did not resolve within "
            f"{WEBHOOK_RESOLVE_TIMEOUT_S:g} s",
            "invalid_webhook_url",
        ) from None


async def _check_webhooks(
    specs: Sequence[RenderSpec], settings: Settings, labels: Sequence[str]
) -> None:
    """Refuse a batch naming a webhook URL that is not public (each URL resolved once)."""
    checked: set[str] = set()
    for spec, label in zip(specs, labels, strict=True):
        if spec.webhook_url is not None and spec.webhook_url not in checked:
            await check_webhook_url(spec.webhook_url, settings, label)
            checked.add(spec.webhook_url)


async def _reserve(
    session: AsyncSession, settings: Settings, user: User, prepared: Sequence[_Prepared]
) -> None:
    """Lock the account, reserve the batch's render time and storage, and check that the
    account has a free concurrency slot.

    Raises:
        Refused: ``payment_required`` (render-time budget), ``bad_request`` (storage
            quota), ``too_many`` (concurrency limit).
    """
    await budget.lock_account(session, user.id)
    total_ms = sum(p.estimate_ms for p in prepared)
    if not await budget.reserve_render_time(session, user.id, total_ms):
        status = await budget.budget_status(session, user.id)
        raise Refused(
            "payment_required",
            f"insufficient render time budget: this request needs about {total_ms} ms, "
            f"{status.remaining_ms} ms of {status.total_ms} ms remain",
            "insufficient_render_budget",
        )
    total_bytes = sum(p.estimate_bytes for p in prepared)
    if not await quota.reserve_storage(session, user.id, total_bytes):
        raise bad_request(
            f"storage quota exceeded: the output needs about {total_bytes} bytes; delete "
            "renders or templates, or lower encoderConfig.bitrate",
            "storage_quota_exceeded",
        )
    # A request (a batch as a whole) is admitted while the account has a free slot; a batch
    # larger than the free slots is queued whole and its renders wait their turn as pending,
    # as Creatomate and Shotstack queue beyond their concurrency. Once the pending and
    # processing renders reach the limit, new requests get 429 until one finishes.
    limit = concurrency_limit(user, settings)
    active = await count_active(session, user.id)
    if active >= limit:
        raise Refused(
            "too_many",
            f"Maximum concurrent renders reached: {active} renders of this account are "
            f"pending, processing or cancelling and the limit is {limit}; retry when one "
            "finishes (GET /render/active lists them)",
            "too_many_renders",
        )


async def submit_renders(
    session: AsyncSession, settings: Settings, user: User, specs: Sequence[RenderSpec]
) -> list[Render]:
    """Validate every spec, then reserve budget and storage and insert them all, or none.

    The account row is locked first (``budget.lock_account``), so the concurrency count and
    the inserts cannot interleave with another submission for the same account.

    Raises:
        Refused: ``bad_request`` (400, naming the item and entry), ``not_found``,
            ``payment_required`` (402, render-time budget), ``too_many`` (429); a webhook URL
            that is not public is a ``bad_request`` naming it.
    """
    if not specs:
        raise bad_request("items must hold at least one render request")
    if len(specs) > MAX_BATCH:
        raise bad_request(f"at most {MAX_BATCH} renders per batch, got {len(specs)}")
    labels = [f"items[{i}]: " if len(specs) > 1 else "" for i in range(len(specs))]
    await _check_webhooks(specs, settings, labels)
    prepared = [
        await _prepare(session, user, spec, label)
        for spec, label in zip(specs, labels, strict=True)
    ]
    await _reserve(session, settings, user, prepared)

    renders: list[Render] = []
    for p in prepared:
        render = Render(
            id=uuid.uuid4(),
            user_id=user.id,
            template_id=p.template.id,
            template_name=p.template.name,
            campaign_id=p.instance.campaign_id if p.instance else None,
            template_instance_id=p.instance.id if p.instance else None,
            template_instance_name=p.instance.name if p.instance else None,
            audio_id=p.spec.audio_id,
            name=p.spec.name,
            status=JobStatus.Pending,
            request=p.request,
            progress=0,
            frames_done=0,
            frames_total=p.frames_total,
            reserved_render_ms=p.estimate_ms,
            reserved_storage_bytes=p.estimate_bytes,
            render_time_ms=0,
            attempts=0,
            webhook_url=p.spec.webhook_url,
            created_at=utcnow(),
        )
        session.add(render)
        renders.append(render)
    await session.flush()
    for render in renders:
        enqueue(session, RENDER_ACTOR, render.id)
    return renders
