"""The benchmark's standard composition: its inputs, its Velocity template and its motion.

One description (sizes, keyframes, text, fades, audio) drives all four approaches, so the
ffmpeg and MoviePy versions draw the same picture as the Velocity template. Inputs are
generated once into ``bench/out/<W>x<H>/`` (git-ignored) and reused while they exist.

Run on its own to (re)generate the inputs: ``python bench/composition.py [--size WxH]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"

BASE_W, BASE_H = 1920, 1080
FPS = 30
TOTAL_FRAMES = 300  # the background video and the audio always last 10 s
GOP = 60  # identical keyframe interval for all four encoders
AUDIO_RATE = 48_000
FONT_SRC = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
FONT_NAME = "DejaVu Sans Bold"


@dataclass(frozen=True)
class Key:
    """A keyframe in base (1920x1080) pixels; ``ease`` shapes the segment that starts here."""

    t: int
    x: float
    y: float
    ease: str = "linear"


@dataclass(frozen=True)
class Overlay:
    id: str
    png: str
    w: int
    h: int
    keys: tuple[Key, ...]
    hue: tuple[int, int, int]


@dataclass(frozen=True)
class Caption:
    id: str
    text: str
    size: int
    box: tuple[int, int, int, int]  # x, y, w, h in base pixels
    fade_from: int  # frame where opacity starts rising from 0
    fade_to: int  # frame where it reaches 1


OVERLAYS = (
    Overlay(
        "card1",
        "images/card1.png",
        400,
        300,
        (
            Key(0, 260, 220, "easeInOut"),
            Key(100, 1500, 260, "easeOut"),
            Key(200, 1560, 760, "easeInOut"),
            Key(299, 360, 700),
        ),
        (230, 80, 60),
    ),
    Overlay(
        "card2",
        "images/card2.png",
        400,
        300,
        (
            Key(0, 1660, 880, "easeIn"),
            Key(120, 960, 540, "easeInOut"),
            Key(240, 300, 300, "linear"),
            Key(299, 520, 420),
        ),
        (60, 160, 230),
    ),
    Overlay(
        "card3",
        "images/card3.png",
        400,
        300,
        (
            Key(0, 960, 160, "linear"),
            Key(150, 960, 880, "easeInOut"),
            Key(299, 1600, 480),
        ),
        (90, 210, 110),
    ),
)

CAPTIONS = (
    Caption("title", "Summer Collection", 96, (160, 740, 1600, 150), 30, 45),
    Caption("subtitle", "Free delivery on every order", 56, (160, 890, 1600, 100), 60, 75),
)

AUDIO_VOLUME = 0.8
AUDIO_FADE_IN = 15  # frames
AUDIO_FADE_OUT = 30  # frames


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` to ``(1920, 1080)``; both even, as 4:2:0 needs."""
    w_s, _, h_s = text.lower().partition("x")
    w, h = int(w_s), int(h_s)
    if w < 64 or h < 36 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size {text!r}: want even WxH of at least 64x36")
    return w, h


@dataclass(frozen=True)
class Scene:
    """The standard composition at one output size and length, with the paths of its inputs."""

    width: int
    height: int
    frames: int
    media_dir: Path  # shared inputs for this size
    template_dir: Path  # a Velocity template folder (data.json + media)

    @property
    def sx(self) -> float:
        return self.width / BASE_W

    @property
    def sy(self) -> float:
        return self.height / BASE_H

    @property
    def duration(self) -> float:
        return self.frames / FPS

    def media(self, relative: str) -> Path:
        return self.template_dir / relative

    def overlay_size(self, ov: Overlay) -> tuple[int, int]:
        return max(2, round(ov.w * self.sx)), max(2, round(ov.h * self.sy))

    def scaled_keys(self, ov: Overlay) -> list[tuple[int, float, float, str]]:
        return [(k.t, k.x * self.sx, k.y * self.sy, k.ease) for k in ov.keys]

    def caption_box(self, cap: Caption) -> tuple[int, int, int, int]:
        x, y, w, h = cap.box
        return round(x * self.sx), round(y * self.sy), round(w * self.sx), round(h * self.sy)

    def caption_size(self, cap: Caption) -> int:
        return max(6, round(cap.size * self.sy))


# --- easing, as the ffmpeg and MoviePy versions approximate Velocity's ----------------------


def ease(name: str, u: float) -> float:
    """Polynomials close to the CSS curves Velocity uses (within ~0.07): ffmpeg expressions
    cannot solve a cubic-bezier per frame, and MoviePy uses the same shapes to match (c)."""
    if name == "easeIn":
        return u * u
    if name == "easeOut":
        return 1 - (1 - u) ** 2
    if name == "easeInOut":
        return u * u * (3 - 2 * u)
    if name == "hold":
        return 0.0
    return u


def position_at(keys: list[tuple[int, float, float, str]], frame: float) -> tuple[float, float]:
    """Where the anchor sits at ``frame`` (composition pixels)."""
    if frame <= keys[0][0]:
        return keys[0][1], keys[0][2]
    for (t0, x0, y0, e), (t1, x1, y1, _) in zip(keys, keys[1:], strict=False):
        if frame < t1:
            k = ease(e, (frame - t0) / (t1 - t0))
            return x0 + (x1 - x0) * k, y0 + (y1 - y0) * k
    return keys[-1][1], keys[-1][2]


def ffmpeg_ease(name: str, u: str) -> str:
    """The same easings as an ffmpeg expression of ``u``."""
    if name == "easeIn":
        return f"pow({u},2)"
    if name == "easeOut":
        return f"(1-pow(1-{u},2))"
    if name == "easeInOut":
        return f"pow({u},2)*(3-2*{u})"
    if name == "hold":
        return "0"
    return u


def ffmpeg_track(keys: list[tuple[int, float, float, str]], axis: int, offset: float) -> str:
    """A piecewise ffmpeg expression of ``t`` (seconds) for one coordinate minus ``offset``."""
    expr = f"{keys[-1][1 + axis] - offset:.3f}"
    for (t0, *v0, e), (t1, *v1, _) in reversed(list(zip(keys, keys[1:], strict=False))):
        a, b = v0[axis] - offset, v1[axis] - offset
        s0, s1 = t0 / FPS, t1 / FPS
        u = f"((t-{s0:.6f})/{s1 - s0:.6f})"
        expr = f"if(lt(t,{s1:.6f}),{a:.3f}+({b - a:.3f})*{ffmpeg_ease(e, u)},{expr})"
    return expr


# --- input generation -----------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cell: int, amp: float) -> np.ndarray:
    coarse = rng.uniform(-amp, amp, (max(2, h // cell), max(2, w // cell))).astype(np.float32)
    img = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def make_background(path: Path, width: int, height: int) -> None:
    """10 s of 30 fps H.264 with real motion: a drifting colour field, a panning textured
    surface and moving shapes. Neither flat (trivially compressible) nor noise."""
    rng = np.random.default_rng(7)
    # A texture twice the frame, panned diagonally: motion the encoder must track.
    tex = _smooth_noise(rng, width * 2, height * 2, 48, 28) + _smooth_noise(
        rng, width * 2, height * 2, 6, 9
    )
    xs = np.linspace(0, 2 * math.pi, width, dtype=np.float32)
    ys = np.linspace(0, 2 * math.pi, height, dtype=np.float32)
    shapes = [
        (rng.uniform(0.05, 0.2), rng.uniform(0.3, 1.3), rng.uniform(0.3, 1.3), rng.uniform(0, 6))
        for _ in range(7)
    ]
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "fast"}
        stream.codec_context.thread_type = "FRAME"
        # An HD source as cameras and editors write it: BT.709, limited range, tagged.
        ctx = stream.codec_context
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1
        ctx.color_range = 1
        for i in range(TOTAL_FRAMES):
            tau = i / FPS
            chans = []
            for c, (fx, fy) in enumerate(((1.0, 0.6), (0.7, 1.1), (1.3, 0.8))):
                row = 120 + 70 * np.sin(xs * fx + tau * (0.8 + 0.3 * c) + 2 * c)
                col = 40 * np.cos(ys * fy - tau * 0.5 + c)
                chans.append(row[None, :] + col[:, None])
            ox = int((i * 3) % width)
            oy = int((i * 2) % height)
            patch = tex[oy : oy + height, ox : ox + width]
            rgb = np.clip(np.stack(chans, axis=-1) + patch[..., None], 0, 255).astype(np.uint8)
            img = Image.fromarray(rgb)
            draw = ImageDraw.Draw(img)
            for k, (r, fx, fy, ph) in enumerate(shapes):
                rad = r * height
                cx = width * (0.5 + 0.4 * math.sin(tau * fx + ph))
                cy = height * (0.5 + 0.4 * math.cos(tau * fy + ph * 1.7))
                fill = (
                    int(127 + 120 * math.sin(ph + k)),
                    int(127 + 120 * math.sin(ph + k + 2)),
                    int(127 + 120 * math.sin(ph + k + 4)),
                )
                if k % 2:
                    draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), fill=fill)
                else:
                    draw.rectangle((cx - rad, cy - rad * 0.6, cx + rad, cy + rad * 0.6), fill=fill)
            frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24").reformat(
                format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
            )
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    os.replace(tmp, path)


def make_overlay(path: Path, w: int, h: int, hue: tuple[int, int, int], label: str) -> None:
    """A card at about 60 % opacity with shapes of varying opacity and a soft edge."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    r = max(2, min(w, h) // 8)
    draw.rounded_rectangle((0, 0, w - 1, h - 1), radius=r, fill=(*hue, 153))
    inv = tuple(255 - c for c in hue)
    draw.ellipse((w * 0.08, h * 0.15, w * 0.45, h * 0.85), fill=(*inv, 200))
    for k in range(6):
        x0 = w * (0.52 + 0.07 * k)
        draw.rectangle((x0, h * 0.2, x0 + w * 0.04, h * 0.8), fill=(255, 255, 255, 90 + 20 * k))
    font = ImageFont.truetype(str(FONT_SRC), max(8, h // 6))
    draw.text((w * 0.27, h * 0.5), label, font=font, fill=(255, 255, 255, 230), anchor="mm")
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    img.save(path)


def make_audio(path: Path, seconds: float) -> None:
    """A chord progression (I-V-vi-IV) with harmonics and a beat envelope, 48 kHz stereo."""
    n = int(seconds * AUDIO_RATE)
    t = np.arange(n, dtype=np.float64) / AUDIO_RATE
    chords = [(220.0, 277.18, 329.63), (246.94, 311.13, 369.99), (185.0, 220.0, 277.18),
              (146.83, 185.0, 220.0)]  # fmt: skip
    sig = np.zeros((n, 2))
    seg = n // len(chords)
    for c, notes in enumerate(chords):
        sl = slice(c * seg, n if c == len(chords) - 1 else (c + 1) * seg)
        tt = t[sl]
        beat = 0.55 + 0.45 * np.exp(-((tt * 2) % 1) * 4)
        for j, f in enumerate(notes):
            tone = np.sin(2 * np.pi * f * tt) + 0.3 * np.sin(4 * np.pi * f * tt)
            pan = 0.3 + 0.2 * j
            sig[sl, 0] += tone * beat * (1 - pan)
            sig[sl, 1] += tone * beat * pan
    sig *= 0.75 / np.abs(sig).max()
    pcm = (np.clip(sig, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(AUDIO_RATE)
        wav.writeframes(pcm.tobytes())


def template_json(scene: Scene) -> dict[str, object]:
    """``data.json`` (SPEC §4) for the standard composition at this size and length."""
    layers: list[dict[str, object]] = [
        {"id": "bg", "type": "video", "src": "videos/bg.mp4", "fit": "cover", "volume": 0}
    ]
    for ov in OVERLAYS:
        w, h = scene.overlay_size(ov)
        keys = scene.scaled_keys(ov)
        layers.append(
            {
                "id": ov.id,
                "type": "image",
                "src": ov.png,
                "fit": "fill",
                "box": {
                    "x": round(keys[0][1] - w / 2),
                    "y": round(keys[0][2] - h / 2),
                    "w": w,
                    "h": h,
                },  # fmt: skip
                "transform": {
                    "position": [
                        {"t": t, "v": [round(x, 2), round(y, 2)], "ease": e} for t, x, y, e in keys
                    ]
                },
            }
        )
    for cap in CAPTIONS:
        x, y, w, h = scene.caption_box(cap)
        layers.append(
            {
                "id": cap.id,
                "type": "text",
                "text": cap.text,
                "font": FONT_NAME,
                "size": scene.caption_size(cap),
                "color": "#ffffff",
                "align": "center",
                "valign": "middle",
                "box": {"x": x, "y": y, "w": w, "h": h},
                "transform": {
                    "opacity": [
                        {"t": 0, "v": 0, "ease": "hold"},
                        {"t": cap.fade_from, "v": 0},
                        {"t": cap.fade_to, "v": 1},
                    ]
                },
            }
        )
    return {
        "version": 1,
        "name": "Benchmark standard composition",
        "width": scene.width,
        "height": scene.height,
        "fps": FPS,
        "frames": scene.frames,
        "background": "#000000",
        "fonts": {FONT_NAME: "fonts/DejaVuSans-Bold.ttf"},
        "layers": layers,
        "audio": [
            {
                "id": "music",
                "src": "audio/music.wav",
                "volume": AUDIO_VOLUME,
                "fadeIn": AUDIO_FADE_IN,
                "fadeOut": AUDIO_FADE_OUT,
            }
        ],
    }


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def build(size: tuple[int, int] = (BASE_W, BASE_H), frames: int = TOTAL_FRAMES) -> Scene:
    """Generate (when missing) the inputs and the template folder; return where they are.

    Args:
        size: output width and height; layout scales from the 1920x1080 original.
        frames: composition length, 1..300 (the media always last 300 frames).

    Raises:
        ValueError: ``frames`` outside 1..300.
        FileNotFoundError: the DejaVu font is not installed.
    """
    if not 1 <= frames <= TOTAL_FRAMES:
        raise ValueError(f"frames must lie in 1..{TOTAL_FRAMES}, got {frames}")
    if not FONT_SRC.exists():
        raise FileNotFoundError(f"{FONT_SRC} is missing: install fonts-dejavu-core")
    width, height = size
    media = OUT_DIR / f"{width}x{height}" / "media"
    tdir = OUT_DIR / f"{width}x{height}" / f"template_{frames}"
    scene = Scene(width, height, frames, media, tdir)
    media.mkdir(parents=True, exist_ok=True)

    bg = media / "bg.mp4"
    if not bg.exists():
        print(f"generating {bg} ...", flush=True)
        make_background(bg, width, height)
    for k, ov in enumerate(OVERLAYS):
        png = media / Path(ov.png).name
        if not png.exists():
            make_overlay(png, *scene.overlay_size(ov), ov.hue, "ABC"[k])
    wav = media / "music.wav"
    if not wav.exists():
        make_audio(wav, TOTAL_FRAMES / FPS)
    font = media / FONT_SRC.name
    if not font.exists():
        shutil.copyfile(FONT_SRC, font)

    _link(bg, tdir / "videos/bg.mp4")
    for ov in OVERLAYS:
        _link(media / Path(ov.png).name, tdir / ov.png)
    _link(wav, tdir / "audio/music.wav")
    _link(font, tdir / "fonts" / FONT_SRC.name)
    data = json.dumps(template_json(scene), indent=2)
    data_path = tdir / "data.json"
    if not data_path.exists() or data_path.read_text() != data:
        data_path.write_text(data)
    return scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=parse_size, default=(BASE_W, BASE_H))
    parser.add_argument("--frames", type=int, default=TOTAL_FRAMES)
    args = parser.parse_args()
    scene = build(args.size, args.frames)
    print(f"template: {scene.template_dir}")


if __name__ == "__main__":
    main()
