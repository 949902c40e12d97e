"""Checks on the benchmark's outputs: that each is a valid MP4 of the right length, that the
encoders really ran with the same settings, and that all four drew the same picture."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw


def probe(path: Path) -> dict[str, Any]:
    """Decode every frame with ffprobe: codec, size, pixel format, frame count, audio."""
    cmd = ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
           "stream=codec_type,codec_name,width,height,pix_fmt,nb_read_frames,sample_rate,"
           "channels:format=duration,format_name", "-of", "json", str(path)]  # fmt: skip
    info = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    video = next((s for s in info["streams"] if s["codec_type"] == "video"), {})
    audio = next((s for s in info["streams"] if s["codec_type"] == "audio"), None)
    return {
        "container": info["format"].get("format_name", ""),
        "duration": float(info["format"].get("duration", 0)),
        "codec": video.get("codec_name"),
        "size": f"{video.get('width')}x{video.get('height')}",
        "pix_fmt": video.get("pix_fmt"),
        "frames": int(video.get("nb_read_frames", 0)),
        "audio": f"{audio['codec_name']} {audio['sample_rate']} Hz {audio['channels']} ch"
        if audio
        else "none",
    }


_X264_RE = re.compile(rb"x264 - core (\d+)[^\x00]*? - options: ([^\x00]*)")


def x264_options(path: Path) -> tuple[str, dict[str, str]]:
    """The settings libx264 wrote into the stream's SEI: proof the encoders matched."""
    with path.open("rb") as f:
        head = f.read(8 << 20)
    m = _X264_RE.search(head)
    if not m:
        return "?", {}
    opts = dict(
        o.split("=", 1) if "=" in o else (o, "")
        for o in m.group(2).decode(errors="replace").split()
    )
    return m.group(1).decode(), opts


def _decode(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if len(got) == len(wanted):
                break
    return got


def _reference(raw: Path, width: int, height: int, wanted: set[int]) -> dict[int, np.ndarray]:
    size = width * height * 3 // 2
    got = {}
    with raw.open("rb") as f:
        for i in sorted(wanted):
            f.seek(i * size)
            yuv = np.frombuffer(f.read(size), dtype=np.uint8).reshape(height * 3 // 2, width)
            got[i] = av.VideoFrame.from_ndarray(yuv, format="yuv420p").to_ndarray(format="rgb24")
    return got


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def compare_frames(
    outputs: dict[str, Path], raw: Path, size: tuple[int, int], frames: int, *, sheet: Path
) -> dict[str, list[float]]:
    """PSNR (dB, RGB) of a few frames of each output against the uncompressed ffmpeg
    composite, and a contact sheet of the last sampled frame for a person to look at.

    Equal work needs the same picture: a renderer that dropped a layer would be fast for the
    wrong reason. Easing and text rasterisation differ slightly between the approaches, so
    expect roughly 25-40 dB for a faithful render and much lower for a missing layer.
    """
    width, height = size
    wanted = {min(frames - 1, k) for k in (frames // 6, frames // 2, frames * 5 // 6)}
    ref = _reference(raw, width, height, wanted)
    scores: dict[str, list[float]] = {}
    tiles = [("reference (ffmpeg composite, uncompressed)", ref[max(wanted)])]
    for label, path in outputs.items():
        got = _decode(path, wanted)
        scores[label] = [round(psnr(got[i], ref[i]), 1) for i in sorted(wanted) if i in got]
        if max(wanted) in got:
            tiles.append((label, got[max(wanted)]))
    tw, th = 640, max(2, round(640 * height / width))
    cols = 2
    rows = (len(tiles) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * tw, rows * (th + 24)), "white")
    draw = ImageDraw.Draw(canvas)
    for n, (label, rgb) in enumerate(tiles):
        x, y = (n % cols) * tw, (n // cols) * (th + 24)
        canvas.paste(Image.fromarray(rgb).resize((tw, th)), (x, y + 24))
        draw.text((x + 6, y + 5), f"{label} - frame {max(wanted)}", fill="black")
    canvas.save(sheet)
    return scores
