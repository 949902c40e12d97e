"""What a render reports back: frames, encoder, where the time went, text fit decisions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

STAGES = ("decode", "composite", "convert", "encode", "audio", "mux")


@dataclass(frozen=True)
class TextFit:
    """How a text layer was fitted into its box."""

    layer_id: str
    requested_size: float
    used_size: float
    lines: int
    truncated: bool
    # Characters of the text that no font of the layer's fallback chain has (drawn as the
    # first font's missing-glyph box), in order of first appearance.
    uncovered: str = ""


@dataclass(frozen=True)
class RenderReport:
    frames: int
    width: int
    height: int
    fps: Fraction
    encoder: str  # the encoder that actually ran, e.g. "libx264" or "h264_nvenc"
    hardware: bool
    wall_s: float
    output_bytes: int
    # Seconds per stage (keys from STAGES). Stages on separate threads overlap, so their sum
    # may exceed wall_s.
    stages_s: dict[str, float] = field(default_factory=dict)
    text_fits: list[TextFit] = field(default_factory=list)
    has_audio: bool = False
    # Segmented renders (renderer.segments): output frames taken from the span cache, and
    # every span as (first output frame, end, static, from the cache).
    cached_frames: int = 0
    spans: list[tuple[int, int, bool, bool]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fps"] = [self.fps.numerator, self.fps.denominator]
        return data
