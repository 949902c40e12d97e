"""``EncoderConfig`` (SPEC §6) and frame ranges: validation only, no media stack.

The API imports this module to refuse bad requests at submission (a 400, never a failed render
later), so it must stay free of numpy and PyAV. ``renderer.encode.encoder`` turns a validated config
into encoder options.

Levels use one numbering for every codec: ``10 × level`` (``41`` is level 4.1, ``9`` is H.264's
level 1b), as FFmpeg numbers H.264 levels. ffprobe shows H.264 levels in that numbering, HEVC's
``general_level_idc`` as ``30 × level`` (4.1 reads 123) and AV1's ``seq_level_idx``
(4.1 reads 9); :func:`probe_level` converts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema

from renderer.errors import InvalidEncoderConfig, InvalidFrameRange


class _WireEnum(IntEnum):
    """An enum sent as its number. Validated as the literal numbers, so a request, its
    error messages and the OpenAPI document read exactly as for plain integers (a lax
    enum would also accept the string ``"1"``)."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls, core_schema.literal_schema([member.value for member in cls])
        )


class Codec(_WireEnum):
    """``encoderConfig.codec`` (SPEC §6)."""

    H264 = 0
    H265 = 1
    AV1 = 2

    @property
    def label(self) -> str:
        """The name a person reads (``H.264``)."""
        return _CODEC_LABELS[self]


class RateControl(_WireEnum):
    """``encoderConfig.rc`` (SPEC §6)."""

    CBR = 0
    VBR = 1
    CQP = 2
    CRF = 3


_CODEC_LABELS = {Codec.H264: "H.264", Codec.H265: "H.265", Codec.AV1: "AV1"}
# The rate controls that aim at a bitrate.
_BITRATE_RC = (RateControl.CBR, RateControl.VBR)

MIN_SIDE = 16
MAX_SIDE = 8192
MIN_FPS = Fraction(1)
MAX_FPS = Fraction(240)
MIN_BITRATE = 10_000
MAX_BITRATE = 800_000_000

# Default bitrate: bits per pixel per frame, clamped. 0.1 gives ~6 Mb/s at 1080p30, which is
# what streaming services use for H.264 at that size.
_DEFAULT_BPP = 0.1
_DEFAULT_MIN_BITRATE = 500_000
_DEFAULT_MAX_BITRATE = 50_000_000
DEFAULT_GOP_SECONDS = 2

# VBR peaks at this many times the target bitrate (the encoders' maxrate/overshoot, and the
# peak checked against a level's limit).
VBR_PEAK = 1.5

# The one profile table: profile numbers each codec accepts for 8-bit 4:2:0 output, and the
# name every encoder (x264, x265, SVT-AV1, NVENC) is given for it.
PROFILES: dict[Codec, dict[int, str]] = {
    Codec.H264: {66: "baseline", 77: "main", 100: "high"},
    Codec.H265: {1: "main"},
    Codec.AV1: {0: "main"},
}


@dataclass(frozen=True)
class LevelLimits:
    """Annex A limits of one level: luma samples per picture, luma samples per second, the
    longest side in luma samples, and the main-tier maximum bitrate in bits per second
    (H.264: for baseline/main; high profile allows 1.25×)."""

    max_picture: int
    max_rate: int
    max_side: int
    max_bitrate: int


def _h264(max_mbps: int, max_fs: int, max_kbps: int) -> LevelLimits:
    # H.264 counts 16×16 macroblocks; each side is at most sqrt(8 × MaxFS) macroblocks.
    side_mbs = int((8 * max_fs) ** 0.5)
    return LevelLimits(max_fs * 256, max_mbps * 256, side_mbs * 16, max_kbps * 1000)


def _hevc(max_ps: int, max_sr: int, max_kbps: int) -> LevelLimits:
    return LevelLimits(max_ps, max_sr, int((8 * max_ps) ** 0.5), max_kbps * 1000)


def _av1(max_ps: int, max_h: int, max_rate: int, max_mbps: float) -> LevelLimits:
    return LevelLimits(max_ps, max_rate, max_h, int(max_mbps * 1_000_000))


LEVELS: dict[Codec, dict[int, LevelLimits]] = {
    Codec.H264: {
        10: _h264(1485, 99, 64),
        9: _h264(1485, 99, 128),
        11: _h264(3000, 396, 192),
        12: _h264(6000, 396, 384),
        13: _h264(11880, 396, 768),
        20: _h264(11880, 396, 2000),
        21: _h264(19800, 792, 4000),
        22: _h264(20250, 1620, 4000),
        30: _h264(40500, 1620, 10000),
        31: _h264(108000, 3600, 14000),
        32: _h264(216000, 5120, 20000),
        40: _h264(245760, 8192, 20000),
        41: _h264(245760, 8192, 50000),
        42: _h264(522240, 8704, 50000),
        50: _h264(589824, 22080, 135000),
        51: _h264(983040, 36864, 240000),
        52: _h264(2073600, 36864, 240000),
        60: _h264(4177920, 139264, 240000),
        61: _h264(8355840, 139264, 480000),
        62: _h264(16711680, 139264, 800000),
    },
    Codec.H265: {
        10: _hevc(36864, 552960, 128),
        20: _hevc(122880, 3686400, 1500),
        21: _hevc(245760, 7372800, 3000),
        30: _hevc(552960, 16588800, 6000),
        31: _hevc(983040, 33177600, 10000),
        40: _hevc(2228224, 66846720, 12000),
        41: _hevc(2228224, 133693440, 20000),
        50: _hevc(8912896, 267386880, 25000),
        51: _hevc(8912896, 534773760, 40000),
        52: _hevc(8912896, 1069547520, 60000),
        60: _hevc(35651584, 1069547520, 60000),
        61: _hevc(35651584, 2139095040, 120000),
        62: _hevc(35651584, 4278190080, 240000),
    },
    Codec.AV1: {
        20: _av1(147456, 2048, 4423680, 1.5),
        21: _av1(278784, 2816, 8363520, 3.0),
        30: _av1(665856, 4352, 19975680, 6.0),
        31: _av1(1065024, 5504, 31950720, 10.0),
        40: _av1(2359296, 6144, 70778880, 12.0),
        41: _av1(2359296, 6144, 141557760, 20.0),
        50: _av1(8912896, 8192, 267386880, 30.0),
        51: _av1(8912896, 8192, 534773760, 40.0),
        52: _av1(8912896, 8192, 1069547520, 60.0),
        53: _av1(8912896, 8192, 1069547520, 60.0),
        60: _av1(35651584, 16384, 1069547520, 60.0),
        61: _av1(35651584, 16384, 2139095040, 100.0),
        62: _av1(35651584, 16384, 4278190080, 160.0),
        63: _av1(35651584, 16384, 4278190080, 160.0),
    },
}


def level_name(level: int) -> str:
    """``41`` → ``"4.1"`` (``9`` → ``"1b"``, H.264's odd one)."""
    return "1b" if level == 9 else f"{level // 10}.{level % 10}"


def probe_level(codec: Codec, reported: int) -> int:
    """Convert the level ffprobe/PyAV report for ``codec`` to this module's ``10 × level``."""
    if codec == Codec.H265:
        return reported // 3
    if codec == Codec.AV1:
        return (reported // 4 + 2) * 10 + reported % 4
    return reported


def _mb_round(side: int) -> int:
    return -(-side // 16) * 16


def _fmt_levels(codec: Codec) -> str:
    return ", ".join(str(k) for k in sorted(LEVELS[codec]))


class EncoderConfig(BaseModel):
    """The render request's ``encoderConfig``. Every field is optional; the template supplies
    size and frame rate, and the rest default to a sensible H.264 encode.

    Invalid values and combinations raise :class:`InvalidEncoderConfig` (a ``ValueError``,
    so pydantic reports it as a validation error); :meth:`parse` turns a raw mapping into a
    config or one readable ``InvalidEncoderConfig``.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    bitrate: int | None = Field(
        default=None, ge=0, le=MAX_BITRATE, description="bits per second (not bytes)"
    )
    fps_num: int | None = Field(default=None, alias="fpsNum", ge=1, le=240_000)
    fps_denum: int | None = Field(default=None, alias="fpsDenum", ge=1, le=100_000)
    res: tuple[int, int] | None = Field(default=None, description="[width, height], even")
    codec: Codec = Codec.H264
    preset: int = Field(default=3, ge=0, le=5, description="0 slowest … 5 fastest")
    rc: RateControl | None = Field(
        default=None, description="0 CBR, 1 VBR, 2 CQP, 3 CRF; default VBR with a bitrate"
    )
    qp: int | None = Field(default=None, ge=0, le=51)
    crf: int | None = Field(default=None, ge=0, le=51)
    gop: int | None = Field(
        default=None, ge=1, le=10_000, description="frames between keyframes (default 2 s)"
    )
    idr: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="frames between IDR frames; a multiple of gop (every keyframe is an IDR)",
    )
    profile: int | None = None
    level: int | None = None

    # --- validation ---------------------------------------------------------------------

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if self.res is not None:
            for side, name in zip(self.res, ("width", "height"), strict=True):
                if not MIN_SIDE <= side <= MAX_SIDE:
                    raise InvalidEncoderConfig(
                        f"encoderConfig.res {name} {side} must lie between "
                        f"{MIN_SIDE} and {MAX_SIDE}"
                    )
                if side % 2:
                    raise InvalidEncoderConfig(
                        f"encoderConfig.res {name} {side} must be even for 4:2:0 video"
                    )
        if self.fps_denum is not None and self.fps_num is None:
            raise InvalidEncoderConfig("encoderConfig.fpsDenum is given without fpsNum")
        if self.fps_num is not None:
            rate = Fraction(self.fps_num, self.fps_denum or 1)
            if not MIN_FPS <= rate <= MAX_FPS:
                raise InvalidEncoderConfig(
                    f"encoderConfig.fpsNum/fpsDenum = {float(rate):.3f} fps must lie "
                    f"between {MIN_FPS} and {MAX_FPS}"
                )
        rc = self.rate_control
        if rc in _BITRATE_RC and self.bitrate is not None and self.bitrate < MIN_BITRATE:
            raise InvalidEncoderConfig(
                f"encoderConfig.bitrate {self.bitrate} is too low for {rc.name}: "
                f"give at least {MIN_BITRATE} bits per second"
            )
        if self.qp is not None and rc != RateControl.CQP:
            raise InvalidEncoderConfig(
                f"encoderConfig.qp only applies to rc 2 (CQP), not rc {int(rc)} ({rc.name})"
            )
        if self.crf is not None and rc != RateControl.CRF:
            raise InvalidEncoderConfig(
                f"encoderConfig.crf only applies to rc 3 (CRF), not rc {int(rc)} ({rc.name})"
            )
        if self.idr is not None:
            if self.gop is None:
                raise InvalidEncoderConfig(
                    "encoderConfig.idr needs encoderConfig.gop (idr must be a multiple of gop)"
                )
            if self.idr % self.gop:
                raise InvalidEncoderConfig(
                    f"encoderConfig.idr ({self.idr}) must be a multiple of "
                    f"encoderConfig.gop ({self.gop})"
                )
        if self.profile is not None and self.profile not in PROFILES[self.codec]:
            legal = ", ".join(f"{k} ({v})" for k, v in PROFILES[self.codec].items())
            raise InvalidEncoderConfig(
                f"encoderConfig.profile {self.profile} is not a valid {self.codec.label} "
                f"profile; use one of {legal}"
            )
        if self.level is not None and self.level not in LEVELS[self.codec]:
            raise InvalidEncoderConfig(
                f"encoderConfig.level {self.level} is not a valid {self.codec.label} level; "
                f"use one of {_fmt_levels(self.codec)} (41 means level 4.1)"
            )
        if self.res is not None and self.fps_num is not None:
            self.validate_combination(self.res[0], self.res[1], self.output_fps(Fraction(30)))
        elif self.level is not None and self.bitrate is not None and rc in _BITRATE_RC:
            self._check_level_bitrate()
        return self

    def validate_combination(self, width: int, height: int, fps: Fraction) -> None:
        """Check what depends on the output size and rate (known once the template is): that
        the frame fits the chosen level. ``width``, ``height`` and ``fps`` are the *output*
        values (see :meth:`output_size` and :meth:`output_fps`).

        Raises:
            InvalidEncoderConfig: the size, rate or bitrate exceed the level's limits, or the
                size is odd or out of range.
        """
        for side, name in ((width, "width"), (height, "height")):
            if not MIN_SIDE <= side <= MAX_SIDE or side % 2:
                raise InvalidEncoderConfig(
                    f"output {name} {side} must be even and between {MIN_SIDE} and {MAX_SIDE}"
                )
        if not MIN_FPS <= fps <= MAX_FPS:
            raise InvalidEncoderConfig(
                f"output frame rate {float(fps):.3f} must lie between {MIN_FPS} and {MAX_FPS}"
            )
        if self.level is None:
            return
        limits = LEVELS[self.codec][self.level]
        name = f"{self.codec.label} level {level_name(self.level)}"
        # H.264 limits count whole 16×16 macroblocks.
        h264 = self.codec == Codec.H264
        pic = _mb_round(width) * _mb_round(height) if h264 else width * height
        if pic > limits.max_picture or max(width, height) > limits.max_side:
            raise InvalidEncoderConfig(
                f"{width}x{height} is too large for {name} (at most {limits.max_picture} "
                f"luma samples per frame); choose a higher encoderConfig.level or a smaller res"
            )
        if pic * fps > limits.max_rate:
            raise InvalidEncoderConfig(
                f"{width}x{height} at {float(fps):.3f} fps exceeds {name} "
                f"({limits.max_rate} luma samples per second); choose a higher "
                f"encoderConfig.level, a smaller res or a lower frame rate"
            )
        self._check_level_bitrate()

    def _check_level_bitrate(self) -> None:
        if self.level is None or self.rate_control not in _BITRATE_RC or self.bitrate is None:
            return
        limits = LEVELS[self.codec][self.level]
        allowed = limits.max_bitrate
        if self.codec == Codec.H264 and self.profile in (None, 100):
            allowed = allowed * 5 // 4  # High profile's cpbBrVclFactor
        cbr = self.rate_control == RateControl.CBR
        peak = self.bitrate if cbr else int(self.bitrate * VBR_PEAK)
        if peak > allowed:
            raise InvalidEncoderConfig(
                f"encoderConfig.bitrate {self.bitrate} (peak {peak} b/s) exceeds "
                f"{self.codec.label} level {level_name(self.level)}'s {allowed} b/s"
            )

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None) -> EncoderConfig:
        """Validate a raw ``encoderConfig`` object (camelCase keys).

        Raises:
            InvalidEncoderConfig: with one message naming every offending field.
        """
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise InvalidEncoderConfig(describe_validation_error(exc)) from None

    # --- derived values -----------------------------------------------------------------

    @property
    def rate_control(self) -> RateControl:
        """The effective ``rc``: as given; else CQP when ``qp`` is given, CRF when ``crf`` is,
        VBR when a bitrate is, and CRF otherwise."""
        if self.rc is not None:
            return self.rc
        if self.qp is not None:
            return RateControl.CQP
        if self.crf is not None:
            return RateControl.CRF
        return RateControl.VBR if self.bitrate else RateControl.CRF

    @property
    def effective_qp(self) -> int:
        return 23 if self.qp is None else self.qp

    @property
    def effective_crf(self) -> int:
        return 23 if self.crf is None else self.crf

    def effective_bitrate(self, width: int, height: int, fps: Fraction) -> int:
        """The target bitrate in bits per second: ``bitrate`` when given, else about 0.1 bit
        per pixel per frame clamped to 0.5–50 Mb/s. Also used to estimate output size."""
        if self.bitrate:
            return self.bitrate
        guess = int(width * height * float(fps) * _DEFAULT_BPP)
        return max(_DEFAULT_MIN_BITRATE, min(_DEFAULT_MAX_BITRATE, guess))

    def effective_gop(self, fps: Fraction) -> int:
        """Frames between keyframes: ``gop`` when given, else two seconds' worth."""
        if self.gop is not None:
            return self.gop
        return max(1, round(fps * DEFAULT_GOP_SECONDS))

    def output_size(self, template_w: int, template_h: int) -> tuple[int, int]:
        """``res`` when given, else the template's size."""
        if self.res is not None:
            return self.res
        return template_w, template_h

    def output_fps(self, template_fps: Fraction) -> Fraction:
        """``fpsNum/fpsDenum`` when given, else the template's rate."""
        if self.fps_num is not None:
            return Fraction(self.fps_num, self.fps_denum or 1)
        return template_fps


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the ``encoderConfig`` field, for a person to act on."""
    parts: list[str] = []
    for err in exc.errors():
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, InvalidEncoderConfig):
            parts.append(str(cause))
            continue
        where = ".".join(str(p) for p in err["loc"])
        field = f"encoderConfig.{where}" if where else "encoderConfig"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)


def resolve_frame_range(
    f_start: int | None, f_end: int | None, total_frames: int
) -> tuple[int, int]:
    """The half-open template frame range ``[start, end)`` to render.

    ``f_start`` defaults to 0 and ``f_end`` to ``total_frames``.

    Raises:
        InvalidFrameRange: ``start >= end``, or either bound lies outside ``[0, total]``;
            its ``problem``, ``start``, ``end`` and ``total`` let a caller reword it.
    """
    start = 0 if f_start is None else f_start
    end = total_frames if f_end is None else f_end
    where = {"start": start, "end": end, "total": total_frames}
    if start < 0 or start > total_frames:
        raise InvalidFrameRange(
            f"start frame {start} lies outside the template's frames 0..{total_frames}",
            problem="start",
            **where,
        )
    if end < 0 or end > total_frames:
        raise InvalidFrameRange(
            f"end frame {end} lies outside the template's frames 0..{total_frames} "
            f"(the range is half-open: end frame {total_frames} renders to the last frame)",
            problem="end",
            **where,
        )
    if start >= end:
        raise InvalidFrameRange(
            f"the start frame ({start}) must be less than the end frame ({end}); the range "
            f"[start, end) is half-open",
            problem="order",
            **where,
        )
    return start, end
