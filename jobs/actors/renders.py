"""The render actor: claim, lease heartbeat, cancellation, budget charging, completion.

One render runs like this on a worker thread: a compare-and-set claims it (a worker that
loses the race drops the message); the renderer runs on a helper thread while this thread's
event loop heartbeats every ``tick`` (extends the lease, records progress, charges the
render time used so far, and reads the status: ``cancelling`` or a lost lease makes
``should_cancel`` answer True between frames). The output is rendered under ``tmp/`` and
moved into place by the same transaction that marks the render completed, so the file and
the ``completed`` transition happen once even when two workers race.

A render longer than ``settings.chunk_frames`` output frames is split instead (SPEC §7) and
handed to ``jobs.actors.render_chunks``.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import sqlalchemy as sa
from dramatiq.middleware import Shutdown, TimeLimitExceeded

from jobs import budget
from jobs.actors import current_settings, current_storage, run_job
from jobs.db import Database
from jobs.models.base import JobStatus
from jobs.models.library import Asset, Audio, Template
from jobs.models.render import Render
from jobs.settings import Settings
from jobs.storage import Storage
from jobs.store import render_chunks as chunk_store
from jobs.store import render_lifecycle as lifecycle
from jobs.store.render_base import (
    RENDER_ACTOR,
)
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
                    beat = await lifecycle.heartbeat(
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
            ok = await lifecycle.finish_unsuccessful(
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
            done = await lifecycle.complete(
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
        chunks = await chunk_store.start_chunks(s, run.render, run.owner, planned)
    if chunks is None:
        await run.finish(JobStatus.Cancelled, "Cancelled", None)
        return True
    log.info("render %s split into %d chunks", run.render.id, len(chunks))
    return True


async def _render_job(
    db: Database, settings: Settings, storage: Storage, render_id: uuid.UUID
) -> None:
    owner = _owner_token()
    async with db.session() as s:
        render = await lifecycle.claim(s, render_id, owner, settings.lease_seconds)
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
    actor_name=RENDER_ACTOR,
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


__all__ = [
    "remove_partial_outputs",
    "render",
    "tmp_output",
]
