"""Chunked renders (SPEC §7): one attempt at a chunk (``chunk_job``) and the join of a
long render's chunks (``finalize_job``), which the ``render_chunk`` and ``finalize_render``
actors in ``jobs.renders.actors`` call.

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

from jobs import budget, quota
from jobs.db import Database
from jobs.failures import JobFailure
from jobs.models.base import JobStatus
from jobs.models.render import RenderChunk
from jobs.renders import chunks as chunk_store
from jobs.renders import queries
from jobs.renders.attempt import (
    BUDGET_REASON,
    QUOTA_CODE,
    Attempt,
    Control,
    Limits,
    owner_token,
    quota_reason,
)
from jobs.renders.base import (
    RUNNING,
)
from jobs.renders.inputs import Inputs, Work, render_video, resolve_inputs
from jobs.renders.lifecycle import Beat
from jobs.renders.single import RenderRun
from jobs.settings import Settings
from jobs.storage import Storage

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
    inputs: Inputs, rng: tuple[int, int], out: Path, preference: str, control: Control
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

    async def _inputs(self) -> Inputs:
        async with self.db.session() as s:
            parent = await chunk_store.fresh_render(s, self.chunk.render_id)
        assert parent is not None
        return await resolve_inputs(self.db, self.storage, parent, self.settings)

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


async def chunk_job(
    db: Database,
    settings: Settings,
    storage: Storage,
    chunk_id: uuid.UUID,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Claim chunk ``chunk_id`` and render it; a chunk that is not pending, or whose render
    stopped, makes this a no-op."""
    owner = owner_token()
    async with db.session() as s:
        chunk = await chunk_store.claim_chunk(s, chunk_id, owner, settings.lease_seconds)
    if chunk is None:
        log.info("chunk %s is not pending or its render stopped; dropping the message", chunk_id)
        return
    await _ChunkRun(db, settings, storage, chunk, owner, clock).run()


def _join_work(paths: Sequence[Path], encoder_used: str, cached_frames: int) -> Work:
    def work(inputs: Inputs, out: Path, _preference: str, control: Control) -> Any:
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
                raise JobFailure(
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


async def finalize_job(
    db: Database, settings: Settings, storage: Storage, render_id: uuid.UUID
) -> None:
    """Join the chunks of render ``render_id`` once all are completed, settle a cancel once
    none runs, or remove the chunk files of a finished render; otherwise a no-op."""
    owner = owner_token()
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
    run = RenderRun(
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
            status = await queries.render_status(s, render_id)
        if status is not None and status not in RUNNING and status != JobStatus.Pending:
            remove_chunk_outputs(storage, render_id)


__all__ = [
    "chunk_job",
    "chunk_output",
    "finalize_job",
    "remove_chunk_outputs",
]
