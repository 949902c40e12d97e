"""The skeleton every render attempt shares: a whole render, one chunk of a long render, or
the join of a long render's chunks.

An attempt holds a lease on its row. Its work runs on a helper thread while this thread's
event loop heartbeats every ``tick`` (records progress, charges the render time used so
far, extends the lease every lease/3, and reads the status: a stop request or a lost lease
makes ``should_cancel`` answer True between frames).

Limits are enforced by the work itself, not only by the heartbeat: before it starts, the
attempt charges its set-up time and hands the work a time deadline (what the render may
still use: its own reservation plus the account's free budget, refreshed at every charge)
and an output size cap (its storage reservation plus the account's free space). The
renderer polls the deadline between frames and set-up steps and checks the cap at every
packet, so neither can be passed by more than one frame. How each kind of attempt renews its
lease, charges and ends is up to the subclass; how the work's outcome maps to a status,
reason and failure code is decided here once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dramatiq.middleware import Shutdown, TimeLimitExceeded

from jobs import budget
from jobs.db import Database
from jobs.failures import JobFailure
from jobs.faults import STORAGE_FULL, STORAGE_FULL_REASON, is_disk_full
from jobs.models.base import JobStatus
from jobs.renders.lifecycle import Beat
from jobs.settings import Settings
from jobs.storage import Storage
from renderer.errors import OutputTooLarge, RenderCancelled, RendererError

log = logging.getLogger(__name__)

BUDGET_REASON = "Insufficient render time budget"
INTERNAL_REASON = "Internal error while rendering; the operator can find details in the logs"
TIME_LIMIT_REASON = "The render exceeded the worker's time limit"
QUOTA_CODE = "storage_quota_exceeded"
# Progress, stop requests and the time used are checked and charged this often (seconds);
# the lease is renewed every lease_seconds / 3.
MAX_TICK_S = 0.5

T = TypeVar("T")


def owner_token() -> str:
    """A lease owner naming this worker thread (host, process, thread) and this attempt."""
    return (
        f"{socket.gethostname()[:60]}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"
    )


def quota_reason(limit_bytes: int) -> str:
    """The failure reason of a render whose output does not fit the storage quota."""
    return (
        f"The video would pass the account's storage quota (at most {limit_bytes} bytes were "
        "available to it: its reservation plus the free space); lower encoderConfig.qp, crf "
        "or bitrate, render fewer frames, or delete renders or templates"
    )


class Control:
    """Shared between the render thread (callbacks) and the heartbeat loop. Plain attribute
    writes are atomic under the GIL; each flag only ever goes from False to True.

    ``deadline`` (on ``clock``) is when the render time the attempt may use runs out (None:
    not armed yet); ``max_output_bytes`` caps the output file (None: no cap).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.frames_done = 0
        self.frames_total = 0
        self.cancel_requested = False
        self.lease_lost = False
        self.budget_exhausted = False
        self.stopping = False
        self.deadline: float | None = None
        self.max_output_bytes: int | None = None

    def on_progress(self, done: int, total: int) -> None:
        self.frames_done, self.frames_total = done, total

    def should_cancel(self) -> bool:
        deadline = self.deadline
        if deadline is not None and not self.budget_exhausted and self.clock() >= deadline:
            self.budget_exhausted = True
        return self.cancel_requested or self.lease_lost or self.budget_exhausted or self.stopping

    def check(self) -> None:
        """Raise ``RenderCancelled`` when ``should_cancel`` answers True (for work done
        outside the renderer, e.g. loading the template)."""
        if self.should_cancel():
            raise RenderCancelled("stopped before rendering")


@dataclass(frozen=True)
class Limits:
    """What an attempt may still use: render time (ms) and output bytes."""

    time_ms: int
    output_bytes: int


class Attempt:
    """One leased attempt by this worker thread. Subclasses say how the lease is renewed
    (``beat``), where the time is charged (``charge``) and how the attempt ends without
    output (``end``); ``label`` names it in the logs."""

    label: str

    def __init__(  # noqa: PLR0917
        self,
        db: Database,
        settings: Settings,
        storage: Storage,
        owner: str,
        out: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db, self.settings, self.storage = db, settings, storage
        self.owner, self.out = owner, out
        self.clock = clock
        self.control = Control(clock)
        # Set-up (claiming, resolving inputs, loading the template) is charged too.
        self.last_charge = clock()
        self.started = time.monotonic()  # for the render-seconds metrics

    def take_elapsed_ms(self) -> int:
        """The wall time since the previous charge, which from now on counts as charged."""
        now = self.clock()
        elapsed_ms = int((now - self.last_charge) * 1000)
        # Whole milliseconds only: the remainder is charged with the next slice.
        self.last_charge += elapsed_ms / 1000
        return elapsed_ms

    async def limits(self, session: Any) -> Limits:
        """The render time and output bytes this attempt may still use."""
        raise NotImplementedError

    async def charge_and_limit(self, session: Any) -> bool:
        """Charge the time used so far and move the work's deadline to what is left; True
        when the budget ran out (the work is told to stop)."""
        charge = await self.charge(session)
        limits = await self.limits(session)
        control = self.control
        control.deadline = self.last_charge + limits.time_ms / 1000
        if control.max_output_bytes is None:
            control.max_output_bytes = limits.output_bytes
        if charge.exhausted or limits.time_ms <= 0:
            control.budget_exhausted = True
        return control.budget_exhausted

    async def charge(self, session: Any) -> budget.Charge:
        """Charge ``take_elapsed_ms()`` to the render in ``session``."""
        raise NotImplementedError

    async def beat(self, session: Any, lease_seconds: float | None, frames: int | None) -> Beat:
        """Record ``frames`` done (when not None) and renew the lease for ``lease_seconds``
        (when not None), if this attempt still holds it. ``Beat.status`` is the render's;
        anything but processing asks the attempt to stop."""
        raise NotImplementedError

    async def end(self, status: Any, reason: str, code: str | None = None) -> None:
        """End as ``status`` (failed or cancelled) with ``reason`` and failure ``code``,
        removing the output and charging the time used, if the lease is still ours."""
        raise NotImplementedError

    async def prepare(self, step: Callable[[], Awaitable[T]]) -> T | None:
        """Await ``step()``; when it finds the request cannot be rendered any more
        (``JobFailure``, ``RendererError``) end the attempt failed and return None."""
        try:
            return await step()
        except JobFailure as err:
            await self.end(JobStatus.Failed, err.reason, err.code)
        except RendererError as err:
            await self.end(JobStatus.Failed, str(err), err.code)
        return None

    async def heartbeat_loop(self, task: asyncio.Future[Any]) -> None:
        """Until ``task`` ends: record progress and charge time every tick, renew the lease
        every lease/3, and turn a stop request, a lost lease or an exhausted budget into flags
        the work polls between frames."""
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
                    beat = await self.beat(s, lease if renew else None, frames)
                    if beat.owned:
                        # Every tick, so concurrent renders of one account see each
                        # other's use within a tick.
                        await self.charge_and_limit(s)
            except Exception:
                # A database hiccup must not kill the render; the lease has slack for it.
                log.warning("heartbeat for %s failed", self.label, exc_info=True)
                continue
            if renew:
                last_renew = time.monotonic()
            if frames is not None:
                last_frames = frames
            if not beat.owned:
                control.lease_lost = True
            elif beat.status != JobStatus.Processing:
                # Cancelling, or (for a chunk) the render stopped without it.
                control.cancel_requested = True

    def _runner(self, work: Callable[..., T], args: tuple[Any, ...]) -> Callable[[], T]:
        """``work(*args)`` on the helper thread, or (``settings.render_subprocess``) in a
        niced child process when the work can be sent there (``args`` end with the
        ``Control``, which the child replaces with its own)."""
        from jobs.actors import child

        if (
            self.settings.render_subprocess
            and args
            and args[-1] is self.control
            and child.picklable(work, args[:-1])
        ):
            nice = self.settings.worker_nice
            return lambda: child.run_in_child(work, args[:-1], self.control, nice)
        return lambda: work(*args)

    async def execute(self, work: Callable[..., T], *args: Any) -> T | None:
        """Run ``work(*args)`` on a helper thread under the heartbeat and return what it
        returns; None when it did not finish, after ending the attempt accordingly.

        Raises:
            TimeLimitExceeded, Shutdown: after stopping the work (a time limit also fails
                the attempt with ``time_limit``; on shutdown the lease expires and another
                worker takes the attempt again).
        """
        control = self.control
        async with self.db.session() as s:
            # Renew the lease too: set-up may have taken a good part of it, and the first
            # heartbeat renews only lease/3 from now.
            beat = await self.beat(s, float(self.settings.lease_seconds), None)
            exhausted = beat.owned and await self.charge_and_limit(s)
        if not beat.owned:
            log.warning("%s: lease lost before rendering; another worker owns it now", self.label)
            return None
        if exhausted:
            await self.end(JobStatus.Failed, BUDGET_REASON, "insufficient_render_budget")
            return None
        if beat.status != JobStatus.Processing:
            control.cancel_requested = True
        task = asyncio.get_running_loop().run_in_executor(None, self._runner(work, args))
        try:
            await self.heartbeat_loop(task)
            return await task
        except (TimeLimitExceeded, Shutdown) as exc:
            # Stop the render thread between frames and let it leave the file alone.
            control.stopping = True
            await asyncio.wait({task}, timeout=30)
            if isinstance(exc, TimeLimitExceeded):
                await self.end(JobStatus.Failed, TIME_LIMIT_REASON, "time_limit")
            raise
        except OutputTooLarge as err:
            await self.end(JobStatus.Failed, quota_reason(err.limit), QUOTA_CODE)
        except RenderCancelled:
            if control.lease_lost:
                self.out.unlink(missing_ok=True)
                log.warning("%s: lease lost; another worker owns it now", self.label)
            elif control.budget_exhausted:
                await self.end(JobStatus.Failed, BUDGET_REASON, "insufficient_render_budget")
            else:
                await self.end(JobStatus.Cancelled, "Cancelled")
        except Exception as err:
            if is_disk_full(err):
                log.error("%s: storage full (%s)", self.label, err)
                await self.end(JobStatus.Failed, STORAGE_FULL_REASON, STORAGE_FULL)
            elif isinstance(err, RendererError):
                await self.end(JobStatus.Failed, str(err), err.code)
            elif isinstance(err, JobFailure):
                await self.end(JobStatus.Failed, err.reason, err.code)
            else:
                log.exception("%s failed unexpectedly", self.label)
                await self.end(JobStatus.Failed, INTERNAL_REASON, "internal_error")
        return None


__all__ = [
    "BUDGET_REASON",
    "INTERNAL_REASON",
    "MAX_TICK_S",
    "QUOTA_CODE",
    "TIME_LIMIT_REASON",
    "Attempt",
    "Control",
    "Limits",
    "owner_token",
    "quota_reason",
]
