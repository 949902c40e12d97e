"""The Lottie sandbox's child: one animation drawn by ThorVG, outside the service's processes.

Run as a script by ``renderer.media.sandbox``
(``lottie_child.py LIBTHORVG MEMORY_MB CPU_S CANVAS_FD``),
never imported by the service. It uses only the standard library and ctypes, so the memory
limit set here bounds little more than the engine itself. The limits are set before the first
untrusted byte is read: address space (``RLIMIT_AS``), no core files, no files written, and a
CPU-seconds allowance re-armed before each command (``RLIMIT_CPU``; SIGXCPU ends the process).

Protocol on stdin/stdout, every message a 4-byte big-endian length and that many bytes:

* child: ``{"ready": true}`` once the engine is up.
* parent: ``{"cmd": "load", "w": W, "h": H, "fonts": [paths]}`` then the Lottie JSON;
  child: ``{"ok": true, "total": frames}`` or ``{"ok": false, "error": text}``.
* parent: ``{"cmd": "frame", "n": number}``; child: ``{"ok": true}`` once the frame is in
  the shared canvas (the memfd CANVAS_FD, W*H*4 bytes of premultiplied RGBA, sized and sealed
  by the parent before ``load``), or ``{"ok": false, "error": text}``.

The parent enforces wall time, kills the process on a hang, a crash or cancel, and treats
every byte it receives as untrusted.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import mmap
import resource
import struct
import sys
from typing import Any, BinaryIO

_SUCCESS = 0
_INSUFFICIENT_CONDITION = 2
_ABGR8888 = 0
_MAX_MESSAGE = 64 * 1024 * 1024


def _limit(kind: int, soft: int, hard: int | None = None) -> None:
    # A limit the host does not let us lower further is already tighter.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(kind, (soft, soft if hard is None else hard))


def _arm_cpu(seconds: float) -> None:
    """Allow ``seconds`` more CPU time from now (the soft limit; the hard one stays open)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    soft = int(math.ceil(used + seconds))
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _read(stream: BinaryIO) -> bytes | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    if size > _MAX_MESSAGE:
        return None
    data = stream.read(size)
    return data if len(data) == size else None


def _write(stream: BinaryIO, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _bind(lib: ctypes.CDLL) -> dict[str, Any]:
    p, r, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float

    def fn(name: str, restype: Any, *argtypes: Any) -> Any:
        return ctypes.CFUNCTYPE(restype, *argtypes)((name, lib))

    u32 = ctypes.c_uint32
    return {
        "init": fn("tvg_engine_init", r, u32),
        "canvas": fn("tvg_swcanvas_create", p, ctypes.c_uint8),
        "target": fn("tvg_swcanvas_set_target", r, p, p, u32, u32, u32, ctypes.c_uint8),
        "add": fn("tvg_canvas_add", r, p, p),
        "update": fn("tvg_canvas_update", r, p),
        "draw": fn("tvg_canvas_draw", r, p, ctypes.c_bool),
        "sync": fn("tvg_canvas_sync", r, p),
        "anim": fn("tvg_lottie_animation_new", p),
        "picture": fn("tvg_animation_get_picture", p, p),
        "set_frame": fn("tvg_animation_set_frame", r, p, f),
        "total": fn("tvg_animation_get_total_frame", r, p, ctypes.POINTER(f)),
        "load_data": fn(
            "tvg_picture_load_data", r, p, ctypes.c_char_p, u32, ctypes.c_char_p, p, ctypes.c_bool
        ),
        "set_size": fn("tvg_picture_set_size", r, p, f, f),
        "font_load": fn("tvg_font_load", r, ctypes.c_char_p),
    }


def main(argv: list[str]) -> int:
    lib_path, memory_mb, cpu_s, canvas_fd = argv[1], int(argv[2]), float(argv[3]), int(argv[4])
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_FSIZE, 0)
    if memory_mb > 0:
        _limit(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
    _arm_cpu(cpu_s)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    tvg = _bind(ctypes.CDLL(lib_path))
    if tvg["init"](0) != _SUCCESS:
        _write(stdout, {"ready": False, "error": "engine initialisation failed"})
        return 1
    _write(stdout, {"ready": True})

    anim = canvas = None
    buffer: Any = None
    width = height = 0
    while True:
        raw = _read(stdin)
        if raw is None:
            return 0
        command = json.loads(raw)
        _arm_cpu(cpu_s)
        if command.get("cmd") == "load" and anim is None:
            doc = _read(stdin)
            if doc is None:
                return 0
            width, height = int(command["w"]), int(command["h"])
            for font in command.get("fonts", []):
                tvg["font_load"](str(font).encode())
            anim = tvg["anim"]()
            picture = tvg["picture"](anim)
            # No resource folder: every image was made a data: URI by the parent, so the
            # engine has no directory to join a path onto.
            result = tvg["load_data"](picture, doc, len(doc), b"lottie", None, True)
            if result != _SUCCESS:
                _write(stdout, {"ok": False, "error": f"ThorVG result {result}"})
                anim = None
                continue
            total = ctypes.c_float()
            tvg["total"](anim, ctypes.byref(total))
            tvg["set_size"](picture, float(width), float(height))
            # The parent sized (and sealed) the shared canvas before sending this command.
            shared = mmap.mmap(canvas_fd, width * height * 4)
            buffer = (ctypes.c_uint32 * (width * height)).from_buffer(shared)
            canvas = tvg["canvas"](0)
            result = tvg["target"](canvas, buffer, width, width, height, _ABGR8888)
            if result == _SUCCESS:
                result = tvg["add"](canvas, picture)
            if result != _SUCCESS:
                _write(stdout, {"ok": False, "error": f"no {width}x{height} canvas ({result})"})
                continue
            _write(stdout, {"ok": True, "total": float(total.value)})
        elif command.get("cmd") == "frame" and canvas is not None:
            result = tvg["set_frame"](anim, float(command["n"]))
            if result not in (_SUCCESS, _INSUFFICIENT_CONDITION):
                _write(stdout, {"ok": False, "error": f"ThorVG result {result}"})
                continue
            tvg["update"](canvas)
            tvg["draw"](canvas, True)
            tvg["sync"](canvas)
            # The pixels are in the shared canvas: native uint32 words a << 24 | b << 16 |
            # g << 8 | r, which are R, G, B, A bytes on little-endian hosts.
            _write(stdout, {"ok": True})
        else:
            _write(stdout, {"ok": False, "error": "unexpected command"})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
