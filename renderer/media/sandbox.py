"""Untrusted native code in a child process (CONVENTIONS 17): the Lottie sandbox.

ThorVG parses and draws Lottie JSON that strangers upload; a file can overflow its stack
(self-referencing precomps), spin for ever (expressions) or exhaust memory. So the engine never
runs in a service process: each Lottie source gets a child of its own (``lottie_child.py``),
which sets rlimits on itself (address space, CPU seconds per command, no core or files) before
it reads a byte, and this side enforces a wall-time limit per command, polls the render's
``should_cancel`` while it waits, and kills the child on a crash, a hang or cancel. Children are
single-use (one animation, then killed), so no engine state, font or cache survives from one
tenant's file to the next, and a small pool of already started children hides their start-up.

No lock is held while a child draws: the pool's lock only guards its list of idle children.
Limits come from the composition root through ``configure``; the renderer reads no settings.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import json
import mmap
import os
import selectors
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from renderer.errors import LottieCrashed, LottieTimedOut, RenderCancelled, UnsupportedMedia

ENGINE_PACKAGE = "thorvg-python"
_CHILD = Path(__file__).with_name("lottie_child.py")
_MAX_REPLY = 64 * 1024
_CANCEL_POLL_S = 0.1


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one Lottie child process.

    ``frame_timeout_s``: wall time to draw one frame; ``load_timeout_s``: wall time to start
    the child and parse the animation; ``cpu_s``: CPU seconds per command (an rlimit, the
    backstop should this process die); ``memory_mb``: the child's address space (0: none);
    ``pool``: children kept started and idle."""

    frame_timeout_s: float = 5.0
    load_timeout_s: float = 20.0
    cpu_s: float = 10.0
    memory_mb: int = 1024
    pool: int = 2


class _Pool:
    def __init__(self) -> None:
        self.limits = SandboxLimits()
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._library: str | None = None
        self._library_error: str | None = None

    def library(self) -> str:
        """Path of libthorvg shipped by the engine package.

        Raises:
            UnsupportedMedia: the package or its library is missing.
        """
        if self._library is None and self._library_error is None:
            try:
                spec = importlib.util.find_spec("thorvg_python")
            except (ImportError, ValueError):  # a broken or blocked installation
                spec = None
            folders = list(spec.submodule_search_locations or []) if spec else []
            found = [p for f in folders for p in sorted(Path(f).glob("libthorvg*.so*"))]
            if not spec:
                self._library_error = (
                    f"the Lottie engine (Python package {ENGINE_PACKAGE}) is not installed"
                )
            elif not found:
                self._library_error = (
                    f"the Lottie engine ({ENGINE_PACKAGE}) cannot start: "
                    "its shared library libthorvg is missing"
                )
            else:
                self._library = str(found[0])
        if self._library is None:
            raise UnsupportedMedia(self._library_error or "the Lottie engine is unavailable")
        return self._library

    def _spawn(self) -> _Child:
        limits = self.limits
        # The canvas: shared memory the child draws into, sized and sealed at load.
        fd = os.memfd_create("velocity-lottie", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",  # no PYTHON* variables, user site or script folder on the path
                    str(_CHILD),
                    self.library(),
                    str(limits.memory_mb),
                    repr(limits.cpu_s),
                    str(fd),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd="/",
                env={},  # none of the service's secrets (database URL, admin key...)
                close_fds=True,
                pass_fds=(fd,),
                start_new_session=True,  # a terminal's Ctrl-C goes to the service, not here
            )
        except BaseException:
            os.close(fd)
            raise
        return _Child(proc, fd)

    def take(self) -> tuple[_Child, SandboxLimits]:
        """A started child (from the pool when one is idle) and the limits it runs under."""
        self.library()
        with self._lock:
            limits = self.limits
            proc = self._idle.pop() if self._idle else None
            # Refill now: a child boots (interpreter + engine) while this one is used.
            while len(self._idle) < limits.pool:
                self._idle.append(self._spawn())
        if proc is None or proc.proc.poll() is not None:
            if proc is not None:
                _reap(proc)
            proc = self._spawn()
        return proc, limits

    def configure(self, limits: SandboxLimits) -> None:
        with self._lock:
            self.limits = limits
            idle, self._idle = self._idle, []
        for proc in idle:
            _reap(proc)

    def shutdown(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for proc in idle:
            _reap(proc)


_POOL = _Pool()
atexit.register(_POOL.shutdown)


def configure(limits: SandboxLimits) -> None:
    """Set the limits for Lottie children started from now on (the composition root calls
    this once with values from its settings). Idle children started under older limits are
    stopped."""
    _POOL.configure(limits)


def current_limits() -> SandboxLimits:
    return _POOL.limits


def engine_unavailable_reason() -> str | None:
    """Why Lottie animations cannot be drawn here, or None when they can."""
    try:
        _POOL.library()
    except UnsupportedMedia as exc:
        return str(exc)
    return None


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    fd: int  # the memfd shared with it; -1 once closed


def _reap(child: _Child) -> None:
    proc = child.proc
    with contextlib.suppress(OSError):
        proc.kill()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    if child.fd >= 0:
        with contextlib.suppress(OSError):
            os.close(child.fd)
        child.fd = -1


class _Gone(Exception):
    """The child closed its end: it crashed or was killed."""


class _Late(Exception):
    """The deadline passed before the child answered."""


class LottieProcess:
    """The parent's handle on one sandboxed animation.

    Args:
        doc: the Lottie JSON (already checked and made self-contained by ``read_lottie``).
        width, height: the canvas in pixels.
        fonts: font files to offer its text layers (the first is the fallback).
        label: how messages name the animation, e.g. ``layer 'logo' (lottie/intro.json)``.
        should_cancel: polled while waiting on the child; True kills it.

    Raises:
        UnsupportedMedia: the engine is unavailable or refuses the animation.
        LottieCrashed / LottieTimedOut: the child died or overran while loading.
        RenderCancelled: ``should_cancel`` answered True.
    """

    def __init__(
        self,
        doc: bytes,
        width: int,
        height: int,
        *,
        fonts: Sequence[Path] = (),
        label: str,
        should_cancel: Callable[[], bool] | None = None,
    ) -> None:
        self.width, self.height = width, height
        self._label = label
        self._cancel = should_cancel
        self._child, self._limits = _POOL.take()
        self._proc = self._child.proc
        self._closed = False
        self._canvas: mmap.mmap | None = None
        self.total = 0.0
        try:
            size = width * height * 4
            os.ftruncate(self._child.fd, size)
            # Sealed at its size: a child that went rogue cannot shrink the file under our
            # mapping (reading past its end would be a SIGBUS here).
            fcntl.fcntl(
                self._child.fd,
                fcntl.F_ADD_SEALS,
                fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL,
            )
            self._canvas = mmap.mmap(self._child.fd, size, prot=mmap.PROT_READ)
            deadline = time.monotonic() + self._limits.load_timeout_s
            ready = self._reply(deadline, "start")
            if not ready.get("ready"):
                raise UnsupportedMedia(f"{label}: the Lottie engine cannot start in its sandbox")
            command = {"cmd": "load", "w": width, "h": height, "fonts": [str(f) for f in fonts]}
            self._send(_frame(json.dumps(command).encode()) + _frame(doc), "load")
            answer = self._reply(deadline, "load")
            if not answer.get("ok"):
                raise UnsupportedMedia(
                    f"{label}: not a Lottie animation the engine can draw "
                    f"({_text(answer.get('error'))})"
                )
            total = answer.get("total")
            self.total = float(total) if isinstance(total, (int, float)) else 0.0
        except BaseException:
            self.close()
            raise

    def frame(self, number: float, out: Any) -> None:
        """Draw frame ``number`` into ``out``, a writable C-contiguous buffer of
        ``width * height * 4`` bytes (premultiplied RGBA).

        Raises:
            LottieCrashed: the child died while drawing (it is not replaced for this source).
            LottieTimedOut: it overran ``frame_timeout_s``.
            UnsupportedMedia: the engine refused the frame.
            RenderCancelled: ``should_cancel`` answered True while waiting.
        """
        what = f"frame {number:g}"
        if self._closed:
            raise LottieCrashed(f"{self._label}: the Lottie sandbox was stopped before {what}")
        self._send(_frame(json.dumps({"cmd": "frame", "n": number}).encode()), what)
        deadline = time.monotonic() + self._limits.frame_timeout_s
        answer = self._reply(deadline, what)
        if not answer.get("ok"):
            raise UnsupportedMedia(
                f"{self._label}: the Lottie engine cannot show {what} "
                f"({_text(answer.get('error'))})"
            )
        view = memoryview(out).cast("B")
        canvas = self._canvas
        if canvas is None or view.nbytes != len(canvas):
            raise ValueError("frame buffer has the wrong size")
        with memoryview(canvas) as pixels:
            view[:] = pixels

    def close(self) -> None:
        """Stop the child (children are single-use). Safe to call twice."""
        if not self._closed:
            self._closed = True
            _reap(self._child)
        canvas, self._canvas = self._canvas, None
        if canvas is not None:
            canvas.close()

    # --- plumbing ------------------------------------------------------------------------------

    def _send(self, data: bytes, what: str) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(data)
            stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._crashed(what) from None

    def _reply(self, deadline: float, what: str) -> dict[str, Any]:
        head = bytearray(4)
        self._read_into(memoryview(head), deadline, what)
        (size,) = struct.unpack(">I", head)
        if size > _MAX_REPLY:
            self.close()
            raise LottieCrashed(f"{self._label}: the Lottie sandbox answered nonsense at {what}")
        body = bytearray(size)
        self._read_into(memoryview(body), deadline, what)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self.close()
            raise LottieCrashed(f"{self._label}: the Lottie sandbox answered nonsense at {what}")
        return answer

    def _read_into(self, view: memoryview, deadline: float, what: str) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        done = 0
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(fd, selectors.EVENT_READ)
                while done < len(view):
                    if self._cancel is not None and self._cancel():
                        self.close()
                        raise RenderCancelled(f"render cancelled while drawing {self._label}")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise _Late
                    if not selector.select(min(left, _CANCEL_POLL_S)):
                        continue
                    count = os.readv(fd, [view[done:]])
                    if count == 0:
                        raise _Gone
                    done += count
        except _Late:
            self.close()
            raise LottieTimedOut(self._timeout_reason(what)) from None
        except (_Gone, OSError, ValueError):
            raise self._crashed(what) from None

    def _timeout_reason(self, what: str) -> str:
        limits = self._limits
        limit = limits.load_timeout_s if what in ("start", "load") else limits.frame_timeout_s
        doing = "to load" if what in ("start", "load") else f"to draw {what}"
        return (
            f"{self._label}: the Lottie animation took longer than {limit:g} s {doing}; "
            "simplify it (fewer layers, no expressions) or check that it plays in a Lottie player"
        )

    def _crashed(self, what: str) -> LottieCrashed:
        proc = self._proc
        with contextlib.suppress(OSError):
            proc.kill()
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self.close()
        limits = self._limits
        if code is not None and code < 0 and -code == signal.SIGXCPU:
            detail = f"used more than {limits.cpu_s:g} s of CPU at {what}"
        elif code is not None and code < 0:
            detail = f"crashed the Lottie engine at {what} ({_signal_name(-code)})"
        else:
            detail = (
                f"stopped the Lottie engine at {what} (it may need more than the "
                f"{limits.memory_mb} MB memory limit)"
            )
        return LottieCrashed(
            f"{self._label}: the animation {detail}; the file is broken or not supported "
            "(re-export it, or check that it plays in a Lottie player)"
        )

    def __del__(self) -> None:
        # Sources are closed explicitly; this only keeps a forgotten one from leaving a
        # process behind for the life of a worker.
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()


def _frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _text(value: object) -> str:
    return str(value)[:200] if value is not None else "unknown error"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
