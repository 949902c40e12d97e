"""One attempt at a whole render: claim, lease heartbeat, cancellation, budget charging,
completion (the ``render`` actor in ``jobs.renders.actors`` calls ``render_job``).

One render runs like this on a worker thread: a compare-and-set claims it (a worker that
loses the race drops the message); the renderer runs under the heartbeat of
``jobs.renders.attempt`` (``cancelling`` or a lost lease stops it between frames). The
output is rendered under ``tmp/`` and moved into place by the same transaction that marks
the render completed, so the file and the ``completed`` transition happen once even when
two workers race.

A render longer than ``settings.chunk_frames`` output frames is split instead (SPEC §7) and
handed to ``jobs.renders.chunked``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs import budget, metrics, quota
from jobs.db import Database
from jobs.faults import is_unavailable
from jobs.logs import bind
from jobs.models.base import JobStatus
from jobs.models.render import Render
from jobs.renders import chunks as chunk_store
from jobs.renders import lifecycle, queries
from jobs.renders.attempt import (
    BUDGET_REASON,
    QUOTA_CODE,
    Attempt,
    Control,
    Limits,
    owner_token,
    quota_reason,
)
from jobs.renders.inputs import (
    Inputs,
    Work,
    remove_partial_outputs,
    render_video,
    resolve_inputs,
    tmp_output,
)
from jobs.renders.lifecycle import Beat
from jobs.settings import Settings
from jobs.storage import Storage

log = logging.getLogger(__name__)

# Completing a finished render is retried while the database is unavailable: first after
# COMPLETE_RETRY_FIRST_S, doubling up to COMPLETE_RETRY_MAX_S, for at least
# COMPLETE_RETRY_MIN_S (three leases when longer).
COMPLETE_RETRY_FIRST_S = 0.1
COMPLETE_RETRY_MAX_S = 1.0
COMPLETE_RETRY_MIN_S = 60.0


def _run_renderer(inputs: Inputs, out: Path, preference: str, control: Control) -> Any:
    from renderer.template.loader import load_template

    loaded = load_template(inputs.template_dir, trusted=True)
    control.check()
    return render_video(
        inputs,
        loaded,
        out,
        encoder=inputs.encoder,
        frames=inputs.frames,
        extra_audio=inputs.extra_audio,
        encoder_preference=preference,
        on_progress=control.on_progress,
        should_cancel=control.should_cancel,
        max_output_bytes=control.max_output_bytes,
    )


class RenderRun(Attempt):
    """One attempt at one render (whole, or the join of its chunks) by this worker thread."""

    def __init__(  # noqa: PLR0917 - the work function varies by kind of attempt
        self,
        db: Database,
        settings: Settings,
        storage: Storage,
        render: Render,
        owner: str,
        work: Work = _run_renderer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            db, settings, storage, owner, tmp_output(storage, render.id, render.attempts), clock
        )
        self.render, self.work = render, work
        self.label = f"render {render.id}"

    async def charge(self, session: Any) -> budget.Charge:
        """Charge the wall time since the previous charge to the render."""
        return await budget.charge_render(session, self.render, self.take_elapsed_ms())

    async def limits(self, session: Any) -> Limits:
        """The render's own reservations plus what the account has free."""
        free_ms = (await budget.budget_status(session, self.render.user_id)).remaining_ms
        free_bytes = await quota.free_bytes(session, self.render.user_id)
        return Limits(
            time_ms=max(0, self.render.reserved_render_ms) + free_ms,
            output_bytes=max(0, self.render.reserved_storage_bytes) + free_bytes,
        )

    async def beat(self, session: Any, lease_seconds: float | None, frames: int | None) -> Beat:
        return await lifecycle.heartbeat(
            session,
            self.render.id,
            self.owner,
            lease_seconds=lease_seconds,
            frames_done=frames,
            frames_total=self.control.frames_total or None,
        )

    async def end(self, status: Any, reason: str, code: str | None = None) -> None:
        """End as failed or cancelled (if the lease is still ours), charging the time used."""
        remove_partial_outputs(self.storage, self.render.id, self.render.attempts)
        async with self.db.session() as s:
            if await queries.lease_owner(s, self.render.id) != self.owner:
                log.warning("render %s: lease lost before ending %s", self.render.id, status)
                return
            await self.charge(s)
            ok = await lifecycle.finish_unsuccessful(
                s, self.render, self.owner, status, reason=reason, code=code
            )
        if ok:
            log.info("render %s %s: %s", self.render.id, status.value, reason)

    async def complete(self, report: Any, size: int) -> str:
        """Charge the time used and mark the render completed with its output moved into
        place; while the database is unavailable, retry with bounded back-off and keep the
        finished file (the compare-and-set on our lease owner makes a late retry safe).

        Returns ``completed``; ``lost`` (no longer ours, or cancelled meanwhile);
        ``exhausted`` (the budget ran out: what was left is charged, nothing completed);
        ``over_quota`` (the file does not fit the quota: rolled back, the time uncharged
        for ``end`` to charge)."""
        render, elapsed_ms = self.render, self.take_elapsed_ms()
        final = self.storage.new_path("renders", render.user_id, render.id, ".mp4")
        deadline = time.monotonic() + max(COMPLETE_RETRY_MIN_S, 3 * self.settings.lease_seconds)
        delay, retried = COMPLETE_RETRY_FIRST_S, False
        while True:
            try:
                async with self.db.session() as s:
                    if retried and await self._completed_by_lost_commit(s, final):
                        self.storage.move_into_place(self.out, final)
                        return "completed"
                    if (await budget.charge_render(s, render, elapsed_ms)).exhausted:
                        return "exhausted"  # the session commits the capped charge
                    done = await lifecycle.complete(
                        s,
                        self.storage,
                        render,
                        self.owner,
                        self.out,
                        size_bytes=size,
                        encoder_used=str(report.encoder),
                        frames_total=int(report.frames),
                        cached_frames=int(getattr(report, "cached_frames", 0)),
                    )
                    return "completed" if done else "lost"
            except lifecycle.OverQuota:
                # The charge was rolled back with the completion: leave it for end().
                self.last_charge -= elapsed_ms / 1000
                return "over_quota"
            except Exception as exc:
                # The move into place happens before the commit: take the file back.
                final_abs = self.storage.abs(final)
                if not self.out.exists() and final_abs.exists():
                    os.replace(final_abs, self.out)
                if is_unavailable(exc) is None or time.monotonic() + delay > deadline:
                    raise
                metrics.COMPLETION_RETRIES.inc()
                log.warning(
                    "render %s finished but the %s is unavailable; retrying completion in %.1fs",
                    render.id,
                    is_unavailable(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                delay, retried = min(2 * delay, COMPLETE_RETRY_MAX_S), True

    async def _completed_by_lost_commit(self, session: Any, final: str) -> bool:
        """True when an earlier try committed although its connection failed (the row is
        completed with this output): only the file still has to be moved into place."""
        output = await queries.completed_output(session, self.render.id)
        return output == final and self.out.exists()

    async def run(self, inputs: Inputs | None = None) -> None:
        render = self.render
        if inputs is None:
            inputs = await self.prepare(
                lambda: resolve_inputs(self.db, self.storage, render, self.settings)
            )
            if inputs is None:
                return
        report = await self.execute(
            self.work, inputs, self.out, self.settings.encoder, self.control
        )
        if report is None:
            return
        size = self.out.stat().st_size
        outcome = await self.complete(report, size)
        if outcome == "exhausted":
            # The last frames, the flush and the mux count too: a render that ran out on
            # the way fails, charged what was left.
            await self.end(JobStatus.Failed, BUDGET_REASON, "insufficient_render_budget")
            return
        if outcome == "over_quota":
            # Rolled back, so nothing was booked; end() removes the file and releases the
            # reservations.
            cap = self.control.max_output_bytes or render.reserved_storage_bytes
            await self.end(JobStatus.Failed, quota_reason(max(cap, 0)), QUOTA_CODE)
            return
        if outcome == "completed":
            log.info("render %s completed (%d bytes, %s)", render.id, size, report.encoder)
            seconds = max(1e-6, time.monotonic() - self.started)
            metrics.RENDER_SECONDS.labels("render").observe(seconds)
            metrics.RENDER_FPS.labels("render").observe(int(report.frames) / seconds)
            for fit in report.text_fits:
                if fit.uncovered:  # drawn as missing-glyph boxes; the rest of the text is drawn
                    log.warning(
                        "render %s: text layer %s has characters no font has: %s",
                        render.id,
                        fit.layer_id,
                        ", ".join(f"U+{ord(ch):04X}" for ch in fit.uncovered[:20]),
                    )
            return
        # Not ours any more, or cancelled while the last frames were encoded.
        await self.end(JobStatus.Cancelled, "Cancelled", None)


async def _split(run: RenderRun, inputs: Inputs) -> bool:
    """Hand a claimed long render to its chunks. False when it fits in one chunk after all
    (the caller renders it in one piece); True when the chunks took over or the render was
    cancelled meanwhile."""
    from renderer.plan import OutputPlan
    from renderer.template.loader import load_template

    loaded = await asyncio.to_thread(load_template, inputs.template_dir, trusted=True)
    plan = OutputPlan.of(loaded.template, inputs.encoder, inputs.frames)
    parts = plan.chunks(run.settings.chunk_frames)
    if len(parts) < 2:  # one range is no split
        return False
    planned = [(part.f_start, part.f_end, part.frames) for part in parts]
    async with run.db.session() as s:
        # Planning loaded the template: that set-up time is the render's too (charged
        # before any chunk exists to charge it concurrently).
        await run.charge(s)
        chunks = await chunk_store.start_chunks(s, run.render, run.owner, planned)
    if chunks is None:
        await run.end(JobStatus.Cancelled, "Cancelled", None)
        return True
    log.info("render %s split into %d chunks", run.render.id, len(chunks))
    return True


async def render_job(
    db: Database,
    settings: Settings,
    storage: Storage,
    render_id: uuid.UUID,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Claim render ``render_id`` and run it (in one piece, or split into chunks); a render
    that is not pending (finished, cancelled, claimed elsewhere) makes this a no-op."""
    owner = owner_token()
    async with db.session() as s:
        render = await lifecycle.claim(s, render_id, owner, settings.lease_seconds)
    if render is None:
        log.info("render %s is not pending; dropping the message", render_id)
        return
    with bind(account=render.user_id):
        await _run_claimed(db, settings, storage, render, owner, clock)


async def _run_claimed(  # noqa: PLR0917 - the claimed render and the job's context
    db: Database,
    settings: Settings,
    storage: Storage,
    render: Render,
    owner: str,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    log.info("render %s claimed by %s (attempt %d)", render.id, owner, render.attempts)
    run = RenderRun(db, settings, storage, render, owner, clock=clock)
    if settings.chunk_frames and render.frames_total > settings.chunk_frames:

        async def plan() -> tuple[Inputs, bool]:
            inputs = await resolve_inputs(db, storage, render, settings)
            return inputs, await _split(run, inputs)

        planned = await run.prepare(plan)
        if planned is None:
            return
        inputs, split = planned
        if split:
            return
        await run.run(inputs)
        return
    await run.run()


__all__ = [
    "RenderRun",
    "render_job",
]
