"""Media probing: does a file decode, and is it a format the renderer accepts (SPEC §4, §9)?

Probes open the file, check container and codec against what the renderer supports, and
decode enough that a file which is accepted renders: an image fully, audio fully, a video's
every packet header and keyframe plus stretches from sampled keyframes. Input comes from
uploads, so the decoders are fed hostile bytes: any failure inside Pillow or FFmpeg is
reported as ``UnsupportedMedia`` naming the file, never as a crash.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from renderer.errors import UnsupportedMedia
from renderer.media.orientation import displayed_size, exif_orientation, video_orientation

MAX_MEDIA_DIMENSION = 8192
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
MAX_IMAGE_FRAMES = 10_000
# Frames x pixels of an animated image: what a render decodes per loop (a GIF is streamed,
# one frame in memory). 2^30 is e.g. 1,100 frames at 720p or 4,000 at 480x540.
MAX_ANIMATION_PIXELS = 1 << 30
_IMAGE_FORMATS = ("PNG", "JPEG", "GIF")
_TGA_SUFFIXES = (".tga", ".icb", ".vda", ".vst")
_VIDEO_CODECS = {"h264": "H.264", "hevc": "H.265"}
_ABS_PATH_RE = re.compile(r"'/[^']*'")
_MP4_FAMILY = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"}
# Formats an image upload may well be in, named in the refusal so the user knows what it is.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"BM", 0, "BMP"),
    (b"WEBP", 8, "WebP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"8BPS", 0, "PSD"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypavif", 4, "AVIF"),
    (b"<svg", 0, "SVG"),
    (b"<?xml", 0, "SVG/XML"),
    (b"%PDF", 0, "PDF"),
)


@dataclass(frozen=True)
class ImageInfo:
    """``width`` x ``height`` is the displayed size: the stored size turned by ``orientation``
    (EXIF 1-8, see ``renderer.media.orientation``)."""

    width: int
    height: int
    frames: int
    animated: bool
    orientation: int = 1


@dataclass(frozen=True)
class VideoInfo:
    """``width`` x ``height`` is the displayed size: the coded size turned by the display
    matrix, read as ``orientation`` (EXIF numbering, see ``renderer.media.orientation``)."""

    width: int
    height: int
    fps: Fraction
    duration_s: float
    codec: str
    frames_estimate: int
    has_audio: bool
    orientation: int = 1


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int
    duration_s: float


@dataclass(frozen=True)
class FontInfo:
    family: str
    style: str


def _label(path: Path, name: str | None) -> str:
    return name if name is not None else path.name


def _sniff(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError:
        return None
    for magic, offset, label in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return label
    return None


def probe_image(path: Path, name: str | None = None) -> ImageInfo:
    """Check that ``path`` is a PNG, JPEG, GIF (animated or not) or TGA that decodes.

    Args:
        path: the file.
        name: how to call it in messages (e.g. ``images/logo.png``); default its file name.

    Raises:
        UnsupportedMedia: another format, undecodable or truncated data, or over
            ``MAX_MEDIA_DIMENSION`` pixels a side.
    """
    from PIL import Image

    label = _label(path, name)
    # TGA has no signature, so Pillow would try it on any bytes; only trust it by suffix.
    formats = _IMAGE_FORMATS + (("TGA",) if path.suffix.lower() in _TGA_SUFFIXES else ())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=list(formats)) as im:
                width, height = im.size
                if width < 1 or height < 1:
                    raise UnsupportedMedia(f"{label}: image has no pixels")
                if max(width, height) > MAX_MEDIA_DIMENSION or width * height > MAX_IMAGE_PIXELS:
                    raise UnsupportedMedia(
                        f"{label}: image is {width}x{height}; the largest accepted is "
                        f"{MAX_MEDIA_DIMENSION} pixels a side"
                    )
                frames = int(getattr(im, "n_frames", 1))
                if frames > MAX_IMAGE_FRAMES:
                    raise UnsupportedMedia(
                        f"{label}: animation has {frames} frames (limit {MAX_IMAGE_FRAMES})"
                    )
                turn = exif_orientation(im)
                check_animation_size(width, height, frames, label)
                # Decode every frame: a GIF truncated halfway must fail here, not mid-render.
                for index in range(frames):
                    im.seek(index)
                    im.load()
    except UnsupportedMedia:
        raise
    except FileNotFoundError as err:
        raise UnsupportedMedia(f"{label}: file not found") from err
    except Exception as err:  # Pillow raises many types on hostile input; all mean "unusable"
        sniffed = _sniff(path)
        if sniffed is not None:
            raise UnsupportedMedia(
                f"{label}: image format {sniffed} is not supported; use PNG, JPEG, GIF or TGA"
            ) from err
        raise UnsupportedMedia(
            f"{label}: not a readable image (PNG, JPEG, GIF or TGA): {_reason(err, path, label)}"
        ) from err
    shown_w, shown_h = displayed_size(width, height, turn)
    return ImageInfo(shown_w, shown_h, frames, frames > 1, turn)


def check_animation_size(width: int, height: int, frames: int, label: str) -> None:
    """Refuse an animation whose frames together exceed ``MAX_ANIMATION_PIXELS``.

    Raises:
        UnsupportedMedia: naming the file, its size and frame count.
    """
    if frames > 1 and width * height * frames > MAX_ANIMATION_PIXELS:
        raise UnsupportedMedia(
            f"{label}: animation has {frames} frames of {width}x{height} "
            f"({width * height * frames / 1e6:.0f} megapixels in all); the limit is "
            f"{MAX_ANIMATION_PIXELS / 1e6:.0f} megapixels (fewer or smaller frames)"
        )


def _reason(err: BaseException, path: Path, label: str) -> str:
    text = str(err).strip() or type(err).__name__
    # Library messages quote the full path; that would leak server-side folders to clients.
    text = text.replace(str(path), label)
    return _ABS_PATH_RE.sub("'...'", text)[:200]


def _container_family(format_name: str) -> set[str]:
    return set(format_name.split(","))


def probe_video(path: Path, name: str | None = None) -> VideoInfo:
    """Check that ``path`` is an MP4/MOV with an H.264 or H.265 video stream that decodes.

    Args:
        path: the file.
        name: how to call it in messages (e.g. ``videos/bg.mp4``); default its file name.

    Returns:
        size, frame rate, duration, codec (``h264``/``hevc``), an estimated frame count and
        whether it carries sound.

    Raises:
        UnsupportedMedia: another container or codec (named in the message), no video
            stream, no frame rate, over ``MAX_MEDIA_DIMENSION``, or a packet, a keyframe or
            a sampled frame does not decode.
    """
    import av

    label = _label(path, name)
    try:
        with av.open(str(path)) as container:
            family = _container_family(container.format.name)
            if not family & _MP4_FAMILY:
                raise UnsupportedMedia(
                    f"{label}: container '{container.format.name}' is not supported; "
                    "use MP4 with H.264 or H.265"
                )
            if not container.streams.video:
                raise UnsupportedMedia(f"{label}: has no video stream")
            stream = container.streams.video[0]
            codec = stream.codec_context.codec.canonical_name
            if codec not in _VIDEO_CODECS:
                raise UnsupportedMedia(
                    f"{label}: video codec '{codec}' is not supported; use H.264 or H.265"
                )
            width, height = stream.codec_context.width, stream.codec_context.height
            if width < 1 or height < 1:
                raise UnsupportedMedia(f"{label}: video has no picture size")
            if max(width, height) > MAX_MEDIA_DIMENSION:
                raise UnsupportedMedia(
                    f"{label}: video is {width}x{height}; the largest accepted is "
                    f"{MAX_MEDIA_DIMENSION} pixels a side"
                )
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate or rate <= 0:
                raise UnsupportedMedia(f"{label}: video has no frame rate")
            fps = Fraction(rate)
            duration_s = _duration(stream.duration, stream.time_base, container.duration)
            frames = int(stream.frames) or round(duration_s * fps)
            has_audio = bool(container.streams.audio)
            keyframes, turn = _decode_keyframes(container, stream, label)
        _decode_samples(path, keyframes, label)
    except UnsupportedMedia:
        raise
    except FileNotFoundError as err:
        raise UnsupportedMedia(f"{label}: file not found") from err
    except Exception as err:  # FFmpeg errors on hostile input all mean "unusable"
        raise UnsupportedMedia(
            f"{label}: not a readable video (MP4 with H.264 or H.265): {_reason(err, path, label)}"
        ) from err
    width, height = displayed_size(width, height, turn)
    return VideoInfo(
        width=width,
        height=height,
        orientation=turn,
        fps=fps,
        duration_s=duration_s,
        codec=codec,
        frames_estimate=frames,
        has_audio=has_audio,
    )


# Probing a video decodes every packet's headers and every keyframe, then whole stretches from
# a few keyframes (first, last and evenly between): enough to find a damaged file without
# paying for a full decode. At most this many frames are decoded in the second pass.
_SAMPLE_GOPS = 8
_SAMPLE_FRAMES = 4
MAX_PROBE_FRAMES = 600


def _decode_keyframes(container: Any, stream: Any, label: str) -> tuple[list[int], int]:
    """Send every packet through the decoder with non-key frames skipped: the decoder still
    parses each packet's NAL headers (a damaged one raises) and decodes each keyframe.
    Returns the keyframes' timestamps and the display orientation, read from the first
    decoded frame (FFmpeg puts the display matrix on every frame)."""
    stream.codec_context.skip_frame = "NONKEY"
    keyframes: list[int] = []
    turn: int | None = None
    for packet in container.demux(stream):
        if packet.is_keyframe and packet.pts is not None:
            keyframes.append(int(packet.pts))
        frames = _decode_packet(stream, packet, label)
        if frames and turn is None:
            turn = video_orientation(frames[0], stream)
    if turn is None or not keyframes:
        raise UnsupportedMedia(f"{label}: video has no decodable frames")
    return keyframes, turn


def _at(packet: Any) -> str:
    if packet.pts is None or packet.time_base is None:
        return "an unknown time"
    return f"{float(packet.pts * packet.time_base):.2f} s"


def _decode_packet(stream: Any, packet: Any, label: str) -> list[Any]:
    import av

    try:
        return list(stream.codec_context.decode(packet))
    except av.error.InvalidDataError as err:
        raise UnsupportedMedia(
            f"{label}: the video is damaged at {_at(packet)} (the decoder refused it); "
            "export or encode the file again"
        ) from err


def _decode_samples(path: Path, keyframes: list[int], label: str) -> None:
    """Fully decode the first frames after sampled keyframes, and the stream's end from the
    last keyframe on (up to ``MAX_PROBE_FRAMES`` frames in all)."""
    import av

    count = min(_SAMPLE_GOPS, len(keyframes))
    picks = sorted(
        {keyframes[round(i * (len(keyframes) - 1) / max(1, count - 1))] for i in range(count)}
    )
    budget = MAX_PROBE_FRAMES
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for index, pts in enumerate(picks):
            last = index == len(picks) - 1
            container.seek(pts, stream=stream, backward=True)
            frames = 0
            for packet in container.demux(stream):
                got = len(_decode_packet(stream, packet, label))
                frames += got
                budget -= got
                if budget <= 0 or (not last and frames >= _SAMPLE_FRAMES):
                    break
            if budget <= 0:
                return


def _duration(
    stream_duration: int | None, time_base: Fraction | None, container_duration: int | None
) -> float:
    if stream_duration and time_base:
        return float(stream_duration * time_base)
    if container_duration:
        return container_duration / 1_000_000  # AV_TIME_BASE
    return 0.0


def probe_audio(path: Path, name: str | None = None) -> AudioInfo:
    """Check that ``path`` is MP3, WAV (PCM) or AAC (ADTS ``.aac`` or in MP4/M4A) and that
    the whole stream decodes.

    Args:
        path: the file.
        name: how to call it in messages (e.g. ``audio/music.mp3``); default its file name.

    Raises:
        UnsupportedMedia: another container or codec (named), no audio stream, or it does not
            decode.
    """
    import av

    label = _label(path, name)
    try:
        with av.open(str(path)) as container:
            family = _container_family(container.format.name)
            if not family & (_MP4_FAMILY | {"mp3", "wav", "aac"}):
                raise UnsupportedMedia(
                    f"{label}: container '{container.format.name}' is not supported; "
                    "use MP3, WAV or AAC"
                )
            if not container.streams.audio:
                raise UnsupportedMedia(f"{label}: has no audio stream")
            stream = container.streams.audio[0]
            codec = stream.codec_context.codec.canonical_name
            accepted = (
                ("mp3" in family and codec == "mp3")
                or ("wav" in family and codec.startswith("pcm_"))
                or ("aac" in family and codec == "aac")
                or (bool(family & _MP4_FAMILY) and codec in ("aac", "mp3"))
            )
            if not accepted:
                raise UnsupportedMedia(
                    f"{label}: audio codec '{codec}' in '{container.format.name}' is not "
                    "supported; use MP3, WAV (PCM) or AAC"
                )
            sample_rate = int(stream.codec_context.sample_rate or 0)
            channels = int(stream.codec_context.layout.nb_channels or 0)
            if sample_rate <= 0 or channels <= 0:
                raise UnsupportedMedia(f"{label}: audio has no sample rate or channels")
            duration_s = _duration(stream.duration, stream.time_base, container.duration)
            # Decode it all (audio decodes hundreds of times faster than real time): a file
            # damaged anywhere must be refused here, not fail every render that uses it.
            samples = 0
            for packet in container.demux(stream):
                try:
                    samples += sum(f.samples for f in stream.codec_context.decode(packet))
                except av.error.InvalidDataError as err:
                    raise UnsupportedMedia(
                        f"{label}: the audio is damaged at {_at(packet)} (the decoder refused "
                        "it); export or encode the file again"
                    ) from err
            if samples == 0:
                raise UnsupportedMedia(f"{label}: audio has no decodable samples")
    except UnsupportedMedia:
        raise
    except FileNotFoundError as err:
        raise UnsupportedMedia(f"{label}: file not found") from err
    except Exception as err:  # FFmpeg errors on hostile input all mean "unusable"
        raise UnsupportedMedia(
            f"{label}: not readable audio (MP3, WAV or AAC): {_reason(err, path, label)}"
        ) from err
    return AudioInfo(codec=codec, sample_rate=sample_rate, channels=channels, duration_s=duration_s)


def check_font(path: Path, name: str | None = None) -> FontInfo:
    """Check that FreeType (through Pillow) loads ``path`` as a font (TTF, OTF, TTC).

    Raises:
        UnsupportedMedia: the file is not a font FreeType can load.
    """
    from PIL import ImageFont

    from renderer.text.fonts import describe

    label = _label(path, name)
    try:
        # A bitmap-only font (Noto Color Emoji) opens only at its strike size.
        font = ImageFont.truetype(str(path), describe(str(path)).strike or 16)
        family, style = font.getname()
        font.getbbox("Ag")
    except FileNotFoundError as err:
        raise UnsupportedMedia(f"{label}: file not found") from err
    except Exception as err:  # FreeType reports bad fonts as OSError or ValueError
        raise UnsupportedMedia(
            f"{label}: cannot be loaded as a font (TTF or OTF): {_reason(err, path, label)}"
        ) from err
    return FontInfo(family=family or "", style=style or "")


def validate_media_file(
    path: Path, kind: Literal["image", "video", "audio"], name: str | None = None
) -> ImageInfo | VideoInfo | AudioInfo:
    """Probe an uploaded file as the ``kind`` the service expects.

    Raises:
        UnsupportedMedia: the file is not usable as ``kind``.
        ValueError: ``kind`` is not image, video or audio.
    """
    if kind == "image":
        return probe_image(path, name)
    if kind == "video":
        return probe_video(path, name)
    if kind == "audio":
        return probe_audio(path, name)
    raise ValueError(f"unknown media kind {kind!r}")


# --- Lottie ------------------------------------------------------------------------------------

MAX_LOTTIE_BYTES = 32 * 1024 * 1024
MAX_LOTTIE_FRAMES = 1_000_000
_LOTTIE_TEXT = 5  # Bodymovin layer type of a text layer
_LOTTIE_PRECOMP = 0


@dataclass(frozen=True)
class LottieInfo:
    """What the renderer needs to know about a Lottie file before rendering it.

    ``in_frame``/``out_frame`` are Bodymovin's ``ip``/``op`` (the animation plays frames
    ``[in_frame, out_frame)`` at ``fps``); ``text_layers`` are the names (``nm``) of its text
    layers, the keys a ``lottieText`` customisation may set; ``images`` the external image
    files it draws, resolved; ``warnings`` what Velocity ignores in it (expressions, sound)."""

    width: float
    height: float
    fps: float
    in_frame: float
    out_frame: float
    text_layers: tuple[str, ...]
    images: tuple[Path, ...]
    warnings: tuple[str, ...] = ()

    @property
    def frame_count(self) -> float:
        return self.out_frame - self.in_frame


def _number(doc: dict[str, object], key: str, label: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnsupportedMedia(f"{label}: not a Lottie animation: '{key}' must be a number")
    return float(value)


def lottie_layer_lists(doc: dict[str, object]) -> list[list[object]]:
    """The layer arrays of a parsed Lottie document: the top-level ``layers`` and those of
    each precomposition asset (where text layers may sit too)."""
    lists: list[list[object]] = []
    layers = doc.get("layers")
    if isinstance(layers, list):
        lists.append(layers)
    assets = doc.get("assets")
    if isinstance(assets, list):
        for asset in assets:
            if isinstance(asset, dict) and isinstance(asset.get("layers"), list):
                lists.append(asset["layers"])
    return lists


def lottie_texts(doc: dict[str, object]) -> dict[str, str]:
    """Text layers (``ty`` 5) of a parsed Lottie document by name (``nm``), in order, with the
    text of their first keyframe ("" when it has none; Bodymovin's "\r" line breaks become
    "\n"). A name used twice is listed once, with its first text."""
    texts: dict[str, str] = {}
    for layers in lottie_layer_lists(doc):
        for layer in layers:
            if not isinstance(layer, dict) or layer.get("ty") != _LOTTIE_TEXT:
                continue
            name = layer.get("nm")
            if not isinstance(name, str) or name in texts:
                continue
            text = ""
            try:
                value = layer["t"]["d"]["k"][0]["s"]["t"]
                text = value.replace("\r", "\n") if isinstance(value, str) else ""
            except (KeyError, IndexError, TypeError):
                pass
            texts[name] = text
    return texts


def read_lottie(
    path: Path, name: str | None = None, root: Path | None = None
) -> tuple[dict[str, object], LottieInfo]:
    """Read and check a Bodymovin/Lottie JSON file without rendering it.

    Args:
        path: the file.
        name: how to call it in messages (e.g. ``lottie/burst.json``); default its file name.
        root: the folder its external images must stay inside (default the file's folder).

    Returns:
        The parsed document, made safe for the engine by ``renderer.media.lottie_doc`` (no
        expressions, images inlined as data URIs, sound and data assets removed), and what it
        describes.

    Raises:
        UnsupportedMedia: not UTF-8 JSON (with line and column), not a Lottie animation (no
            size, frame rate, frame range or layers), too large, or refused by
            ``sanitize_lottie`` (cyclic or too deep precomps, an asset that is not a valid
            data URI or leads outside ``root``, an image missing or unreadable).
    """
    import json

    label = _label(path, name)
    try:
        size = path.stat().st_size
        if size > MAX_LOTTIE_BYTES:
            raise UnsupportedMedia(
                f"{label}: Lottie file is {size} bytes; the limit is "
                f"{MAX_LOTTIE_BYTES // (1024 * 1024)} MB"
            )
        doc = json.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError as err:
        raise UnsupportedMedia(f"{label}: file not found") from err
    except UnicodeDecodeError as err:
        raise UnsupportedMedia(f"{label}: not UTF-8 text (byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise UnsupportedMedia(
            f"{label}: not valid Lottie JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from err
    except RecursionError as err:
        raise UnsupportedMedia(f"{label}: not valid Lottie JSON: nested too deeply") from err
    if not isinstance(doc, dict):
        raise UnsupportedMedia(f"{label}: not a Lottie animation: the JSON is not an object")
    width, height = _number(doc, "w", label), _number(doc, "h", label)
    fps = _number(doc, "fr", label)
    in_frame, out_frame = _number(doc, "ip", label), _number(doc, "op", label)
    if not (0 < width <= MAX_MEDIA_DIMENSION and 0 < height <= MAX_MEDIA_DIMENSION):
        raise UnsupportedMedia(
            f"{label}: Lottie size {width:g}x{height:g} is outside 1..{MAX_MEDIA_DIMENSION} pixels"
        )
    if not 0 < fps <= 1000:
        raise UnsupportedMedia(f"{label}: Lottie frame rate {fps:g} is outside (0, 1000]")
    if not 0 < out_frame - in_frame <= MAX_LOTTIE_FRAMES:
        raise UnsupportedMedia(
            f"{label}: Lottie frame range ip={in_frame:g}..op={out_frame:g} is empty or too long"
        )
    if not isinstance(doc.get("layers"), list):
        raise UnsupportedMedia(f"{label}: not a Lottie animation: 'layers' must be an array")
    from renderer.media.lottie_doc import sanitize_lottie

    safe = sanitize_lottie(doc, path, root if root is not None else path.parent, label)
    info = LottieInfo(
        width=width,
        height=height,
        fps=fps,
        in_frame=in_frame,
        out_frame=out_frame,
        text_layers=tuple(lottie_texts(doc)),
        images=safe.images,
        warnings=safe.warnings,
    )
    return safe.doc, info
