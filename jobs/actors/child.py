"""Render work in a child process at a lower CPU priority.

The worker thread keeps the lease, progress and cancellation (cheap database work); the
CPU-heavy renderer runs in a process forked from a forkserver that has the renderer already
imported, niced by ``settings.worker_nice``. In the embedded mode that keeps renders from
starving the API on the same cores (the scheduler favours the un-niced API process), and a
crash in native code costs one attempt, not the service.

Progress and the stop flag cross the process boundary through shared memory; the result or
the exception comes back through a pipe. A child whose parent died stops at the next frame.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable
from typing import Any

from jobs.faults import is_disk_full
from jobs.queues import CHILD_PRELOAD
from jobs.renders.attempt import Control

log = logging.getLogger(__name__)

POLL_S = 0.05
_ctx_lock = threading.Lock()
_ctx: list[Any] = []


class ChildDied(RuntimeError):
    """The render process ended without a result (killed, or crashed in native code)."""


def _context() -> Any:
    with _ctx_lock:
        if not _ctx:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(list(CHILD_PRELOAD))
            _ctx.append(ctx)
        return _ctx[0]


class _ChildControl:
    """The child's side of ``Control``: progress out, the stop flag in (the parent sets it
    for a cancel, a lost lease or a spent budget), and the output cap as a plain value."""

    def __init__(
        self, progress: Any, stop: Any, parent: int, max_output_bytes: int | None = None
    ) -> None:
        self.progress, self.stop, self.parent = progress, stop, parent
        self.max_output_bytes = max_output_bytes

    def on_progress(self, done: int, total: int) -> None:
        self.progress[0], self.progress[1] = done, total

    def should_cancel(self) -> bool:
        return bool(self.stop.value) or os.getppid() != self.parent

    def check(self) -> None:
        """Raise ``RenderCancelled`` when asked to stop (work outside the renderer)."""
        if self.should_cancel():
            from renderer.errors import RenderCancelled

            raise RenderCancelled("stopped before rendering")


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a stand-in that keeps what decides the outcome
    (a full disk stays an ENOSPC ``OSError``)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        if is_disk_full(exc):
            return OSError(errno.ENOSPC, str(exc))
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _child_main(  # noqa: PLR0917 - the process entry point
    work: Callable[..., Any],
    args: tuple[Any, ...],
    progress: Any,
    stop: Any,
    conn: Any,
    nice: int,
    max_output_bytes: int | None = None,
) -> None:
    if nice:
        os.nice(nice)
    control = _ChildControl(progress, stop, os.getppid(), max_output_bytes)
    try:
        result: tuple[str, Any] = ("ok", work(*args, control))
    except BaseException as exc:
        result = ("error", _portable(exc))
    conn.send(result)
    conn.close()


def _noop(control: Any) -> None:
    return None


def warm() -> None:
    """Start the forkserver and let it import the renderer now (a worker calls this before
    it takes jobs), not during the first render, where that CPU would compete with the
    work of leases held by this and other workers."""
    run_in_child(_noop, (), Control(), 0)


def picklable(work: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    """Whether ``work(*args)`` can be sent to a child (module-level function, plain data)."""
    try:
        pickle.dumps((work, args))
    except Exception:
        return False
    return True


def run_in_child(
    work: Callable[..., Any], args: tuple[Any, ...], control: Control, nice: int
) -> Any:
    """Run ``work(*args, child_control)`` in a niced child process and return its result;
    ``control`` mirrors the child's progress and passes stop requests on. Blocks (call it
    from a helper thread).

    Raises:
        What ``work`` raised (re-raised here), or ``ChildDied``.
    """
    ctx = _context()
    progress = ctx.Array("q", 2, lock=False)
    stop = ctx.Value("b", 0, lock=False)
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child_main,
        args=(work, args, progress, stop, sender, nice, control.max_output_bytes),
        name="velocity-render",
        daemon=True,
    )
    proc.start()
    sender.close()
    log.debug("render work %s in child process %s", getattr(work, "__name__", work), proc.pid)
    try:
        while True:
            if receiver.poll(POLL_S):
                try:
                    kind, payload = receiver.recv()
                except EOFError:
                    raise ChildDied(
                        f"the render process ended with exit code {proc.exitcode}"
                    ) from None
                break
            control.on_progress(int(progress[0]), int(progress[1]))
            if control.should_cancel():
                stop.value = 1
            if not proc.is_alive() and not receiver.poll():
                proc.join()
                raise ChildDied(f"the render process ended with exit code {proc.exitcode}")
    finally:
        receiver.close()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
    control.on_progress(int(progress[0]), int(progress[1]))
    if kind == "error":
        raise payload
    return payload


__all__ = ["ChildDied", "picklable", "run_in_child", "warm"]
