"""The output plan of a render: which output frames, at what rate and size, sample which
template frames.

Submission (its budget estimate and ``frames_total``), the render, chunking, the span cache
and the final audio mix all need the same answer; they take it from one :class:`OutputPlan`
so they cannot disagree by a frame. Validation and arithmetic only: the API process imports
this module, so it stays free of numpy and PyAV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

from renderer.encode.config import EncoderConfig, resolve_frame_range
from renderer.errors import InvalidFrameRange
from renderer.template.model import Template, check_layer_sizes


def output_frames(
    f_start: int, f_end: int, template_fps: Fraction, output_fps: Fraction
) -> tuple[int, int]:
    """The output frames ``[k_start, k_end)`` that template frames ``[f_start, f_end)``
    cover.

    Output frame k sits at k / output_fps; a range takes the frames whose time falls in
    ``[f_start, f_end) / template_fps``. Ranges that tile the composition therefore tile the
    output frames exactly, whatever the two rates, which chunked renders rely on.
    """
    k_start = math.ceil(Fraction(f_start) / template_fps * output_fps)
    k_end = math.ceil(Fraction(f_end) / template_fps * output_fps)
    return k_start, k_end


@dataclass(frozen=True)
class OutputPlan:
    """Template frames ``[f_start, f_end)`` rendered as output frames ``[k_start, k_end)``
    (numbered from the start of the composition) at ``fps``, ``width`` x ``height``, with
    ``encoder``. Build it with :meth:`of`; :meth:`part` and :meth:`chunks` cut it up."""

    encoder: EncoderConfig
    template_fps: Fraction
    fps: Fraction
    width: int
    height: int
    f_start: int
    f_end: int
    k_start: int
    k_end: int

    @classmethod
    def of(
        cls,
        template: Template,
        encoder: EncoderConfig | None = None,
        frames: tuple[int | None, int | None] | None = None,
    ) -> OutputPlan:
        """The plan for rendering ``frames`` of ``template`` with ``encoder``.

        Args:
            template: the template's validated model (its size, rate and length).
            encoder: the render's encoder config; None for the defaults.
            frames: template frame range ``(start, end)``, half-open; either bound (or the
                whole range) None for the composition's own.

        Raises:
            InvalidEncoderConfig: the output size, rate or bitrate do not fit the config.
            LayerTooLarge: a layer's box is too large at the output size.
            InvalidFrameRange: the range is empty, outside the composition, or holds no
                output frame.
        """
        config = encoder if encoder is not None else EncoderConfig()
        width, height = config.output_size(template.width, template.height)
        fps = config.output_fps(template.fps_fraction)
        config.validate_combination(width, height, fps)
        check_layer_sizes(template, width, height)
        start, end = frames if frames is not None else (None, None)
        f_start, f_end = resolve_frame_range(start, end, template.frames)
        k_start, k_end = output_frames(f_start, f_end, template.fps_fraction, fps)
        rate = template.fps_fraction
        plan = cls(config, rate, fps, width, height, f_start, f_end, k_start, k_end)
        plan._check_not_empty()
        return plan

    def _check_not_empty(self) -> None:
        if self.frames < 1:
            raise InvalidFrameRange(
                f"frames [{self.f_start}, {self.f_end}) contain no output frame at "
                f"{float(self.fps):.3f} fps",
                problem="no_output",
                start=self.f_start,
                end=self.f_end,
            )

    @property
    def frames(self) -> int:
        """How many output frames the render writes."""
        return self.k_end - self.k_start

    @property
    def frame_range(self) -> tuple[int, int]:
        return self.f_start, self.f_end

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def gop(self) -> int:
        """Output frames between keyframes."""
        return self.encoder.effective_gop(self.fps)

    @property
    def start_s(self) -> float:
        """Composition time of the first output frame."""
        return float(Fraction(self.k_start) / self.fps)

    @property
    def duration_s(self) -> float:
        """Length of the output: its frames at the output rate."""
        return float(Fraction(self.frames) / self.fps)

    def times(self) -> list[float]:
        """Composition time (seconds) of each output frame, in order."""
        return [float(Fraction(k) / self.fps) for k in range(self.k_start, self.k_end)]

    def part(self, f_start: int, f_end: int) -> OutputPlan:
        """The same render restricted to template frames ``[f_start, f_end)`` (a chunk or a
        span): its output frames keep their numbers in the whole render.

        Raises:
            InvalidFrameRange: the part lies outside this plan's range or holds no output
                frame.
        """
        if not self.f_start <= f_start < f_end <= self.f_end:
            raise InvalidFrameRange(
                f"frames [{f_start}, {f_end}) are not inside [{self.f_start}, {self.f_end})",
                problem="outside",
                start=f_start,
                end=f_end,
            )
        k_start, k_end = output_frames(f_start, f_end, self.template_fps, self.fps)
        plan = replace(self, f_start=f_start, f_end=f_end, k_start=k_start, k_end=k_end)
        plan._check_not_empty()
        return plan

    def chunks(self, chunk_frames: int) -> list[OutputPlan]:
        """Split into parts of about ``chunk_frames`` output frames that tile this plan.

        Each part after the first starts on output frame ``k_start + m × gop``, rounded down
        to a whole GOP count of at least one, so the joined video keeps the keyframe spacing
        of a single render. When the output rate is above the template's, a GOP boundary may
        fall between template frames; the part then starts at the next output frame a
        template frame reaches (still valid, its first frame still an IDR).

        Returns:
            ``[self]`` when the render is not longer than one chunk.

        Raises:
            InvalidFrameRange: ``chunk_frames`` is below 1.
        """
        if chunk_frames < 1:
            raise InvalidFrameRange(f"chunk_frames must be at least 1, got {chunk_frames}")
        gop = self.gop
        step = max(1, chunk_frames // gop) * gop
        bounds = [self.f_start]
        for m in range(step, self.frames, step):
            # The first template frame whose time reaches output frame k_start + m.
            b = math.ceil(Fraction(self.k_start + m) * self.template_fps / self.fps)
            if bounds[-1] < b < self.f_end:
                bounds.append(b)
        bounds.append(self.f_end)
        return [self.part(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
