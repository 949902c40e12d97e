"""Render persistence: submission (validation, reservations, concurrency), queries, cancel,
delete, and the worker's compare-and-set transitions.

Store functions only flush; the edge that owns the session commits (``api.deps`` for
requests, ``Database.session()`` in actors). Every status change is a compare-and-set
``UPDATE ... WHERE status = <expected>``: whoever loses a race changes nothing and backs off.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from jobs import budget, quota
from jobs.messages import enqueue
from jobs.models.account import User
from jobs.models.base import ACTIVE_STATUSES, JobStatus, utcnow
from jobs.models.library import Asset, Audio, Template
from jobs.models.render import CampaignAudioGroup, Render, RenderChunk, TemplateInstance
from jobs.settings import Settings
from jobs.storage import Storage
from renderer.customize import asset_kind_for_layer, validate_customizations
from renderer.encoder_config import EncoderConfig, resolve_frame_range
from renderer.errors import InvalidCustomization, InvalidEncoderConfig, InvalidFrameRange
from renderer.model import Template as TemplateModel

RENDER_ACTOR = "render"
WEBHOOK_ACTOR = "deliver_render_webhook"
CHUNK_ACTOR = "render_chunk"
FINALIZE_ACTOR = "finalize_render"
# lease_owner of a render whose chunks are out with workers (each chunk holds its own lease).
CHUNKED = "chunked"
MAX_ATTEMPTS = 3
MAX_BATCH = 100
MIN_ESTIMATE_MS = 1000
# Rough software cost per output pixel (ns) by codec, used only for the budget estimate.
_NS_PER_PIXEL = {0: 25, 1: 70, 2: 50}
_AUDIO_BITRATE = 192_000
_CONTAINER_OVERHEAD = 64 * 1024
ACTIVE = tuple(ACTIVE_STATUSES)
TERMINAL = (JobStatus.Completed, JobStatus.Failed, JobStatus.Cancelled)
RUNNING = (JobStatus.Processing, JobStatus.Cancelling)

Refusal = Literal["bad_request", "not_found", "payment_required", "too_many", "conflict"]


class RenderRefused(Exception):
    """A request the service will not carry out; the API maps ``kind`` to a status code."""

    def __init__(self, kind: Refusal, detail: str, code: str) -> None:
        super().__init__(detail)
        self.kind: Refusal = kind
        self.detail = detail
        self.code = code


def _bad(detail: str, code: str = "invalid_request") -> RenderRefused:
    return RenderRefused("bad_request", detail, code)


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


@dataclass
class _Prepared:
    spec: RenderSpec
    template: Template
    instance: TemplateInstance | None
    request: dict[str, Any]
    frames_total: int
    estimate_ms: int
    estimate_bytes: int


# --- submission ---------------------------------------------------------------------------


def estimate(
    model: TemplateModel, config: EncoderConfig, f_start: int, f_end: int
) -> tuple[int, int, int]:
    """(output frames, render time ms, output bytes) for rendering ``[f_start, f_end)``."""
    width, height = config.output_size(model.width, model.height)
    fps = config.output_fps(model.fps_fraction)
    seconds = Fraction(f_end - f_start) / model.fps_fraction
    frames = max(1, math.ceil(seconds * fps))
    ms = frames * width * height * _NS_PER_PIXEL[config.codec] // 1_000_000
    bitrate = config.effective_bitrate(width, height, fps)
    nbytes = math.ceil(float(seconds) * (bitrate + _AUDIO_BITRATE) / 8) + _CONTAINER_OVERHEAD
    return frames, max(MIN_ESTIMATE_MS, int(ms)), nbytes


async def _owned_template(
    session: AsyncSession, user_id: uuid.UUID, template_id: uuid.UUID, label: str
) -> Template:
    template = await session.scalar(
        sa.select(Template).where(
            Template.id == template_id,
            Template.user_id == user_id,
            Template.deleted_at.is_(None),
            Template.status != JobStatus.Deleted,
        )
    )
    if template is None:
        raise RenderRefused("not_found", f"{label}template {template_id} not found", "not_found")
    if template.status != JobStatus.Completed or template.definition is None:
        raise _bad(
            f"{label}template {template_id} is {template.status.value}, not completed; wait "
            "for GET /template/{id}/status to say completed",
            "template_not_ready",
        )
    return template


async def _check_assets(
    session: AsyncSession,
    user_id: uuid.UUID,
    model: TemplateModel,
    entries: Sequence[Any],
    label: str,
) -> None:
    for index, entry in enumerate(entries):
        if entry.src is not None:
            raise _bad(
                f"{label}customizationMap[{index}] (layerId '{entry.layer_id}'): 'src' is not "
                "accepted; upload the file with POST /asset/upload and pass its assetId",
                "invalid_customization",
            )
        if entry.asset_id is None:
            continue
        where = f"{label}customizationMap[{index}] (layerId '{entry.layer_id}')"
        try:
            asset_id = uuid.UUID(str(entry.asset_id))
        except ValueError:
            raise _bad(
                f"{where}: assetId {entry.asset_id!r} is not a UUID", "invalid_customization"
            ) from None
        layer = model.layer(entry.layer_id)
        kind = asset_kind_for_layer(layer) if layer is not None else None
        asset = await session.scalar(
            sa.select(Asset).where(Asset.id == asset_id, Asset.user_id == user_id)
        )
        if asset is None or asset.status == JobStatus.Deleted:
            raise _bad(f"{where}: asset {asset_id} not found", "invalid_customization")
        if asset.status != JobStatus.Completed:
            raise _bad(
                f"{where}: asset {asset_id} is {asset.status.value}, not completed",
                "invalid_customization",
            )
        if asset.kind != kind:
            raise _bad(
                f"{where}: asset {asset_id} is {_a(asset.kind or 'unknown')} "
                f"{asset.kind or 'unknown'}, but layer '{entry.layer_id}' needs "
                f"{_a(kind or 'no')} {kind or 'no'} asset",
                "invalid_customization",
            )


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


async def _prepare(session: AsyncSession, user: User, spec: RenderSpec, label: str) -> _Prepared:
    if (spec.template_id is None) == (spec.template_instance_id is None):
        raise _bad(f"{label}give exactly one of templateId (direct) or templateInstanceId")
    instance: TemplateInstance | None = None
    defaults: list[Any] = []
    if spec.template_instance_id is not None:
        instance = await session.scalar(
            sa.select(TemplateInstance).where(
                TemplateInstance.id == spec.template_instance_id,
                TemplateInstance.user_id == user.id,
            )
        )
        if instance is None:
            raise RenderRefused(
                "not_found",
                f"{label}template instance {spec.template_instance_id} not found",
                "not_found",
            )
        template = await _owned_template(session, user.id, instance.template_id, label)
        defaults = list(instance.customization_map or [])
    else:
        assert spec.template_id is not None
        template = await _owned_template(session, user.id, spec.template_id, label)
    assert template.definition is not None
    model = TemplateModel.model_validate(template.definition)

    # Instance defaults first: later entries win when the renderer applies them.
    raw_entries = [*defaults, *spec.customization_map]
    try:
        entries = validate_customizations(model, raw_entries)
    except InvalidCustomization as err:
        detail = str(err)
        if defaults:
            detail += (
                f" (entries 0..{len(defaults) - 1} are the template instance's defaults; "
                f"yours start at {len(defaults)})"
            )
        raise _bad(f"{label}{detail}", "invalid_customization") from None
    await _check_assets(session, user.id, model, entries, label)

    if spec.encoder_config is None:
        raise _bad(f"{label}encoderConfig is required (at least its bitrate)")
    if spec.encoder_config.get("bitrate") is None:
        raise _bad(
            f"{label}encoderConfig.bitrate is required (bits per second, e.g. 5000000)",
            "invalid_encoder_config",
        )
    try:
        config = EncoderConfig.parse(spec.encoder_config)
        width, height = config.output_size(model.width, model.height)
        config.validate_combination(width, height, config.output_fps(model.fps_fraction))
        f_start, f_end = resolve_frame_range(spec.f_start, spec.f_end, model.frames)
    except InvalidEncoderConfig as err:
        raise _bad(f"{label}{err}", "invalid_encoder_config") from None
    except InvalidFrameRange as err:
        raise _bad(f"{label}{err}", "invalid_frame_range") from None

    if spec.audio_id is not None:
        await _check_audio(session, user.id, spec.audio_id, instance, label)

    frames, ms, nbytes = estimate(model, config, f_start, f_end)
    request = {
        "customizationMap": [
            e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in entries
        ],
        "encoderConfig": config.model_dump(mode="json", by_alias=True, exclude_none=True),
        "jobInfo": {"fStart": f_start, "fEnd": f_end},
    }
    return _Prepared(spec, template, instance, request, frames, ms, nbytes)


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
        raise _bad(f"{label}audio {audio_id} not found", "invalid_audio")
    if audio.status != JobStatus.Completed:
        raise _bad(
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
            raise _bad(
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


async def submit_renders(
    session: AsyncSession, settings: Settings, user: User, specs: Sequence[RenderSpec]
) -> list[Render]:
    """Validate every spec, then reserve budget and storage and insert them all, or none.

    The account row is locked first (``budget.lock_account``), so the concurrency count and
    the inserts cannot interleave with another submission for the same account.

    Raises:
        RenderRefused: ``bad_request`` (400, naming the item and entry), ``not_found``,
            ``payment_required`` (402, render-time budget), ``too_many`` (429).
    """
    if not specs:
        raise _bad("items must hold at least one render request")
    if len(specs) > MAX_BATCH:
        raise _bad(f"at most {MAX_BATCH} renders per batch, got {len(specs)}")
    batch = len(specs) > 1
    prepared = [
        await _prepare(session, user, spec, f"items[{i}]: " if batch else "")
        for i, spec in enumerate(specs)
    ]

    await budget.lock_account(session, user.id)
    total_ms = sum(p.estimate_ms for p in prepared)
    if not await budget.reserve_render_time(session, user.id, total_ms):
        status = await budget.budget_status(session, user.id)
        raise RenderRefused(
            "payment_required",
            f"insufficient render time budget: this request needs about {total_ms} ms, "
            f"{status.remaining_ms} ms of {status.total_ms} ms remain",
            "insufficient_render_budget",
        )
    total_bytes = sum(p.estimate_bytes for p in prepared)
    if not await quota.reserve_storage(session, user.id, total_bytes):
        raise _bad(
            f"storage quota exceeded: the output needs about {total_bytes} bytes; delete "
            "renders or templates, or lower encoderConfig.bitrate",
            "storage_quota_exceeded",
        )
    limit = concurrency_limit(user, settings)
    active = await count_active(session, user.id)
    if active + len(prepared) > limit:
        raise RenderRefused(
            "too_many",
            f"Maximum concurrent renders reached ({active} of {limit} active)",
            "too_many_renders",
        )

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


# --- queries ------------------------------------------------------------------------------


async def get_render(session: AsyncSession, user_id: uuid.UUID, render_id: uuid.UUID) -> Render:
    """The account's render (never a deleted one).

    Raises:
        RenderRefused: ``not_found`` (also for another account's render).
    """
    render = await session.scalar(
        sa.select(Render).where(
            Render.id == render_id,
            Render.user_id == user_id,
            Render.status != JobStatus.Deleted,
        )
    )
    if render is None:
        raise RenderRefused("not_found", f"render {render_id} not found", "not_found")
    return render


async def list_renders(
    session: AsyncSession,
    user_id: uuid.UUID,
    statuses: Iterable[JobStatus],
    *,
    skip: int = 0,
    take: int = 100,
    newest_first: bool = True,
) -> list[Render]:
    """The account's renders in ``statuses``, newest first, paginated."""
    order = Render.created_at.desc() if newest_first else Render.created_at.asc()
    rows = await session.scalars(
        sa.select(Render)
        .where(Render.user_id == user_id, Render.status.in_(list(statuses)))
        .order_by(order, Render.id)
        .offset(skip)
        .limit(take)
    )
    return list(rows)


async def active_renders_using(
    session: AsyncSession,
    *,
    template_id: uuid.UUID | None = None,
    audio_id: uuid.UUID | None = None,
    audio_group_id: uuid.UUID | None = None,
) -> int:
    """How many pending/processing renders use the template, audio or audio group (the
    library refuses to delete those while this is non-zero)."""
    stmt = sa.select(sa.func.count()).select_from(Render).where(Render.status.in_(ACTIVE))
    if template_id is not None:
        stmt = stmt.where(Render.template_id == template_id)
    if audio_id is not None:
        stmt = stmt.where(Render.audio_id == audio_id)
    if audio_group_id is not None:
        stmt = stmt.where(
            Render.audio_id.in_(sa.select(Audio.id).where(Audio.group_id == audio_group_id))
        )
    return int(await session.scalar(stmt) or 0)


# --- API-side transitions -----------------------------------------------------------------


async def _cas(
    session: AsyncSession,
    render_id: uuid.UUID,
    expected: Sequence[JobStatus],
    values: dict[str, Any],
    *,
    owner: str | None = None,
) -> bool:
    stmt = sa.update(Render).where(Render.id == render_id, Render.status.in_(list(expected)))
    if owner is not None:
        stmt = stmt.where(Render.lease_owner == owner)
    result = await session.execute(
        stmt.values(**values).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0)) == 1


async def release_reservations(session: AsyncSession, render: Render) -> None:
    """Give back the budget and storage a render that produced no output still holds."""
    await budget.release_render(session, render)
    held = render.reserved_storage_bytes
    if held > 0:
        await quota.release_storage(session, render.user_id, held)
        await session.execute(
            sa.update(Render)
            .where(Render.id == render.id)
            .values(reserved_storage_bytes=Render.reserved_storage_bytes - held)
            .execution_options(synchronize_session=False)
        )
        render.reserved_storage_bytes -= held


def notify_terminal(session: AsyncSession, render: Render) -> None:
    """Queue the webhook for a render that just reached a terminal state."""
    if render.webhook_url:
        enqueue(session, WEBHOOK_ACTOR, render.id)


async def cancel_render(session: AsyncSession, user_id: uuid.UUID, render_id: uuid.UUID) -> Render:
    """Cancel a render: pending ones at once, processing ones via ``cancelling`` (the worker
    stops between frames and finishes the transition).

    Raises:
        RenderRefused: ``not_found``; ``conflict`` when already completed, failed or cancelled.
    """
    render = await get_render(session, user_id, render_id)
    for _ in range(3):
        if render.status == JobStatus.Pending:
            now = utcnow()
            if await _cas(
                session,
                render.id,
                [JobStatus.Pending],
                {"status": JobStatus.Cancelled, "completed_at": now, "reason": "Cancelled"},
            ):
                render.status, render.completed_at = JobStatus.Cancelled, now
                render.reason = "Cancelled"
                await release_reservations(session, render)
                await _stop_chunks(session, render.id)
                notify_terminal(session, render)
                return render
        elif render.status == JobStatus.Processing:
            if await _cas(
                session, render.id, [JobStatus.Processing], {"status": JobStatus.Cancelling}
            ):
                render.status = JobStatus.Cancelling
                await _stop_chunks(session, render.id)
                return render
        elif render.status == JobStatus.Cancelling:
            return render
        else:
            raise RenderRefused(
                "conflict",
                f"render {render_id} is already {render.status.value}; only pending or "
                "processing renders can be cancelled",
                "render_not_active",
            )
        # Lost a race with a worker (claim or finish): look again.
        await session.refresh(render)
    raise RenderRefused("conflict", f"render {render_id} changed state; retry", "retry")


async def delete_render(
    session: AsyncSession, storage: Storage, user_id: uuid.UUID, render_id: uuid.UUID
) -> None:
    """Mark a finished render deleted, remove its video and free its storage.

    Raises:
        RenderRefused: ``not_found``; ``bad_request`` while pending, processing or cancelling.
    """
    render = await get_render(session, user_id, render_id)
    if render.status in ACTIVE:
        raise _bad(
            f"render {render_id} is {render.status.value}; cancel it with "
            "POST /render/{id}/cancel before deleting",
            "render_active",
        )
    if not await _cas(
        session,
        render.id,
        [render.status],
        {"status": JobStatus.Deleted, "output_path": None},
    ):
        raise RenderRefused("conflict", f"render {render_id} changed state; retry", "retry")
    if render.size_bytes and render.output_path:
        await quota.free_storage(session, user_id, render.size_bytes)
    await release_reservations(session, render)
    if render.output_path:
        # Removing before commit is safe: a failed commit leaves a deleted file behind a
        # completed row, which the user can delete again; the reverse would leak the file.
        storage.remove(render.output_path)
    render.status = JobStatus.Deleted


# --- worker-side transitions --------------------------------------------------------------


async def claim(
    session: AsyncSession, render_id: uuid.UUID, owner: str, lease_seconds: float
) -> Render | None:
    """Pending -> Processing for ``owner`` with a fresh lease; None when someone else has it
    (or it is no longer pending), in which case the message is dropped."""
    now = utcnow()
    ok = await _cas(
        session,
        render_id,
        [JobStatus.Pending],
        {
            "status": JobStatus.Processing,
            "lease_owner": owner,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "started_at": now,
            "attempts": Render.attempts + 1,
            "progress": 0,
            "frames_done": 0,
        },
    )
    if not ok:
        return None
    return await session.scalar(
        sa.select(Render).where(Render.id == render_id).execution_options(populate_existing=True)
    )


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learnt: whether the lease is still ours and the current status."""

    owned: bool
    status: JobStatus | None


async def heartbeat(
    session: AsyncSession,
    render_id: uuid.UUID,
    owner: str,
    *,
    lease_seconds: float | None,
    frames_done: int | None = None,
    frames_total: int | None = None,
) -> Beat:
    """Record progress and (when ``lease_seconds`` is given) extend the lease, if ``owner``
    still holds it; report the status (a pending cancel shows as ``cancelling``)."""
    values: dict[str, Any] = {}
    if lease_seconds is not None:
        values["lease_expires_at"] = utcnow() + timedelta(seconds=lease_seconds)
    if frames_done is not None and frames_total:
        values["frames_done"] = frames_done
        values["frames_total"] = frames_total
        values["progress"] = min(99, frames_done * 100 // frames_total)
    if values:
        if not await _cas(session, render_id, RUNNING, values, owner=owner):
            row = None
        else:
            row = (
                await session.execute(
                    sa.select(Render.status, Render.lease_owner).where(Render.id == render_id)
                )
            ).first()
    else:
        row = (
            await session.execute(
                sa.select(Render.status, Render.lease_owner).where(Render.id == render_id)
            )
        ).first()
    if row is None:
        status = await session.scalar(sa.select(Render.status).where(Render.id == render_id))
        return Beat(False, status)
    return Beat(row[1] == owner and row[0] in RUNNING, row[0])


async def complete(
    session: AsyncSession,
    storage: Storage,
    render: Render,
    owner: str,
    tmp: Any,
    *,
    size_bytes: int,
    encoder_used: str,
    frames_total: int,
) -> bool:
    """Processing -> Completed and move the output into place, once.

    The compare-and-set runs first and the rename happens while this transaction still holds
    the row, so of two workers racing (one whose lease expired), only the winner's file is
    moved into place. False when the render is no longer ours or was cancelled meanwhile.
    """
    final = storage.new_path("renders", render.user_id, render.id, ".mp4")
    now = utcnow()
    ok = await _cas(
        session,
        render.id,
        [JobStatus.Processing],
        {
            "status": JobStatus.Completed,
            "output_path": final,
            "size_bytes": size_bytes,
            "encoder_used": encoder_used,
            "progress": 100,
            "frames_done": frames_total,
            "frames_total": frames_total,
            "completed_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "reason": None,
            "failure_code": None,
        },
        owner=owner,
    )
    if not ok:
        return False
    storage.move_into_place(tmp, final)
    held = render.reserved_storage_bytes
    await quota.settle_storage(session, render.user_id, held, size_bytes)
    await session.execute(
        sa.update(Render)
        .where(Render.id == render.id)
        .values(reserved_storage_bytes=0)
        .execution_options(synchronize_session=False)
    )
    render.reserved_storage_bytes = 0
    await budget.release_render(session, render)
    render.status, render.completed_at, render.output_path = JobStatus.Completed, now, final
    render.size_bytes = size_bytes
    notify_terminal(session, render)
    return True


async def finish_unsuccessful(
    session: AsyncSession,
    render: Render,
    owner: str | None,
    status: Literal[JobStatus.Failed, JobStatus.Cancelled],
    *,
    reason: str,
    code: str | None,
    expected: Sequence[JobStatus] = RUNNING,
) -> bool:
    """Processing/Cancelling -> Failed or Cancelled (if ``owner`` still holds the lease, when
    given); releases the reservations and queues the webhook."""
    now = utcnow()
    ok = await _cas(
        session,
        render.id,
        expected,
        {
            "status": status,
            "reason": reason,
            "failure_code": code,
            "completed_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
        },
        owner=owner,
    )
    if not ok:
        return False
    render.status, render.reason, render.failure_code, render.completed_at = (
        status,
        reason,
        code,
        now,
    )
    await release_reservations(session, render)
    notify_terminal(session, render)
    return True


async def expired_leases(session: AsyncSession, now: datetime | None = None) -> list[Render]:
    """Processing or cancelling renders whose worker stopped renewing its lease."""
    now = now or utcnow()
    rows = await session.scalars(
        sa.select(Render).where(
            Render.status.in_(RUNNING),
            Render.lease_expires_at.is_not(None),
            Render.lease_expires_at < now,
        )
    )
    return list(rows)


async def pending_ids(session: AsyncSession) -> list[uuid.UUID]:
    """Every pending render (oldest first), for re-enqueueing at start-up."""
    rows = await session.scalars(
        sa.select(Render.id).where(Render.status == JobStatus.Pending).order_by(Render.created_at)
    )
    return list(rows)


async def requeue_expired(session: AsyncSession, render: Render) -> JobStatus | None:
    """Put a render whose lease expired back to pending (or fail it after ``MAX_ATTEMPTS``;
    a lost cancelling render becomes cancelled). Returns the new status, None if it changed
    meanwhile."""
    lease_owner = render.lease_owner
    expired = [Render.lease_expires_at < utcnow()]
    if render.status == JobStatus.Cancelling:
        ok = await finish_unsuccessful(
            session,
            render,
            lease_owner,
            JobStatus.Cancelled,
            reason="Cancelled",
            code=None,
            expected=[JobStatus.Cancelling],
        )
        return JobStatus.Cancelled if ok else None
    if render.attempts >= MAX_ATTEMPTS:
        ok = await finish_unsuccessful(
            session,
            render,
            lease_owner,
            JobStatus.Failed,
            reason=f"The worker rendering this stopped responding {render.attempts} times",
            code="worker_lost",
            expected=[JobStatus.Processing],
        )
        return JobStatus.Failed if ok else None
    stmt = (
        sa.update(Render)
        .where(
            Render.id == render.id,
            Render.status == JobStatus.Processing,
            Render.lease_owner == lease_owner,
            *expired,
        )
        .values(
            status=JobStatus.Pending,
            lease_owner=None,
            lease_expires_at=None,
            progress=0,
            frames_done=0,
        )
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    if int(getattr(result, "rowcount", 0)) != 1:
        return None
    enqueue(session, RENDER_ACTOR, render.id)
    return JobStatus.Pending


async def template_in_use(session: AsyncSession, template_id: uuid.UUID) -> bool:
    """True while a pending/processing/cancelling render uses the template."""
    return await active_renders_using(session, template_id=template_id) > 0


async def audio_in_use(session: AsyncSession, audio_id: uuid.UUID) -> bool:
    """True while a pending/processing/cancelling render uses the audio."""
    return await active_renders_using(session, audio_id=audio_id) > 0


async def asset_in_use(session: AsyncSession, asset: Asset) -> bool:
    """True while a pending/processing/cancelling render of the asset's owner names it in its
    customisations (an account has at most ``max_concurrent_renders`` such renders)."""
    requests = await session.scalars(
        sa.select(Render.request).where(Render.user_id == asset.user_id, Render.status.in_(ACTIVE))
    )
    wanted = str(asset.id)
    return any(
        entry.get("assetId") == wanted
        for request in requests
        for entry in (request or {}).get("customizationMap", [])
    )


async def audio_group_in_use(session: AsyncSession, group_id: uuid.UUID) -> bool:
    """True while a pending/processing/cancelling render uses audio of the group."""
    return await active_renders_using(session, audio_group_id=group_id) > 0


# --- chunked renders (SPEC §7) ------------------------------------------------------------
#
# A long render's worker claims it as usual, then hands it to its chunks: the render's
# lease_owner becomes CHUNKED with no lease (the sweeper leaves it alone) and each chunk is
# claimed, leased and heartbeaten on its own. Every chunk that stops (completed, failed,
# cancelled) queues the finalize actor; it joins the chunks when all are completed, settles
# a cancel once none is running, and removes the chunk files of a finished render. Each
# transaction that ends a chunk first writes the render's row, which takes its row lock
# (PostgreSQL) or the write lock (SQLite), so "is this the last chunk?" is answered once.


async def fresh_render(session: AsyncSession, render_id: uuid.UUID) -> Render | None:
    """The render row as committed now, detached (so in-memory bookkeeping by
    ``budget.charge_render`` never flushes absolute values back)."""
    render = await session.scalar(
        sa.select(Render).where(Render.id == render_id).execution_options(populate_existing=True)
    )
    if render is not None:
        session.expunge(render)
    return render


async def chunks_of(session: AsyncSession, render_id: uuid.UUID) -> list[RenderChunk]:
    """The render's chunks in playback order (detached snapshots)."""
    rows = list(
        await session.scalars(
            sa.select(RenderChunk)
            .where(RenderChunk.render_id == render_id)
            .order_by(RenderChunk.index)
            .execution_options(populate_existing=True)
        )
    )
    for row in rows:
        session.expunge(row)
    return rows


async def lock_render(session: AsyncSession, render_id: uuid.UUID) -> None:
    """Take the render row's lock (PostgreSQL) or the write lock (SQLite) with a no-op
    write, so reads that follow in this transaction cannot be overtaken by another chunk."""
    await session.execute(
        sa.update(Render)
        .where(Render.id == render_id)
        .values(attempts=Render.attempts)
        .execution_options(synchronize_session=False)
    )


async def _chunk_cas(
    session: AsyncSession,
    chunk_id: uuid.UUID,
    expected: Sequence[JobStatus],
    values: dict[str, Any],
    *,
    owner: str | None = None,
) -> bool:
    stmt = sa.update(RenderChunk).where(
        RenderChunk.id == chunk_id, RenderChunk.status.in_(list(expected))
    )
    if owner is not None:
        stmt = stmt.where(RenderChunk.lease_owner == owner)
    result = await session.execute(
        stmt.values(**values).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0)) == 1


async def _sync_progress(session: AsyncSession, render_id: uuid.UUID) -> None:
    """Set the render's frames_done/progress to the sum over its chunks."""
    done = int(
        await session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(RenderChunk.frames_done), 0)).where(
                RenderChunk.render_id == render_id
            )
        )
        or 0
    )
    total = int(
        await session.scalar(sa.select(Render.frames_total).where(Render.id == render_id)) or 0
    )
    progress = min(99, done * 100 // total) if total else 0
    await session.execute(
        sa.update(Render)
        .where(Render.id == render_id, Render.status.in_(RUNNING))
        .values(frames_done=min(done, total) if total else done, progress=progress)
        .execution_options(synchronize_session=False)
    )


async def _stop_chunks(session: AsyncSession, render_id: uuid.UUID) -> None:
    """Cancel the render's chunks nobody has claimed and, when it has chunks, queue the
    finalize actor (which settles the render once no chunk is running)."""
    result = await session.execute(
        sa.update(RenderChunk)
        .where(RenderChunk.render_id == render_id, RenderChunk.status == JobStatus.Pending)
        .values(status=JobStatus.Cancelled, reason="Cancelled", completed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    stopped = int(getattr(result, "rowcount", 0))
    has_chunks = stopped or await session.scalar(
        sa.select(sa.func.count())
        .select_from(RenderChunk)
        .where(RenderChunk.render_id == render_id)
    )
    if has_chunks:
        enqueue(session, FINALIZE_ACTOR, render_id)


async def start_chunks(
    session: AsyncSession,
    render: Render,
    owner: str,
    ranges: Sequence[tuple[int, int, int]],
) -> list[RenderChunk] | None:
    """Hand a claimed render to its chunks: ``ranges`` are ``(f_start, f_end, frames)``.

    Chunks completed by an earlier attempt with the same ranges are kept; the others are
    (re)set to pending and queued. When all are already completed the finalize actor is
    queued instead. Returns the chunks, or None when ``owner`` no longer holds the render
    (cancelled or lost meanwhile).
    """
    if not await _cas(
        session,
        render.id,
        [JobStatus.Processing],
        {"lease_owner": CHUNKED, "lease_expires_at": None},
        owner=owner,
    ):
        return None
    existing = await chunks_of(session, render.id)
    wanted = [(i, a, b) for i, (a, b, _) in enumerate(ranges)]
    if [(c.index, c.f_start, c.f_end) for c in existing] != wanted:
        # First attempt, or the chunk size changed since: start from scratch.
        await session.execute(
            sa.delete(RenderChunk)
            .where(RenderChunk.render_id == render.id)
            .execution_options(synchronize_session=False)
        )
        for i, (a, b, frames) in enumerate(ranges):
            session.add(
                RenderChunk(
                    id=uuid.uuid4(),
                    render_id=render.id,
                    index=i,
                    f_start=a,
                    f_end=b,
                    frames_total=frames,
                    frames_done=0,
                    status=JobStatus.Pending,
                    attempts=0,
                    queued_at=utcnow(),
                    created_at=utcnow(),
                )
            )
        await session.flush()
    else:
        await session.execute(
            sa.update(RenderChunk)
            .where(RenderChunk.render_id == render.id, RenderChunk.status != JobStatus.Completed)
            .values(
                status=JobStatus.Pending,
                lease_owner=None,
                lease_expires_at=None,
                frames_done=0,
                output_path=None,
                reason=None,
                queued_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
    chunks = await chunks_of(session, render.id)
    await _sync_progress(session, render.id)
    todo = [c for c in chunks if c.status != JobStatus.Completed]
    for chunk in todo:
        enqueue(session, CHUNK_ACTOR, chunk.id)
    if not todo:
        enqueue(session, FINALIZE_ACTOR, render.id)
    return chunks


async def claim_chunk(
    session: AsyncSession, chunk_id: uuid.UUID, owner: str, lease_seconds: float
) -> RenderChunk | None:
    """Pending -> Processing for ``owner``, only while its render is processing in chunks;
    None otherwise (the message is dropped)."""
    now = utcnow()
    parent_ok = (
        sa.select(Render.id)
        .where(
            Render.id == RenderChunk.render_id,
            Render.status == JobStatus.Processing,
            Render.lease_owner == CHUNKED,
        )
        .exists()
    )
    result = await session.execute(
        sa.update(RenderChunk)
        .where(RenderChunk.id == chunk_id, RenderChunk.status == JobStatus.Pending, parent_ok)
        .values(
            status=JobStatus.Processing,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=now,
            attempts=RenderChunk.attempts + 1,
            frames_done=0,
        )
        .execution_options(synchronize_session=False)
    )
    if int(getattr(result, "rowcount", 0)) != 1:
        return None
    chunk = await session.scalar(
        sa.select(RenderChunk)
        .where(RenderChunk.id == chunk_id)
        .execution_options(populate_existing=True)
    )
    if chunk is not None:
        session.expunge(chunk)
    return chunk


async def chunk_heartbeat(
    session: AsyncSession,
    chunk: RenderChunk,
    owner: str,
    *,
    lease_seconds: float | None,
    frames_done: int | None,
) -> Beat:
    """Renew the chunk's lease (when ``lease_seconds`` is given), record its progress and
    the render's (the sum over chunks). ``owned`` is False when the chunk's lease was lost;
    ``status`` is the render's (anything but processing tells the chunk to stop)."""
    values: dict[str, Any] = {}
    if lease_seconds is not None:
        values["lease_expires_at"] = utcnow() + timedelta(seconds=lease_seconds)
    if frames_done is not None:
        values["frames_done"] = min(frames_done, chunk.frames_total)
    owned = True
    if values:
        owned = await _chunk_cas(session, chunk.id, [JobStatus.Processing], values, owner=owner)
        if owned and frames_done is not None:
            await _sync_progress(session, chunk.render_id)
    else:
        row = (
            await session.execute(
                sa.select(RenderChunk.status, RenderChunk.lease_owner).where(
                    RenderChunk.id == chunk.id
                )
            )
        ).first()
        owned = row is not None and row[0] == JobStatus.Processing and row[1] == owner
    status = await session.scalar(sa.select(Render.status).where(Render.id == chunk.render_id))
    return Beat(owned, status)


async def complete_chunk(
    session: AsyncSession, chunk: RenderChunk, owner: str, output_path: str, encoder_used: str
) -> bool:
    """Processing -> Completed with its file at ``output_path`` (relative to the storage
    root); the last chunk of a render still processing queues the finalize actor."""
    await lock_render(session, chunk.render_id)
    ok = await _chunk_cas(
        session,
        chunk.id,
        [JobStatus.Processing],
        {
            "status": JobStatus.Completed,
            "output_path": output_path,
            "encoder_used": encoder_used,
            "frames_done": chunk.frames_total,
            "completed_at": utcnow(),
            # lease_owner stays: it records which worker rendered the chunk.
            "lease_expires_at": None,
        },
        owner=owner,
    )
    if not ok:
        return False
    await _sync_progress(session, chunk.render_id)
    left = int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(RenderChunk)
            .where(
                RenderChunk.render_id == chunk.render_id,
                RenderChunk.status != JobStatus.Completed,
            )
        )
        or 0
    )
    status = await session.scalar(sa.select(Render.status).where(Render.id == chunk.render_id))
    if left == 0 or status != JobStatus.Processing:
        enqueue(session, FINALIZE_ACTOR, chunk.render_id)
    return True


async def end_chunk(
    session: AsyncSession,
    chunk: RenderChunk,
    owner: str | None,
    status: Literal[JobStatus.Failed, JobStatus.Cancelled],
    *,
    reason: str,
    code: str | None = None,
) -> bool:
    """A chunk stops without output. A failed chunk fails its render with the chunk's
    reason (the other chunks see that in their heartbeat and stop). Queues the finalize
    actor, which settles a cancel and removes chunk files once no chunk is running."""
    await lock_render(session, chunk.render_id)
    ok = await _chunk_cas(
        session,
        chunk.id,
        [JobStatus.Processing],
        {
            "status": status,
            "reason": reason,
            "completed_at": utcnow(),
            "lease_owner": None,
            "lease_expires_at": None,
        },
        owner=owner,
    )
    if not ok:
        return False
    if status == JobStatus.Failed:
        await fail_chunked(session, chunk.render_id, reason=reason, code=code)
    enqueue(session, FINALIZE_ACTOR, chunk.render_id)
    return True


async def fail_chunked(
    session: AsyncSession, render_id: uuid.UUID, *, reason: str, code: str | None
) -> bool:
    """Fail a render that is out in chunks (releasing its reservations); pending chunks are
    cancelled."""
    render = await fresh_render(session, render_id)
    if render is None or render.lease_owner != CHUNKED:
        return False
    ok = await finish_unsuccessful(
        session, render, CHUNKED, JobStatus.Failed, reason=reason, code=code
    )
    if ok:
        await _stop_chunks(session, render_id)
    return ok


FinalizeStep = Literal["join", "cancelled", "cleanup", "wait"]


async def begin_finalize(
    session: AsyncSession, render_id: uuid.UUID, owner: str, lease_seconds: float
) -> tuple[FinalizeStep, Render | None, list[RenderChunk]]:
    """Decide what the finalize actor does for a chunked render, taking the render's lease
    when the chunks are ready to be joined.

    Returns ``join`` (every chunk completed; the render is now leased by ``owner``),
    ``cancelled`` (a cancel was settled here), ``cleanup`` (the render is finished and no
    chunk runs: remove the chunk files) or ``wait`` (chunks still running, or nothing to do).
    """
    await lock_render(session, render_id)
    render = await fresh_render(session, render_id)
    chunks = await chunks_of(session, render_id)
    if render is None or not chunks:
        return "wait", render, chunks
    if any(c.status == JobStatus.Processing for c in chunks):
        return "wait", render, chunks
    if render.lease_owner == CHUNKED and render.status == JobStatus.Processing:
        broken = next(
            (c for c in chunks if c.status in (JobStatus.Failed, JobStatus.Cancelled)), None
        )
        if broken is not None:
            # Normally failed together with its chunk; this settles a render left behind.
            await fail_chunked(
                session, render_id, reason=broken.reason or "A chunk failed", code="chunk_failed"
            )
            return "cleanup", render, chunks
        if all(c.status == JobStatus.Completed for c in chunks):
            ok = await _cas(
                session,
                render_id,
                [JobStatus.Processing],
                {
                    "lease_owner": owner,
                    "lease_expires_at": utcnow() + timedelta(seconds=lease_seconds),
                },
                owner=CHUNKED,
            )
            if ok:
                render.lease_owner = owner
                return "join", render, chunks
        return "wait", render, chunks
    if render.lease_owner == CHUNKED and render.status == JobStatus.Cancelling:
        await _stop_chunks(session, render_id)
        ok = await finish_unsuccessful(
            session,
            render,
            CHUNKED,
            JobStatus.Cancelled,
            reason="Cancelled",
            code=None,
            expected=[JobStatus.Cancelling],
        )
        return ("cancelled" if ok else "wait"), render, chunks
    if render.status in RUNNING:
        return "wait", render, chunks  # a single-piece attempt, or being joined
    return "cleanup", render, chunks


async def expired_chunks(session: AsyncSession, now: datetime | None = None) -> list[RenderChunk]:
    """Processing chunks whose worker stopped renewing the lease."""
    now = now or utcnow()
    rows = list(
        await session.scalars(
            sa.select(RenderChunk).where(
                RenderChunk.status == JobStatus.Processing,
                RenderChunk.lease_expires_at.is_not(None),
                RenderChunk.lease_expires_at < now,
            )
        )
    )
    for row in rows:
        session.expunge(row)
    return rows


async def requeue_expired_chunk(session: AsyncSession, chunk: RenderChunk) -> JobStatus | None:
    """A chunk whose worker died goes back to pending (its render still processing), fails
    its render after ``MAX_ATTEMPTS``, or is cancelled when its render stopped. Returns the
    chunk's new status, None if it changed meanwhile."""
    status = await session.scalar(sa.select(Render.status).where(Render.id == chunk.render_id))
    if status != JobStatus.Processing:
        ok = await end_chunk(
            session, chunk, chunk.lease_owner, JobStatus.Cancelled, reason="Cancelled"
        )
        return JobStatus.Cancelled if ok else None
    if chunk.attempts >= MAX_ATTEMPTS:
        reason = (
            f"The worker rendering chunk {chunk.index} (frames {chunk.f_start}-{chunk.f_end}) "
            f"stopped responding {chunk.attempts} times"
        )
        ok = await end_chunk(
            session, chunk, chunk.lease_owner, JobStatus.Failed, reason=reason, code="worker_lost"
        )
        return JobStatus.Failed if ok else None
    await lock_render(session, chunk.render_id)
    result = await session.execute(
        sa.update(RenderChunk)
        .where(
            RenderChunk.id == chunk.id,
            RenderChunk.status == JobStatus.Processing,
            RenderChunk.lease_owner == chunk.lease_owner,
            RenderChunk.lease_expires_at < utcnow(),
        )
        .values(
            status=JobStatus.Pending,
            lease_owner=None,
            lease_expires_at=None,
            frames_done=0,
            queued_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if int(getattr(result, "rowcount", 0)) != 1:
        return None
    await _sync_progress(session, chunk.render_id)
    enqueue(session, CHUNK_ACTOR, chunk.id)
    return JobStatus.Pending


async def requeue_stranded_chunks(
    session: AsyncSession, *, all_pending: bool, stall_seconds: float
) -> tuple[int, int]:
    """Queue again the chunk work whose message may be lost or stuck; returns (chunk
    messages, finalize messages) queued in the session's outbox.

    With ``all_pending`` (start-up) every pending chunk of a render out in chunks is queued.
    Otherwise only stalled renders are helped: no chunk running and the first pending chunk
    queued more than ``stall_seconds`` ago (a dead worker may hold its prefetched message
    until the broker notices, minutes later) gets one more message, so duplicates stay few.
    Renders out in chunks with none running or pending get a finalize message.
    """
    now = utcnow()
    chunked = sa.and_(Render.lease_owner == CHUNKED, Render.status.in_(RUNNING))
    other = aliased(RenderChunk)
    running = (
        sa.select(other.id)
        .where(other.render_id == Render.id, other.status == JobStatus.Processing)
        .correlate(Render)
        .exists()
    )
    pending_rows = (
        await session.execute(
            sa.select(RenderChunk.id, RenderChunk.render_id, RenderChunk.queued_at)
            .join(Render, Render.id == RenderChunk.render_id)
            .where(chunked, Render.status == JobStatus.Processing)
            .where(RenderChunk.status == JobStatus.Pending)
            .where(sa.true() if all_pending else ~running)
            .order_by(RenderChunk.render_id, RenderChunk.index)
        )
    ).all()
    resend: list[uuid.UUID] = []
    seen: set[uuid.UUID] = set()
    for chunk_id, render_id, queued_at in pending_rows:
        if all_pending:
            resend.append(chunk_id)
        elif render_id not in seen:
            seen.add(render_id)
            if queued_at is None or (now - queued_at).total_seconds() > stall_seconds:
                resend.append(chunk_id)
    if resend:
        await session.execute(
            sa.update(RenderChunk)
            .where(RenderChunk.id.in_(resend), RenderChunk.status == JobStatus.Pending)
            .values(queued_at=now)
            .execution_options(synchronize_session=False)
        )
    for chunk_id in resend:
        enqueue(session, CHUNK_ACTOR, chunk_id)
    busy = (
        sa.select(RenderChunk.id)
        .where(
            RenderChunk.render_id == Render.id,
            RenderChunk.status.in_([JobStatus.Pending, JobStatus.Processing]),
        )
        .exists()
    )
    idle = list(await session.scalars(sa.select(Render.id).where(chunked, ~busy)))
    for render_id in idle:
        enqueue(session, FINALIZE_ACTOR, render_id)
    return len(resend), len(idle)
