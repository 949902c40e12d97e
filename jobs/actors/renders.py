"""The render actor: claim, lease heartbeat, cancellation, budget charging, completion;
chunked renders (``render_chunk``, ``finalize_render``); recovery of renders whose worker
died; signed webhook delivery.

One render runs like this on a worker thread: a compare-and-set claims it (a worker that
loses the race drops the message); the renderer runs on a helper thread while this thread's
event loop heartbeats every ``tick`` (extends the lease, records progress, charges the
render time used so far, and reads the status: ``cancelling`` or a lost lease makes
``should_cancel`` answer True between frames). The output is rendered under ``tmp/`` and
moved into place by the same transaction that marks the render completed, so the file and
the ``completed`` transition happen once even when two workers race.

A render longer than ``settings.chunk_frames`` output frames is split instead (SPEC §7): the
claiming worker creates GOP-aligned chunks and queues one ``render_chunk`` message each; any
worker renders a chunk video-only under its own lease, charging the time to the render;
the chunk that completes last queues ``finalize_render``, which joins the chunks without
re-encoding, mixes the audio once, muxes and completes the render through the same
``store.complete`` as a single-piece render.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware import Shutdown, TimeLimitExceeded

from jobs import budget
from jobs.actors import current_settings, current_storage, run_job
from jobs.db import Database, create_database
from jobs.models.account import User
from jobs.models.base import JobStatus
from jobs.models.library import Asset, Audio, Template
from jobs.models.render import Render, RenderChunk
from jobs.settings import Settings
from jobs.storage import Storage
from jobs.store import renders as store
from jobs.webhooks import WebhookDeliveryError, post_signed, render_event_body
from renderer.errors import RenderCancelled, RendererError

log = logging.getLogger(__name__)

RENDER_TIME_LIMIT_MS = 6 * 3600 * 1000
BUDGET_REASON = "Insufficient render time budget"
INTERNAL_REASON = "Internal error while rendering; the operator can find details in the logs"
# Progress and cancel requests are checked this often (seconds); the lease is renewed and
# time charged every lease_seconds / 3.
MAX_TICK_S = 0.5


def _owner_token() -> str:
    return (
        f"{socket.gethostname()[:60]}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"
    )


def tmp_output(storage: Storage, render_id: uuid.UUID, attempt: int) -> Path:
    """Where attempt ``attempt`` of a render is written before it is moved into place."""
    storage.ensure()
    return storage.root / "tmp" / f"render-{render_id}-{attempt}.mp4"


def remove_partial_outputs(storage: Storage, render_id: uuid.UUID, attempt: int) -> None:
    """Delete what attempt ``attempt`` of ``render_id`` left under ``tmp/`` (a dead worker's
    output and the renderer's scratch folder beside it)."""
    tmp_dir = storage.root / "tmp"
    if not tmp_dir.is_dir():
        return
    name = f"render-{render_id}-{attempt}.mp4"
    (tmp_dir / name).unlink(missing_ok=True)
    for path in tmp_dir.glob(f".{name}.*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class _Control:
    """Shared between the render thread (callbacks) and the heartbeat loop. Plain attribute
    writes are atomic under the GIL; each flag only ever goes from False to True."""

    def __init__(self) -> None:
        self.frames_done = 0
        self.frames_total = 0
        self.cancel_requested = False
        self.lease_lost = False
        self.budget_exhausted = False
        self.stopping = False

    def on_progress(self, done: int, total: int) -> None:
        self.frames_done, self.frames_total = done, total

    def should_cancel(self) -> bool:
        return self.cancel_requested or self.lease_lost or self.budget_exhausted or self.stopping


@dataclass
class _Inputs:
    template_dir: Path
    customizations: list[Any]
    encoder: Any
    frames: tuple[int, int]
    extra_audio: Path | None


class _InputError(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


async def _resolve_inputs(db: Database, storage: Storage, render: Render) -> _Inputs:
    """Turn the stored request into local paths and validated values for the renderer."""
    from renderer.encoder_config import EncoderConfig
    from renderer.model import CustomizationEntry

    async with db.session() as s:
        template = (
            await s.scalar(sa.select(Template).where(Template.id == render.template_id))
            if render.template_id
            else None
        )
        if template is None or template.extracted_dir is None or template.deleted_at:
            raise _InputError("template_deleted", "The template was deleted before rendering")
        entries: list[Any] = []
        for index, raw in enumerate(render.request.get("customizationMap", [])):
            data = dict(raw)
            asset_id = data.get("assetId")
            if asset_id:
                asset = await s.scalar(
                    sa.select(Asset).where(
                        Asset.id == uuid.UUID(str(asset_id)),
                        Asset.user_id == render.user_id,
                        Asset.status == JobStatus.Completed,
                    )
                )
                if asset is None:
                    raise _InputError(
                        "invalid_customization",
                        f"customizationMap[{index}]: asset {asset_id} was deleted before rendering",
                    )
                data["src"] = str(storage.abs(asset.path))
            entries.append(CustomizationEntry.model_validate(data))
        extra_audio: Path | None = None
        if render.audio_id is not None:
            audio = await s.scalar(
                sa.select(Audio).where(
                    Audio.id == render.audio_id, Audio.status == JobStatus.Completed
                )
            )
            if audio is None:
                raise _InputError("invalid_audio", "The audio was deleted before rendering")
            extra_audio = storage.abs(audio.path)
        template_dir = storage.abs(template.extracted_dir)
    job = render.request.get("jobInfo", {})
    return _Inputs(
        template_dir=template_dir,
        customizations=entries,
        encoder=EncoderConfig.parse(render.request.get("encoderConfig")),
        frames=(int(job["fStart"]), int(job["fEnd"])),
        extra_audio=extra_audio,
    )


Work = Callable[[_Inputs, Path, str, _Control], Any]


def _run_renderer(inputs: _Inputs, out: Path, preference: str, control: _Control) -> Any:
    from renderer.loader import load_template
    from renderer.render import render as render_video

    loaded = load_template(inputs.template_dir)
    return render_video(
        loaded,
        out,
        customizations=inputs.customizations,
        encoder=inputs.encoder,
        frames=inputs.frames,
        extra_audio=inputs.extra_audio,
        encoder_preference=preference,  # type: ignore[arg-type]
        on_progress=control.on_progress,
        should_cancel=control.should_cancel,
    )


class _Run:
    """One attempt at one render by this worker thread."""

    def __init__(  # noqa: PLR0917 - the work function varies by kind of attempt
        self,
        db: Database,
        settings: Settings,
        storage: Storage,
        render: Render,
        owner: str,
        work: Work = _run_renderer,
    ) -> None:
        self.db, self.settings, self.storage = db, settings, storage
        self.render, self.owner = render, owner
        self.work = work
        self.control = _Control()
        self.last_charge = time.monotonic()
        self.out = tmp_output(storage, render.id, render.attempts)

    async def charge(self, session: Any) -> budget.Charge:
        """Charge the wall time since the previous charge to the render."""
        now = time.monotonic()
        elapsed_ms = int((now - self.last_charge) * 1000)
        self.last_charge = now
        return await budget.charge_render(session, self.render, elapsed_ms)

    async def heartbeat_loop(self, task: asyncio.Future[Any]) -> None:
        """Until ``task`` ends: record progress, renew the lease and charge time every
        lease/3, and turn a cancel request, a lost lease or an exhausted budget into flags
        the renderer polls between frames."""
        lease = float(self.settings.lease_seconds)
        renew_every = lease / 3
        tick = min(MAX_TICK_S, renew_every)
        last_renew = time.monotonic()
        last_frames = -1
        control = self.control
        while not task.done():
            await asyncio.wait({task}, timeout=tick)
            if task.done():
                return
            renew = time.monotonic() - last_renew >= renew_every
            frames = control.frames_done if control.frames_done != last_frames else None
            try:
                async with self.db.session() as s:
                    beat = await store.heartbeat(
                        s,
                        self.render.id,
                        self.owner,
                        lease_seconds=lease if renew else None,
                        frames_done=frames,
                        frames_total=control.frames_total or None,
                    )
                    if beat.owned and renew and (await self.charge(s)).exhausted:
                        control.budget_exhausted = True
            except Exception:
                # A database hiccup must not kill the render; the lease has slack for it.
                log.warning("heartbeat for render %s failed", self.render.id, exc_info=True)
                continue
            if renew:
                last_renew = time.monotonic()
            if frames is not None:
                last_frames = frames
            if not beat.owned:
                control.lease_lost = True
            elif beat.status == JobStatus.Cancelling:
                control.cancel_requested = True

    async def finish(self, status: Any, reason: str, code: str | None) -> None:
        """End as failed or cancelled (if the lease is still ours), charging the time used."""
        self.out.unlink(missing_ok=True)
        async with self.db.session() as s:
            current = await s.scalar(
                sa.select(Render.lease_owner).where(Render.id == self.render.id)
            )
            if current != self.owner:
                log.warning("render %s: lease lost before ending %s", self.render.id, status)
                return
            await self.charge(s)
            ok = await store.finish_unsuccessful(
                s, self.render, self.owner, status, reason=reason, code=code
            )
        if ok:
            log.info("render %s %s: %s", self.render.id, status.value, reason)

    async def run(self, inputs: _Inputs | None = None) -> None:
        render, control = self.render, self.control
        if inputs is None:
            try:
                inputs = await _resolve_inputs(self.db, self.storage, render)
            except _InputError as err:
                await self.finish(JobStatus.Failed, err.reason, err.code)
                return
            except RendererError as err:
                await self.finish(JobStatus.Failed, str(err), err.code)
                return

        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(
            None, self.work, inputs, self.out, self.settings.encoder, control
        )
        try:
            await self.heartbeat_loop(task)
            report = await task
        except (TimeLimitExceeded, Shutdown) as exc:
            # Stop the render thread between frames and let it leave the file alone.
            control.stopping = True
            await asyncio.wait({task}, timeout=30)
            if isinstance(exc, TimeLimitExceeded):
                await self.finish(
                    JobStatus.Failed, "The render exceeded the worker's time limit", "time_limit"
                )
            # On shutdown the lease expires and another worker renders it again.
            raise
        except RenderCancelled:
            if control.lease_lost:
                self.out.unlink(missing_ok=True)
                log.warning("render %s: lease lost; another worker owns it now", render.id)
            elif control.budget_exhausted:
                await self.finish(JobStatus.Failed, BUDGET_REASON, "insufficient_render_budget")
            else:
                await self.finish(JobStatus.Cancelled, "Cancelled", None)
            return
        except RendererError as err:
            await self.finish(JobStatus.Failed, str(err), err.code)
            return
        except _InputError as err:
            await self.finish(JobStatus.Failed, err.reason, err.code)
            return
        except Exception:
            log.exception("render %s failed unexpectedly", render.id)
            await self.finish(JobStatus.Failed, INTERNAL_REASON, "internal_error")
            return

        size = self.out.stat().st_size
        async with self.db.session() as s:
            await self.charge(s)
            done = await store.complete(
                s,
                self.storage,
                render,
                self.owner,
                self.out,
                size_bytes=size,
                encoder_used=str(report.encoder),
                frames_total=int(report.frames),
            )
        if done:
            log.info("render %s completed (%d bytes, %s)", render.id, size, report.encoder)
            return
        # Not ours any more, or cancelled while the last frames were encoded.
        await self.finish(JobStatus.Cancelled, "Cancelled", None)


async def _render_job(
    db: Database, settings: Settings, storage: Storage, render_id: uuid.UUID
) -> None:
    owner = _owner_token()
    async with db.session() as s:
        render = await store.claim(s, render_id, owner, settings.lease_seconds)
    if render is None:
        log.info("render %s is not pending; dropping the message", render_id)
        return
    log.info("render %s claimed by %s (attempt %d)", render.id, owner, render.attempts)
    run = _Run(db, settings, storage, render, owner)
    if settings.chunk_frames and render.frames_total > settings.chunk_frames:
        try:
            inputs = await _resolve_inputs(db, storage, render)
            split = await _split(run, inputs)
        except _InputError as err:
            await run.finish(JobStatus.Failed, err.reason, err.code)
            return
        except RendererError as err:
            await run.finish(JobStatus.Failed, str(err), err.code)
            return
        if split:
            return
        await run.run(inputs)
        return
    await run.run()


@dramatiq.actor(
    actor_name=store.RENDER_ACTOR,
    queue_name="renders",
    max_retries=3,
    min_backoff=1000,
    max_backoff=30_000,
    time_limit=RENDER_TIME_LIMIT_MS,
    throws=(RendererError,),
)
def render(render_id: str) -> None:
    """Render one video by id. Idempotent: only a pending render is claimed; a finished,
    cancelled or already-claimed render makes this a no-op."""
    settings = current_settings()
    storage = current_storage()
    rid = uuid.UUID(render_id)
    run_job(lambda db: _render_job(db, settings, storage, rid))


# --- chunked renders ----------------------------------------------------------------------


def chunk_output(storage: Storage, chunk: RenderChunk) -> Path:
    """Where attempt ``chunk.attempts`` of a chunk is written (under ``tmp/``)."""
    storage.ensure()
    return (
        storage.root / "tmp" / f"render-{chunk.render_id}-chunk{chunk.index}-{chunk.attempts}.mp4"
    )


def remove_chunk_outputs(
    storage: Storage, render_id: uuid.UUID, chunk: RenderChunk | None = None
) -> None:
    """Delete the chunk files of ``render_id`` under ``tmp/`` (only ``chunk``'s current
    attempt when given) and the renderer's scratch folders beside them."""
    tmp_dir = storage.root / "tmp"
    if not tmp_dir.is_dir():
        return
    stem = f"render-{render_id}-chunk"
    name = f"{stem}{chunk.index}-{chunk.attempts}.mp4" if chunk is not None else f"{stem}*"
    for path in [*tmp_dir.glob(name), *tmp_dir.glob(f".{name}.*")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _output_frames(inputs: _Inputs, loaded: Any, rng: tuple[int, int]) -> int:
    from renderer.encoder_config import EncoderConfig
    from renderer.render import output_times

    config = inputs.encoder if inputs.encoder is not None else EncoderConfig()
    fps_t = loaded.template.fps_fraction
    return len(output_times(rng[0], rng[1], fps_t, config.output_fps(fps_t))[1])


async def _split(run: _Run, inputs: _Inputs) -> bool:
    """Hand a claimed long render to its chunks. False when it fits in one chunk after all
    (the caller renders it in one piece); True when the chunks took over or the render was
    cancelled meanwhile."""
    from renderer.concat import chunk_ranges
    from renderer.loader import load_template

    loaded = await asyncio.to_thread(load_template, inputs.template_dir)
    ranges = chunk_ranges(loaded, inputs.encoder, inputs.frames, run.settings.chunk_frames)
    if len(ranges) < 2:  # one range is no split
        return False
    planned = [(a, b, _output_frames(inputs, loaded, (a, b))) for a, b in ranges]
    async with run.db.session() as s:
        chunks = await store.start_chunks(s, run.render, run.owner, planned)
    if chunks is None:
        await run.finish(JobStatus.Cancelled, "Cancelled", None)
        return True
    log.info("render %s split into %d chunks", run.render.id, len(chunks))
    return True


def _run_chunk(
    inputs: _Inputs, rng: tuple[int, int], out: Path, preference: str, control: _Control
) -> Any:
    from renderer.loader import load_template
    from renderer.render import render as render_video

    loaded = load_template(inputs.template_dir)
    return render_video(
        loaded,
        out,
        customizations=inputs.customizations,
        encoder=inputs.encoder,
        frames=rng,
        encoder_preference=preference,  # type: ignore[arg-type]
        on_progress=control.on_progress,
        should_cancel=control.should_cancel,
        audio=False,
    )


class _ChunkRun:
    """One attempt at one chunk by this worker thread: heartbeats its own lease, charges the
    render, and stops when the render is no longer processing."""

    def __init__(
        self, db: Database, settings: Settings, storage: Storage, chunk: RenderChunk, owner: str
    ) -> None:
        self.db, self.settings, self.storage = db, settings, storage
        self.chunk, self.owner = chunk, owner
        self.control = _Control()
        self.last_charge = time.monotonic()
        self.out = chunk_output(storage, chunk)

    async def charge(self, session: Any) -> budget.Charge:
        """Charge the wall time since the previous charge to the chunk's render."""
        now = time.monotonic()
        elapsed_ms = int((now - self.last_charge) * 1000)
        self.last_charge = now
        await store.lock_render(session, self.chunk.render_id)
        parent = await store.fresh_render(session, self.chunk.render_id)
        if parent is None:
            return budget.Charge(0, False)
        return await budget.charge_render(session, parent, elapsed_ms)

    async def heartbeat_loop(self, task: asyncio.Future[Any]) -> None:
        lease = float(self.settings.lease_seconds)
        renew_every = lease / 3
        tick = min(MAX_TICK_S, renew_every)
        last_renew = time.monotonic()
        last_frames = -1
        control = self.control
        while not task.done():
            await asyncio.wait({task}, timeout=tick)
            if task.done():
                return
            renew = time.monotonic() - last_renew >= renew_every
            frames = control.frames_done if control.frames_done != last_frames else None
            try:
                async with self.db.session() as s:
                    beat = await store.chunk_heartbeat(
                        s,
                        self.chunk,
                        self.owner,
                        lease_seconds=lease if renew else None,
                        frames_done=frames,
                    )
                    if beat.owned and renew and (await self.charge(s)).exhausted:
                        control.budget_exhausted = True
            except Exception:
                log.warning("heartbeat for chunk %s failed", self.chunk.id, exc_info=True)
                continue
            if renew:
                last_renew = time.monotonic()
            if frames is not None:
                last_frames = frames
            if not beat.owned:
                control.lease_lost = True
            elif beat.status != JobStatus.Processing:
                control.cancel_requested = True

    async def end(self, status: Any, reason: str, code: str | None = None) -> None:
        """Stop without output (failed: the render fails with ``reason``)."""
        self.out.unlink(missing_ok=True)
        async with self.db.session() as s:
            await self.charge(s)
            ok = await store.end_chunk(s, self.chunk, self.owner, status, reason=reason, code=code)
        if ok:
            log.info(
                "chunk %s of render %s %s: %s",
                self.chunk.index,
                self.chunk.render_id,
                status.value,
                reason,
            )

    async def run(self) -> None:
        chunk, control = self.chunk, self.control
        try:
            async with self.db.session() as s:
                parent = await store.fresh_render(s, chunk.render_id)
            assert parent is not None
            inputs = await _resolve_inputs(self.db, self.storage, parent)
        except _InputError as err:
            await self.end(JobStatus.Failed, err.reason, err.code)
            return
        except RendererError as err:
            await self.end(JobStatus.Failed, str(err), err.code)
            return

        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(
            None,
            _run_chunk,
            inputs,
            (chunk.f_start, chunk.f_end),
            self.out,
            self.settings.encoder,
            control,
        )
        try:
            await self.heartbeat_loop(task)
            report = await task
        except (TimeLimitExceeded, Shutdown) as exc:
            control.stopping = True
            await asyncio.wait({task}, timeout=30)
            if isinstance(exc, TimeLimitExceeded):
                await self.end(
                    JobStatus.Failed, "The render exceeded the worker's time limit", "time_limit"
                )
            raise
        except RenderCancelled:
            if control.lease_lost:
                self.out.unlink(missing_ok=True)
                log.warning("chunk %s: lease lost; another worker owns it now", chunk.id)
            elif control.budget_exhausted:
                await self.end(JobStatus.Failed, BUDGET_REASON, "insufficient_render_budget")
            else:
                await self.end(JobStatus.Cancelled, "Cancelled")
            return
        except RendererError as err:
            await self.end(JobStatus.Failed, str(err), err.code)
            return
        except Exception:
            log.exception("chunk %s of render %s failed unexpectedly", chunk.index, chunk.render_id)
            await self.end(JobStatus.Failed, INTERNAL_REASON, "internal_error")
            return

        relative = self.out.relative_to(self.storage.root).as_posix()
        async with self.db.session() as s:
            # A chunk may be shorter than a charging interval: check the budget here too, or
            # a render of many short chunks would never notice it ran out.
            exhausted = (await self.charge(s)).exhausted
            done = not exhausted and await store.complete_chunk(
                s, chunk, self.owner, relative, str(report.encoder)
            )
        if exhausted:
            await self.end(JobStatus.Failed, BUDGET_REASON, "insufficient_render_budget")
            return
        if not done:
            self.out.unlink(missing_ok=True)
            log.warning("chunk %s: no longer ours on completion; output dropped", chunk.id)


async def _chunk_job(
    db: Database, settings: Settings, storage: Storage, chunk_id: uuid.UUID
) -> None:
    owner = _owner_token()
    async with db.session() as s:
        chunk = await store.claim_chunk(s, chunk_id, owner, settings.lease_seconds)
    if chunk is None:
        log.info("chunk %s is not pending or its render stopped; dropping the message", chunk_id)
        return
    await _ChunkRun(db, settings, storage, chunk, owner).run()


@dramatiq.actor(
    actor_name=store.CHUNK_ACTOR,
    queue_name="renders",
    max_retries=3,
    min_backoff=1000,
    max_backoff=30_000,
    time_limit=RENDER_TIME_LIMIT_MS,
    throws=(RendererError,),
)
def render_chunk(chunk_id: str) -> None:
    """Render one chunk of a long render by id (video only). Idempotent: only a pending
    chunk of a render still processing is claimed."""
    settings = current_settings()
    storage = current_storage()
    cid = uuid.UUID(chunk_id)
    run_job(lambda db: _chunk_job(db, settings, storage, cid))


def _join_work(paths: Sequence[Path], encoder_used: str) -> Work:
    def work(inputs: _Inputs, out: Path, _preference: str, control: _Control) -> Any:
        import tempfile

        from renderer.concat import ChunkMismatch, concat_chunks, finalize
        from renderer.loader import load_template

        loaded = load_template(inputs.template_dir)
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            joined = scratch / "joined.mp4"
            try:
                frames = concat_chunks(paths, joined)
            except ChunkMismatch as exc:
                # e.g. workers with and without NVENC under encoder=auto rendered its chunks.
                raise _InputError(
                    "chunk_mismatch",
                    f"The render's chunks were encoded differently and cannot be joined: {exc}",
                ) from exc
            control.on_progress(frames, frames)
            finalize(
                joined,
                loaded,
                out,
                customizations=inputs.customizations,
                encoder=inputs.encoder,
                frames=inputs.frames,
                extra_audio=inputs.extra_audio,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return SimpleNamespace(encoder=encoder_used, frames=frames)

    return work


async def _finalize_job(
    db: Database, settings: Settings, storage: Storage, render_id: uuid.UUID
) -> None:
    owner = _owner_token()
    async with db.session() as s:
        step, render, chunks = await store.begin_finalize(
            s, render_id, owner, settings.lease_seconds
        )
    if step == "wait" or render is None:
        return
    if step != "join":
        remove_chunk_outputs(storage, render_id)
        if step == "cancelled":
            log.info("render %s cancelled; its chunks are stopped", render_id)
        return
    paths = [storage.abs(c.output_path or "") for c in chunks]
    encoder_used = chunks[0].encoder_used or ""
    run = _Run(db, settings, storage, render, owner, work=_join_work(paths, encoder_used))
    try:
        await run.run()
    finally:
        async with db.session() as s:
            status = await s.scalar(sa.select(Render.status).where(Render.id == render_id))
        if status is not None and status not in store.RUNNING and status != JobStatus.Pending:
            remove_chunk_outputs(storage, render_id)


@dramatiq.actor(
    actor_name=store.FINALIZE_ACTOR,
    queue_name="renders",
    max_retries=3,
    min_backoff=1000,
    max_backoff=30_000,
    time_limit=RENDER_TIME_LIMIT_MS,
    throws=(RendererError,),
)
def finalize_render(render_id: str) -> None:
    """Move a chunked render on: join its completed chunks (mixing the audio once and
    muxing), settle a cancel once no chunk runs, or remove the chunk files of a finished
    render. Idempotent: whatever is not ready is left for the next message."""
    settings = current_settings()
    storage = current_storage()
    rid = uuid.UUID(render_id)
    run_job(lambda db: _finalize_job(db, settings, storage, rid))


# --- webhooks -----------------------------------------------------------------------------


async def _webhook_payload(
    db: Database, render_id: uuid.UUID
) -> tuple[str, bytes, str, str] | None:
    async with db.session() as s:
        row = await s.scalar(sa.select(Render).where(Render.id == render_id))
        if row is None or not row.webhook_url or row.webhook_delivered_at is not None:
            return None
        if row.status not in store.TERMINAL:
            return None
        secret = await s.scalar(sa.select(User.webhook_secret).where(User.id == row.user_id))
        body = render_event_body(
            render_id=str(row.id),
            name=row.name,
            status=row.status.value,
            template_id=str(row.template_id) if row.template_id else None,
            reason=row.reason,
            failure_code=row.failure_code,
            size_bytes=row.size_bytes,
            render_time_ms=row.render_time_ms,
            completed_at=row.completed_at,
        )
        return row.webhook_url, body, secret or "", f"render.{row.status.value}"


async def _mark_delivered(db: Database, render_id: uuid.UUID) -> None:
    from jobs.models.base import utcnow

    async with db.session() as s:
        await s.execute(
            sa.update(Render)
            .where(Render.id == render_id, Render.webhook_delivered_at.is_(None))
            .values(webhook_delivered_at=utcnow())
            .execution_options(synchronize_session=False)
        )


@dramatiq.actor(
    actor_name=store.WEBHOOK_ACTOR,
    queue_name="renders",
    max_retries=8,
    min_backoff=500,
    max_backoff=5 * 60_000,
    time_limit=60_000,
)
def deliver_render_webhook(render_id: str) -> None:
    """POST the signed terminal-state event of a render to its ``webhookUrl``.

    Raises:
        WebhookDeliveryError: non-2xx or unreachable; dramatiq retries with back-off.
    """
    settings = current_settings()
    rid = uuid.UUID(render_id)
    payload = run_job(lambda db: _webhook_payload(db, rid))
    if payload is None:
        return
    url, body, secret, event = payload
    try:
        post_signed(url, body, secret, event=event, timeout_s=settings.webhook_timeout_s)
    except WebhookDeliveryError:
        log.warning("webhook for render %s not delivered; will retry", render_id)
        raise
    run_job(lambda db: _mark_delivered(db, rid))


# --- recovery -----------------------------------------------------------------------------


async def recover_renders(
    db: Database,
    broker: dramatiq.Broker | None = None,
    *,
    storage: Storage | None = None,
    requeue_pending: bool = True,
) -> dict[str, int]:
    """Return stranded renders to the queue.

    Renders whose lease expired while processing go back to pending (and are re-enqueued;
    after ``store.MAX_ATTEMPTS`` they fail), expired ``cancelling`` ones become cancelled.
    With ``requeue_pending`` every pending render is re-enqueued too (start-up: a crash may
    have come between commit and send); duplicates are harmless since claiming is a
    compare-and-set.

    Args:
        db: the database.
        broker: where to send; default the global broker.
        storage: when given, partial outputs of recovered renders are deleted.
        requeue_pending: also re-send every pending render.

    Returns:
        Counts by outcome: ``requeued``, ``failed``, ``cancelled``, ``pending``.
    """
    from jobs.messages import send_outbox

    counts = {"requeued": 0, "failed": 0, "cancelled": 0, "pending": 0}
    async with db.session() as s:
        expired = await store.expired_leases(s)
    for render in expired:
        async with db.sessionmaker() as s:
            try:
                outcome = await store.requeue_expired(s, render)
                if outcome is not None and storage is not None:
                    # Before commit: once committed, a new attempt may start writing.
                    remove_partial_outputs(storage, render.id, render.attempts)
                await s.commit()
            except BaseException:
                await s.rollback()
                raise
            finally:
                send_outbox(s, broker)
        if outcome is None:
            continue
        key = {
            JobStatus.Pending: "requeued",
            JobStatus.Failed: "failed",
            JobStatus.Cancelled: "cancelled",
        }[outcome]
        counts[key] += 1
        log.warning("render %s: lease expired; now %s", render.id, outcome.value)
    await _recover_chunks(db, broker, storage, counts, requeue_pending=requeue_pending)
    if requeue_pending:
        async with db.session() as s:
            ids = await store.pending_ids(s)
        target = broker or dramatiq.get_broker()
        actor: Any = target.get_actor(store.RENDER_ACTOR)
        for rid in ids:
            actor.send(str(rid))
        counts["pending"] = len(ids)
    return counts


async def _recover_chunks(
    db: Database,
    broker: dramatiq.Broker | None,
    storage: Storage | None,
    counts: dict[str, int],
    *,
    requeue_pending: bool,
) -> None:
    """Chunks whose worker died go back to pending (or fail their render, or are cancelled
    with it); chunked renders nobody moves on get a finalize message."""
    from jobs.messages import send_outbox

    async with db.session() as s:
        expired = await store.expired_chunks(s)
    for chunk in expired:
        async with db.sessionmaker() as s:
            try:
                outcome = await store.requeue_expired_chunk(s, chunk)
                if outcome is not None and storage is not None:
                    remove_chunk_outputs(storage, chunk.render_id, chunk)
                await s.commit()
            except BaseException:
                await s.rollback()
                raise
            finally:
                send_outbox(s, broker)
        if outcome is not None:
            counts["chunks_" + outcome.value] = counts.get("chunks_" + outcome.value, 0) + 1
            log.warning(
                "chunk %s of render %s: lease expired; now %s",
                chunk.index,
                chunk.render_id,
                outcome.value,
            )
    settings_lease = _lease_seconds()
    async with db.sessionmaker() as s:
        try:
            sent, _ = await store.requeue_stranded_chunks(
                s, all_pending=requeue_pending, stall_seconds=2 * settings_lease
            )
            await s.commit()
        except BaseException:
            await s.rollback()
            raise
        finally:
            send_outbox(s, broker)
    if sent:
        counts["chunks_resent"] = counts.get("chunks_resent", 0) + sent


def _lease_seconds() -> float:
    try:
        return float(current_settings().lease_seconds)
    except RuntimeError:  # recovery run before jobs.actors.configure(): the default lease
        return float(Settings.model_fields["lease_seconds"].default)


class RenderSweeper:
    """A daemon thread that runs ``recover_renders`` (lease expiry only) every third of
    ``lease_seconds`` with its own event loop and database connection."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="velocity-render-sweeper", daemon=True
        )

    def start(self) -> RenderSweeper:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        db = create_database(self.settings, null_pool=True)
        storage = Storage(self.settings.storage_dir)
        try:
            # Sweeping every third of a lease bounds the wait after a crash to ~1.33 leases.
            while not self._stop.wait(max(1.0, self.settings.lease_seconds / 3)):
                try:
                    loop.run_until_complete(
                        recover_renders(db, self.broker, storage=storage, requeue_pending=False)
                    )
                except Exception:
                    log.exception("render sweeper pass failed")
        finally:
            loop.run_until_complete(db.dispose())
            loop.close()


class RenderSweeperMiddleware(dramatiq.Middleware):
    """Starts a ``RenderSweeper`` when a dramatiq worker boots and stops it at shutdown."""

    def __init__(self) -> None:
        self.sweeper: RenderSweeper | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        try:
            settings = current_settings()
        except RuntimeError:
            log.warning("render sweeper not started: jobs.actors.configure() was not called")
            return
        self.sweeper = RenderSweeper(settings, broker).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.sweeper is not None:
            self.sweeper.stop()
            self.sweeper = None


def install_sweeper(broker: dramatiq.Broker) -> None:
    """Add the ``RenderSweeperMiddleware`` to ``broker`` once (before its worker starts)."""
    if not any(isinstance(m, RenderSweeperMiddleware) for m in broker.middleware):
        broker.add_middleware(RenderSweeperMiddleware())


__all__ = [
    "RenderSweeper",
    "RenderSweeperMiddleware",
    "deliver_render_webhook",
    "finalize_render",
    "install_sweeper",
    "recover_renders",
    "remove_chunk_outputs",
    "remove_partial_outputs",
    "render",
    "render_chunk",
]
