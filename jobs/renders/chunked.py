"""Chunked renders (SPEC §7): the ``render_chunk`` and ``finalize_render`` actors.

The worker that claims a long render creates GOP-aligned chunks and queues one
``render_chunk`` message each; any worker renders a chunk video-only under its own lease,
charging the time to the render; the chunk that completes last queues ``finalize_render``,
which joins the chunks without re-encoding, mixes the audio once, muxes and completes the
render through the same ``lifecycle.complete`` as a single-piece render.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dramatiq
import sqlalchemy as sa

from jobs import budget, quota
from jobs.actors import current_settings, current_storage, run_job
from jobs.db import Database
from jobs.models.base import JobStatus
from jobs.models.render import Render, RenderChunk
from jobs.renders import chunks as chunk_store
from jobs.renders.attempt import (
    BUDGET_REASON,
    QUOTA_CODE,
    Attempt,
    Control,
    InputError,
    Limits,
    quota_reason,
)
from jobs.renders.base import (
    CHUNK_ACTOR,
    FINALIZE_ACTOR,
    RUNNING,
)
from jobs.renders.lifecycle import Beat
from jobs.renders.single import (
    RENDER_TIME_LIMIT_MS,
    Work,
    _Inputs,
    _owner_token,
    _resolve_inputs,
    _Run,
    render_video,
)
from jobs.settings import Settings
from jobs.storage import Storage
from renderer.errors import RendererError

log = logging.getLogger(__name__)


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


def _run_chunk(
    inputs: _Inputs, rng: tuple[int, int], out: Path, preference: str, control: Control
) -> Any:
    from renderer.template.loader import load_template

    loaded = load_template(inputs.template_dir, trusted=True)
    control.check()
    return render_video(
        inputs,
        loaded,
        out,
        encoder=inputs.encoder,
        frames=rng,
        encoder_preference=preference,
        on_progress=control.on_progress,
        should_cancel=control.should_cancel,
        audio=False,
        max_output_bytes=control.max_output_bytes,
    )


class _ChunkRun(Attempt):
    """One attempt at one chunk by this worker thread: heartbeats its own lease, charges the
    render, and stops when the render is no longer processing."""

    def __init__(  # noqa: PLR0917
        self,
        db: Database,
        settings: Settings,
        storage: Storage,
        chunk: RenderChunk,
        owner: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(db, settings, storage, owner, chunk_output(storage, chunk), clock)
        self.chunk = chunk
        self.label = f"chunk {chunk.index} of render {chunk.render_id}"

    async def charge(self, session: Any) -> budget.Charge:
        """Charge the wall time since the previous charge to the chunk's render."""
        elapsed_ms = self.take_elapsed_ms()
        await chunk_store.lock_render(session, self.chunk.render_id)
        parent = await chunk_store.fresh_render(session, self.chunk.render_id)
        if parent is None:
            return budget.Charge(0, False)
        return await budget.charge_render(session, parent, elapsed_ms)

    async def limits(self, session: Any) -> Limits:
        """The render's reservations plus the account's free budget and space, less what
        its chunks already completed take on disk."""
        parent = await chunk_store.fresh_render(session, self.chunk.render_id)
        if parent is None:
            return Limits(0, 0)
        free_ms = (await budget.budget_status(session, parent.user_id)).remaining_ms
        free_bytes = await quota.free_bytes(session, parent.user_id)
        done = await self._completed_bytes(session)
        return Limits(
            time_ms=max(0, parent.reserved_render_ms) + free_ms,
            output_bytes=max(0, max(0, parent.reserved_storage_bytes) + free_bytes - done),
        )

    async def _completed_bytes(self, session: Any) -> int:
        total = 0
        for sibling in await chunk_store.chunks_of(session, self.chunk.render_id):
            if sibling.id == self.chunk.id or sibling.status != JobStatus.Completed:
                continue
            path = self.storage.abs(sibling.output_path or "")
            total += path.stat().st_size if path.is_file() else 0
        return total

    async def beat(self, session: Any, lease_seconds: float | None, frames: int | None) -> Beat:
        return await chunk_store.chunk_heartbeat(
            session, self.chunk, self.owner, lease_seconds=lease_seconds, frames_done=frames
        )

    async def end(self, status: Any, reason: str, code: str | None = None) -> None:
        """Stop without output (failed: the render fails with ``reason``)."""
        self.out.unlink(missing_ok=True)
        async with self.db.session() as s:
            await self.charge(s)
            ok = await chunk_store.end_chunk(
                s, self.chunk, self.owner, status, reason=reason, code=code
            )
        if ok:
            log.info("%s %s: %s", self.label, status.value, reason)

    async def _inputs(self) -> _Inputs:
        async with self.db.session() as s:
            parent = await chunk_store.fresh_render(s, self.chunk.render_id)
        assert parent is not None
        return await _resolve_inputs(self.db, self.storage, parent, self.settings)

    async def run(self) -> None:
        chunk = self.chunk
        inputs = await self.prepare(self._inputs)
        if inputs is None:
            return
        report = await self.execute(
            _run_chunk,
            inputs,
            (chunk.f_start, chunk.f_end),
            self.out,
            self.settings.encoder,
            self.control,
        )
        if report is None:
            return
        relative = self.out.relative_to(self.storage.root).as_posix()
        async with self.db.session() as s:
            # A chunk may be shorter than a charging interval: check the budget here too, or
            # a render of many short chunks would never notice it ran out.
            exhausted = (await self.charge(s)).exhausted
            # The chunks together must fit too (each was capped only by what was free when
            # it started).
            limits = await self.limits(s)
            too_big = self.out.stat().st_size > limits.output_bytes
            done = (
                not exhausted
                and not too_big
                and await chunk_store.complete_chunk(
                    s,
                    chunk,
                    self.owner,
                    relative,
                    str(report.encoder),
                    cached_frames=int(getattr(report, "cached_frames", 0)),
                )
            )
        if exhausted:
            await self.end(JobStatus.Failed, BUDGET_REASON, "insufficient_render_budget")
            return
        if too_big:
            cap = self.control.max_output_bytes or limits.output_bytes
            await self.end(JobStatus.Failed, quota_reason(cap), QUOTA_CODE)
            return
        if not done:
            self.out.unlink(missing_ok=True)
            log.warning("%s: no longer ours on completion; output dropped", self.label)


async def _chunk_job(
    db: Database,
    settings: Settings,
    storage: Storage,
    chunk_id: uuid.UUID,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    owner = _owner_token()
    async with db.session() as s:
        chunk = await chunk_store.claim_chunk(s, chunk_id, owner, settings.lease_seconds)
    if chunk is None:
        log.info("chunk %s is not pending or its render stopped; dropping the message", chunk_id)
        return
    await _ChunkRun(db, settings, storage, chunk, owner, clock).run()


@dramatiq.actor(
    actor_name=CHUNK_ACTOR,
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


def _join_work(paths: Sequence[Path], encoder_used: str, cached_frames: int) -> Work:
    def work(inputs: _Inputs, out: Path, _preference: str, control: Control) -> Any:
        import tempfile

        from renderer.encode.concat import ChunkMismatch, concat_chunks, finalize
        from renderer.template.loader import load_template

        loaded = load_template(inputs.template_dir, trusted=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            joined = scratch / "joined.mp4"
            try:
                frames = concat_chunks(paths, joined)
            except ChunkMismatch as exc:
                # e.g. workers with and without NVENC under encoder=auto rendered its chunks.
                raise InputError(
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
        return SimpleNamespace(
            encoder=encoder_used, frames=frames, cached_frames=cached_frames, text_fits=()
        )

    return work


async def _finalize_job(
    db: Database, settings: Settings, storage: Storage, render_id: uuid.UUID
) -> None:
    owner = _owner_token()
    async with db.session() as s:
        step, render, chunks = await chunk_store.begin_finalize(
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
    run = _Run(
        db,
        settings,
        storage,
        render,
        owner,
        work=_join_work(paths, encoder_used, sum(c.cached_frames for c in chunks)),
    )
    try:
        await run.run()
    finally:
        async with db.session() as s:
            status = await s.scalar(sa.select(Render.status).where(Render.id == render_id))
        if status is not None and status not in RUNNING and status != JobStatus.Pending:
            remove_chunk_outputs(storage, render_id)


@dramatiq.actor(
    actor_name=FINALIZE_ACTOR,
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


__all__ = [
    "chunk_output",
    "finalize_render",
    "remove_chunk_outputs",
    "render_chunk",
]
