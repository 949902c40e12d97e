"""Segment cache: personalised renders of one template, with and without the span cache.

The template: 30 s at 1080p30 over a moving background video (looped), a name card on
screen for the first 2 s and an end card for the last 2 s (both customised per render),
music under it all. It is rendered N times with different names:

    cached     velocity render --cache-dir (the first render fills the cache)
    uncached   velocity render (the same renders, every frame encoded)
    ffmpeg     one ffmpeg command doing the whole composition (drawtext cards)

All with libx264 CRF 23, preset veryfast, a keyframe every 2 s. Each render is its own
process; wall and CPU seconds (user + system of the process tree) are measured around it.
Figures, not assertions. Cached output is checked to decode identical to the uncached
render of the same name (segment for segment: the uncached run is cache=None, which
renders the same spans afresh).

With ``--service`` the same renders also go through the service: ``velocity serve`` in the
embedded mode (one worker thread, renders in one piece), the template uploaded as a ZIP, each
render posted and followed to ``completed``; wall time from POST to completed, the worker
time charged (``renderTimeMilliseconds``) and ``cachedFrames``, with the cache and with
``"cache": false``.

Usage: python bench/segment_cache.py [--renders 10] [--uncached 3] [--size 1920x1080] [--service]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from composition import FONT_SRC, OUT_DIR, make_audio, make_background, parse_size
from served import upload_template, velocity_command, velocity_serve

FPS = 30
SECONDS = 30
CARD_S = 2
NAMES = ["Anna", "Bartholomew", "Chiara", "Dmitri", "Eun-ji", "Farah", "Gustavo", "Hana",
         "Ikaika", "Jonas", "Keziah", "Lars"]  # fmt: skip
ENCODER = {"rc": 3, "crf": 23, "preset": 4, "gop": 60}


def build(root: Path, size: tuple[int, int]) -> Path:
    """The template folder (background and music are generated once and kept)."""
    w, h = size
    tpl = root / f"template-{w}x{h}"
    if (tpl / "data.json").exists():
        return tpl
    tpl.mkdir(parents=True, exist_ok=True)
    make_background(tpl / "background.mp4", w, h)
    make_audio(tpl / "music.wav", SECONDS)
    shutil.copy(FONT_SRC, tpl / "font.ttf")
    frames = SECONDS * FPS
    card = CARD_S * FPS

    def text(layer_id: str, value: str, start: int, end: int, y: float) -> dict[str, Any]:
        return {
            "id": layer_id,
            "type": "text",
            "text": value,
            "font": "card",
            "size": h // 10,
            "color": "#ffffff",
            "align": "center",
            "valign": "middle",
            "fit": "shrink",
            "box": {"x": w * 0.1, "y": h * y, "w": w * 0.8, "h": h * 0.2},
            "background": {"color": "#00000099", "padding": h // 60},
            "in": start,
            "out": end,
        }

    data = {
        "version": 1,
        "width": w,
        "height": h,
        "fps": FPS,
        "frames": frames,
        "background": "#000000",
        "fonts": {"card": "font.ttf"},
        "layers": [
            {"id": "bg", "type": "video", "src": "background.mp4", "loop": True, "fit": "cover"},
            text("name", "Hello NAME", 0, card, 0.4),
            text("endcard", "See you soon, NAME", frames - card, frames, 0.7),
        ],
        "audio": [{"id": "music", "src": "music.wav"}],
    }
    (tpl / "data.json").write_text(json.dumps(data, indent=1))
    return tpl


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv: list[str]) -> tuple[float, float, str]:
    c0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return wall, cpu, proc.stdout


def velocity_render(tpl: Path, name: str, out: Path, cache: Path | None) -> tuple[float, float]:
    custom = out.with_suffix(".json")
    custom.write_text(
        json.dumps(
            [
                {"layerId": "name", "text": f"Hello {name}"},
                {"layerId": "endcard", "text": f"See you soon, {name}"},
            ]
        )
    )
    config = out.parent / "encoder.json"
    config.write_text(json.dumps(ENCODER))
    argv = [*velocity_command(), "render", str(tpl), "-o", str(out),
            "--customizations", str(custom), "--encoder-config", str(config),
            "--encoder", "software"]  # fmt: skip
    if cache is not None:
        argv += ["--cache-dir", str(cache)]
    wall, cpu, _ = timed(argv)
    return wall, cpu


def ffmpeg_render(tpl: Path, name: str, out: Path, size: tuple[int, int]) -> tuple[float, float]:
    w, h = size
    font = tpl / "font.ttf"
    end = SECONDS - CARD_S

    def card(text: str, y: float, when: str) -> str:
        return (
            f"drawtext=fontfile={font}:text='{text}':fontsize={h // 10}:fontcolor=white:"
            f"box=1:boxcolor=black@0.6:boxborderw={h // 60}:x=(w-text_w)/2:"
            f"y={h * y + h * 0.1}-text_h/2:enable='{when}'"
        )

    graph = (
        f"[0:v]scale={w}:{h},"
        + card(f"Hello {name}", 0.4, f"lt(t,{CARD_S})")
        + ","
        + card(f"See you soon, {name}", 0.7, f"gte(t,{end})")
        + "[v]"
    )
    argv = ["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(tpl / "background.mp4"),
            "-i", str(tpl / "music.wav"), "-filter_complex", graph, "-map", "[v]", "-map", "1:a",
            "-t", str(SECONDS), "-r", str(FPS), "-c:v", "libx264", "-preset", "veryfast",
            "-crf", "23", "-g", "60", "-x264-params", "min-keyint=60:scenecut=0:open-gop=0",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", str(out)]  # fmt: skip
    wall, cpu, _ = timed(argv)
    return wall, cpu


def identical(a: Path, b: Path) -> bool:
    import av
    import numpy as np

    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        fa = ca.decode(video=0)
        fb = cb.decode(video=0)
        for x, y in zip(fa, fb, strict=True):
            if not np.array_equal(x.to_ndarray(format="yuv420p"), y.to_ndarray(format="yuv420p")):
                return False
    return True


def service_renders(tpl: Path, work: Path, names: list[str], uncached: int) -> list[str]:
    """Render through ``velocity serve``; returns the report's table rows."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="velocity-segcache-", dir=work))
    archive = Path(shutil.make_archive(str(root / "template"), "zip", tpl))
    with velocity_serve(root, VELOCITY_WORKER_THREADS="1") as served:
        c, headers = served.client, served.headers
        tid = upload_template(served, archive)

        def one(name: str, cache: bool) -> tuple[float, float, int]:
            body = {
                "templateId": tid,
                "name": name,
                "encoderConfig": {**ENCODER, "bitrate": 8_000_000},
                "customizationMap": [
                    {"layerId": "name", "text": f"Hello {name}"},
                    {"layerId": "endcard", "text": f"See you soon, {name}"},
                ],
                "cache": cache,
            }
            t0 = time.perf_counter()
            rid = c.post("/render", json=body, headers=headers).json()["renderId"]
            while True:
                status = c.get(f"/render/{rid}/status", params={"wait": 20}, headers=headers).json()
                if status["status"] in ("completed", "failed", "cancelled"):
                    break
            if status["status"] != "completed":
                raise SystemExit(f"service render {name}: {status}")
            wall = time.perf_counter() - t0
            return wall, status["renderTimeMilliseconds"] / 1000, status["cachedFrames"]

        cached = [one(n, True) for n in names]
        fresh = [one(n, False) for n in names[:uncached]]
    warm = cached[1:] or cached

    def med(values: list[tuple[float, float, int]], k: int) -> float:
        return statistics.median(v[k] for v in values)

    out = [
        f"| service, first render (fills the cache) | {cached[0][0]:.2f} | "
        f"{cached[0][1]:.2f} | {cached[0][2]} |",
        f"| service, cached (median of {len(warm)}) | {med(warm, 0):.2f} | {med(warm, 1):.2f} | "
        f"{int(med(warm, 2))} |",
        f'| service, `"cache": false` (median of {len(fresh)}) | {med(fresh, 0):.2f} | '
        f"{med(fresh, 1):.2f} | {int(med(fresh, 2))} |",
        f"\nservice: cached vs uncached {med(fresh, 0) / med(warm, 0):.2f}x faster (POST to "
        f"completed), {med(fresh, 1) / med(warm, 1):.2f}x less worker time charged",
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=10)
    parser.add_argument("--uncached", type=int, default=3)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--service", action="store_true", help="also render through the service")
    parser.add_argument("--cli", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    size = parse_size(args.size)
    root = OUT_DIR / "segment-cache"
    tpl = build(root, size)
    work = root / "runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    names = NAMES[: args.renders]
    w, h = size
    print(f"\n{SECONDS} s {w}x{h}@{FPS}, name card first {CARD_S} s + end card last {CARD_S} s")
    if args.cli:
        cli_renders(tpl, work, names, args.uncached, size)
    if args.service:
        print("\n| through the service | POST to completed s | worker time s | cached frames |")
        print("|---|---:|---:|---:|")
        for line in service_renders(tpl, work, names, args.uncached):
            print(line)


def cli_renders(
    tpl: Path, work: Path, names: list[str], uncached_n: int, size: tuple[int, int]
) -> None:
    """``velocity render`` with and without ``--cache-dir``, and the ffmpeg CLI."""
    cache = work / "cache"
    cached = [velocity_render(tpl, n, work / f"cached-{i}.mp4", cache) for i, n in enumerate(names)]
    uncached = [
        velocity_render(tpl, n, work / f"uncached-{i}.mp4", None)
        for i, n in enumerate(names[:uncached_n])
    ]
    ffmpeg = [
        ffmpeg_render(tpl, n, work / f"ffmpeg-{i}.mp4", size)
        for i, n in enumerate(names[:uncached_n])
    ]
    # The reference for "decodes identical": the last cached render against the same
    # render with no cache (same spans, every one encoded afresh).
    last = len(names) - 1
    fresh = work / "fresh.mp4"
    from renderer.encode.config import EncoderConfig
    from renderer.segments import render_segmented
    from renderer.template.loader import load_template
    from renderer.template.model import CustomizationEntry

    entries = [
        CustomizationEntry.model_validate(e)
        for e in json.loads((work / f"cached-{last}.json").read_text())
    ]
    render_segmented(
        load_template(tpl), fresh, cache=None, customizations=entries,
        encoder=EncoderConfig.parse(ENCODER), encoder_preference="software",
    )  # fmt: skip
    same = identical(work / f"cached-{last}.mp4", fresh)

    def med(values: list[tuple[float, float]], k: int) -> float:
        return statistics.median(v[k] for v in values)

    warm = cached[1:] or cached
    rows = [
        ("velocity, first render (fills the cache)", cached[0][0], cached[0][1]),
        (f"velocity, cached (median of {len(warm)})", med(warm, 0), med(warm, 1)),
        (f"velocity, no cache (median of {len(uncached)})", med(uncached, 0), med(uncached, 1)),
        (f"ffmpeg CLI, full composition (median of {len(ffmpeg)})", med(ffmpeg, 0), med(ffmpeg, 1)),
    ]
    print("| render | wall s | CPU s |")
    print("|---|---:|---:|")
    for label, wall, cpu in rows:
        print(f"| {label} | {wall:.2f} | {cpu:.2f} |")
    speed = med(uncached, 0) / med(warm, 0)
    print(f"\ncached vs uncached: {speed:.2f}x faster (wall), "
          f"{med(uncached, 1) / med(warm, 1):.2f}x less CPU; "
          f"vs ffmpeg CLI: {med(ffmpeg, 0) / med(warm, 0):.2f}x faster (wall)")  # fmt: skip
    print(f"cached render decodes identical to the uncached one: {same}")


if __name__ == "__main__":
    main()
