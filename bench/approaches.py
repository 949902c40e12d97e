"""The four ways of rendering the standard composition, each run in its own process.

``run.py`` starts ``python bench/approaches.py NAME SCENE_JSON RESULT_JSON`` for the Python
approaches (velocity, floor, moviepy) and the ffmpeg command line directly, so that each
process tree's peak memory belongs to one approach. Every approach uses libx264 with CRF 23,
preset veryfast, yuv420p and the same keyframe interval (``composition.GOP``).

Each child times only the work itself (imports and input preparation excluded) and writes
``{"wall_s": ..., ...}`` to RESULT_JSON.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from composition import (
    AUDIO_FADE_IN,
    AUDIO_FADE_OUT,
    AUDIO_RATE,
    AUDIO_VOLUME,
    CAPTIONS,
    FONT_SRC,
    FPS,
    GOP,
    OVERLAYS,
    Scene,
    ffmpeg_track,
    position_at,
)


class Timer:
    """Wall and CPU seconds (this process, its threads and its finished children) of a block:
    the CPU figure is less disturbed by other work on the machine than the wall figure."""

    def __enter__(self) -> Timer:
        self._t0, self._c0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = self._cpu() - self._c0

    @staticmethod
    def _cpu() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


X264_CRF = 23
X264_PRESET = "veryfast"  # EncoderConfig preset 4
AUDIO_BITRATE = "128k"
# Velocity fixes its GOP (an IDR every GOP frames, no scene-cut keyframes, closed GOPs) so
# chunks can be joined; the others get the same structure so x264 does the same work.
X264_PARAMS = f"min-keyint={GOP}:scenecut=0:open-gop=0"


def scene_to_json(scene: Scene) -> str:
    return json.dumps(
        {
            "width": scene.width,
            "height": scene.height,
            "frames": scene.frames,
            "media_dir": str(scene.media_dir),
            "template_dir": str(scene.template_dir),
        }
    )


def scene_from_json(text: str) -> Scene:
    d = json.loads(text)
    return Scene(d["width"], d["height"], d["frames"], Path(d["media_dir"]),
                 Path(d["template_dir"]))  # fmt: skip


# --- (c) the ffmpeg command line ------------------------------------------------------------


def ffmpeg_video_graph(scene: Scene) -> str:
    """The composition as one filtergraph ending in ``[v]``: the PNGs are single-frame inputs
    that ``overlay`` repeats (its default at end of input), moved by expressions of ``t``;
    the captions are ``drawtext`` with an alpha ramp, enabled from their fade start."""
    parts = []
    prev = "0:v"
    for k, ov in enumerate(OVERLAYS, start=1):
        w, h = scene.overlay_size(ov)
        keys = scene.scaled_keys(ov)
        x = ffmpeg_track(keys, 0, w / 2)
        y = ffmpeg_track(keys, 1, h / 2)
        parts.append(f"[{prev}][{k}:v]overlay=x='{x}':y='{y}':eval=frame[o{k}]")
        prev = f"o{k}"
    texts = []
    for cap in CAPTIONS:
        bx, by, bw, bh = scene.caption_box(cap)
        s0, s1 = cap.fade_from / FPS, cap.fade_to / FPS
        texts.append(
            f"drawtext=fontfile='{scene.media(f'fonts/{FONT_SRC.name}')}'"
            f":text='{cap.text}':fontsize={scene.caption_size(cap)}:fontcolor=white"
            f":x='{bx}+({bw}-text_w)/2':y='{by}+({bh}-text_h)/2'"
            f":alpha='if(lt(t,{s1:.6f}),(t-{s0:.6f})/{s1 - s0:.6f},1)'"
            f":enable='gte(t,{s0:.6f})'"
        )
    parts.append(f"[{prev}]" + ",".join(texts) + "[v]")
    return ";".join(parts)


def ffmpeg_inputs(scene: Scene) -> list[str]:
    args = ["-i", str(scene.media("videos/bg.mp4"))]
    for ov in OVERLAYS:
        args += ["-i", str(scene.media(ov.png))]
    return args


def ffmpeg_command(scene: Scene, out: Path, ffmpeg: str = "ffmpeg") -> list[str]:
    """One ffmpeg invocation rendering the whole composition with audio to ``out``."""
    dur = scene.duration
    fade_in = AUDIO_FADE_IN / FPS
    fade_out = AUDIO_FADE_OUT / FPS
    audio = (
        f"[{len(OVERLAYS) + 1}:a]volume={AUDIO_VOLUME},"
        f"afade=t=in:st=0:d={fade_in:.6f},"
        f"afade=t=out:st={max(0.0, dur - fade_out):.6f}:d={fade_out:.6f}[a]"
    )
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        *ffmpeg_inputs(scene),
        "-i", str(scene.media("audio/music.wav")),
        "-filter_complex", ffmpeg_video_graph(scene) + ";" + audio,
        "-map", "[v]", "-map", "[a]",
        "-frames:v", str(scene.frames), "-t", f"{dur:.6f}",
        "-c:v", "libx264", "-preset", X264_PRESET, "-crf", str(X264_CRF), "-g", str(GOP),
        "-x264-params", X264_PARAMS, "-pix_fmt", "yuv420p", "-r", str(FPS),
        "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ar", str(AUDIO_RATE), "-ac", "2",
        str(out),
    ]  # fmt: skip


def ffmpeg_raw_command(scene: Scene, out: Path) -> list[str]:
    """The same picture as raw yuv420p frames: the floor's pre-made input."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        *ffmpeg_inputs(scene),
        "-filter_complex", ffmpeg_video_graph(scene),
        "-map", "[v]", "-frames:v", str(scene.frames),
        "-f", "rawvideo", "-pix_fmt", "yuv420p", str(out),
    ]  # fmt: skip


def floor_cli_command(scene: Scene, raw: Path, out: Path) -> list[str]:
    """The floor's frames through the ffmpeg CLI's libx264 (an extra reference row)."""
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{scene.width}x{scene.height}",
        "-r", str(FPS), "-i", str(raw), "-frames:v", str(scene.frames),
        "-c:v", "libx264", "-preset", X264_PRESET, "-crf", str(X264_CRF), "-g", str(GOP),
        "-x264-params", X264_PARAMS, "-pix_fmt", "yuv420p", str(out),
    ]  # fmt: skip


# --- (a) Velocity ---------------------------------------------------------------------------


def run_velocity(scene: Scene, out: Path) -> dict[str, Any]:
    import contextlib
    import importlib

    from renderer.encode.config import EncoderConfig
    from renderer.render import render
    from renderer.template.loader import load_template

    # render() imports these lazily; load them before the clock starts, as the other
    # approaches' imports are.
    for name in (
        "renderer.encode.encoder",
        "renderer.compose.audio",
        "renderer.encode.mux",
        "renderer.compose.layers",
    ):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    config = EncoderConfig(codec=0, rc=3, crf=X264_CRF, preset=4, gop=GOP)

    with Timer() as timer:
        loaded = load_template(scene.template_dir)
        report = render(loaded, out, encoder=config, encoder_preference="software")
    return {
        "wall_s": timer.wall_s,
        "cpu_s": timer.cpu_s,
        "frames": report.frames,
        "encoder": report.encoder,
        "stages_s": dict(report.stages_s),
        "report_wall_s": report.wall_s,
        "config": repr(config),
    }


# --- (b) the encode-only floor --------------------------------------------------------------


def run_floor(scene: Scene, out: Path, raw: Path) -> dict[str, Any]:
    """Encode pre-made yuv420p frames (all in memory before the clock starts) with libx264 in
    PyAV, frame-threaded (PyAV's default slice threading makes each encode() block)."""
    import av
    import numpy as np

    w, h, n = scene.width, scene.height, scene.frames
    frame_bytes = w * h * 3 // 2
    frames = []
    with raw.open("rb") as f:
        for _ in range(n):
            buf = np.frombuffer(f.read(frame_bytes), dtype=np.uint8).reshape(h * 3 // 2, w)
            frames.append(av.VideoFrame.from_ndarray(buf, format="yuv420p"))

    # The frames held in memory count in this process's peak RSS; record how much that is.
    held_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tb = Fraction(1, FPS)
    with Timer() as timer, av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = tb
        stream.codec_context.gop_size = GOP
        stream.codec_context.thread_type = "FRAME"
        # 0 lets x264 choose (1.5 threads per core); BENCH_FLOOR_THREADS tries others.
        stream.codec_context.thread_count = int(os.environ.get("BENCH_FLOOR_THREADS", "0"))
        stream.options = {
            "crf": str(X264_CRF),
            "preset": X264_PRESET,
            "x264-params": X264_PARAMS,
        }
        for i, frame in enumerate(frames):
            frame.pts = i
            frame.time_base = tb
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return {"wall_s": timer.wall_s, "cpu_s": timer.cpu_s, "frames": n, "rss_before_mb": held_mb}


# --- (d) MoviePy 2.x ------------------------------------------------------------------------


def run_moviepy(scene: Scene, out: Path) -> dict[str, Any]:
    import moviepy  # noqa: F401 - imported before the clock starts

    with Timer() as timer:
        _moviepy_render(scene, out)
    return {"wall_s": timer.wall_s, "cpu_s": timer.cpu_s, "frames": scene.frames}


def _moviepy_render(scene: Scene, out: Path) -> None:
    from moviepy import (
        AudioFileClip,
        CompositeVideoClip,
        ImageClip,
        TextClip,
        VideoFileClip,
        afx,
        vfx,
    )

    dur = scene.duration
    clips = [VideoFileClip(str(scene.media("videos/bg.mp4")), audio=False).subclipped(0, dur)]
    for ov in OVERLAYS:
        w, h = scene.overlay_size(ov)
        keys = scene.scaled_keys(ov)

        def where(t: float, keys: Any = keys, w: int = w, h: int = h) -> tuple[int, int]:
            x, y = position_at(keys, t * FPS)
            return round(x - w / 2), round(y - h / 2)

        clips.append(ImageClip(str(scene.media(ov.png))).with_duration(dur).with_position(where))
    for cap in CAPTIONS:
        bx, by, bw, bh = scene.caption_box(cap)
        start = cap.fade_from / FPS
        text = TextClip(
            font=str(scene.media(f"fonts/{FONT_SRC.name}")),
            text=cap.text,
            font_size=scene.caption_size(cap),
            color="white",
            size=(bw, bh),
            text_align="center",
            horizontal_align="center",
            vertical_align="center",
            duration=dur - start,
        )
        fade = vfx.CrossFadeIn((cap.fade_to - cap.fade_from) / FPS)
        clips.append(text.with_start(start).with_position((bx, by)).with_effects([fade]))
    audio = (
        AudioFileClip(str(scene.media("audio/music.wav")))
        .subclipped(0, dur)
        .with_volume_scaled(AUDIO_VOLUME)
        .with_effects(
            [afx.AudioFadeIn(AUDIO_FADE_IN / FPS), afx.AudioFadeOut(AUDIO_FADE_OUT / FPS)]
        )
    )
    comp = (
        CompositeVideoClip(clips, size=(scene.width, scene.height))
        .with_duration(dur)
        .with_audio(audio)
    )
    comp.write_videofile(
        str(out),
        fps=FPS,
        codec="libx264",
        preset=X264_PRESET,
        ffmpeg_params=["-crf", str(X264_CRF), "-g", str(GOP), "-x264-params", X264_PARAMS],
        pixel_format="yuv420p",
        audio_codec="aac",
        audio_fps=AUDIO_RATE,
        audio_bitrate=AUDIO_BITRATE,
        temp_audiofile_path=str(out.parent),
        logger=None,
    )
    comp.close()
    for clip in clips:
        clip.close()
    audio.close()


def main() -> None:
    name, scene_json, result_path = sys.argv[1:4]
    scene = scene_from_json(scene_json)
    out = Path(sys.argv[4])
    if name == "velocity":
        result = run_velocity(scene, out)
    elif name == "floor":
        result = run_floor(scene, out, Path(sys.argv[5]))
    elif name == "moviepy":
        result = run_moviepy(scene, out)
    else:
        raise SystemExit(f"unknown approach {name!r}")
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
