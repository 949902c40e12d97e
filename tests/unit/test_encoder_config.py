"""EncoderConfig validation and derived values, and frame ranges (no media)."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from renderer.encode.config import (
    Codec,
    EncoderConfig,
    RateControl,
    level_name,
    probe_level,
    resolve_frame_range,
)
from renderer.errors import InvalidEncoderConfig, InvalidFrameRange


def test_module_stays_free_of_the_media_stack() -> None:
    # The API validates requests with this module and must not load numpy or PyAV.
    code = (
        "import sys, renderer.encode.config; "
        "print(sorted(m for m in ('av', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == "[]"


def test_camel_case_wire_names_and_defaults() -> None:
    config = EncoderConfig.model_validate(
        {"bitrate": 5_000_000, "fpsNum": 30000, "fpsDenum": 1001, "res": [1280, 720]}
    )
    assert config.fps_num == 30000 and config.fps_denum == 1001
    assert config.res == (1280, 720)
    assert config.codec is Codec.H264 and config.preset == 3
    assert config.rate_control is RateControl.VBR
    dumped = config.model_dump(by_alias=True, exclude_none=True)
    assert dumped["fpsNum"] == 30000 and dumped["fpsDenum"] == 1001


def test_config_is_frozen() -> None:
    config = EncoderConfig()
    with pytest.raises(ValidationError):
        config.bitrate = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, RateControl.CRF),
        ({"bitrate": 1_000_000}, RateControl.VBR),
        ({"bitrate": 0}, RateControl.CRF),
        ({"qp": 20}, RateControl.CQP),
        ({"crf": 20}, RateControl.CRF),
        ({"rc": 0, "bitrate": 1_000_000}, RateControl.CBR),
        ({"rc": 2, "bitrate": 1_000_000}, RateControl.CQP),
    ],
)
def test_effective_rate_control(fields: dict[str, Any], expected: RateControl) -> None:
    assert EncoderConfig.parse(fields).rate_control is expected


def test_codec_and_rc_are_enums_sent_as_their_numbers() -> None:
    config = EncoderConfig.parse({"codec": 1, "rc": 3})
    assert config.codec is Codec.H265 and config.rc is RateControl.CRF
    assert config.codec.label == "H.265"
    assert config.model_dump(mode="json")["codec"] == 1
    assert (
        config.model_dump_json(by_alias=True, exclude_none=True) == '{"codec":1,"preset":3,"rc":3}'
    )
    # Validated as the literal numbers: no lax string coercion, the same message as before.
    for field, bad, legal in (("codec", "1", "0, 1 or 2"), ("rc", 4, "0, 1, 2 or 3")):
        with pytest.raises(InvalidEncoderConfig) as info:
            EncoderConfig.parse({field: bad})
        assert str(info.value) == f"encoderConfig.{field}: Input should be {legal}"
    schema = EncoderConfig.model_json_schema(by_alias=True)
    assert "$defs" not in schema
    assert schema["properties"]["codec"] == {
        "default": 0,
        "enum": [0, 1, 2],
        "title": "Codec",
        "type": "integer",
    }


def test_quantiser_defaults() -> None:
    assert EncoderConfig(rc=2).effective_qp == 23
    assert EncoderConfig().effective_crf == 23
    assert EncoderConfig(rc=2, qp=30).effective_qp == 30


def test_default_bitrate_scales_with_pixels_and_is_clamped() -> None:
    config = EncoderConfig()
    hd = config.effective_bitrate(1920, 1080, Fraction(30))
    assert hd == pytest.approx(1920 * 1080 * 30 * 0.1, rel=0.01)
    assert config.effective_bitrate(64, 36, Fraction(30)) == 500_000
    assert config.effective_bitrate(8192, 8192, Fraction(240)) == 50_000_000
    assert EncoderConfig(bitrate=123_456).effective_bitrate(1920, 1080, Fraction(30)) == 123_456


def test_default_gop_is_two_seconds() -> None:
    assert EncoderConfig().effective_gop(Fraction(30000, 1001)) == 60
    assert EncoderConfig(gop=12).effective_gop(Fraction(30)) == 12


def test_output_size_and_rate() -> None:
    assert EncoderConfig().output_size(1920, 1080) == (1920, 1080)
    assert EncoderConfig(res=(640, 360)).output_size(1920, 1080) == (640, 360)
    assert EncoderConfig().output_fps(Fraction(25)) == Fraction(25)
    assert EncoderConfig(fps_num=24).output_fps(Fraction(25)) == Fraction(24)
    assert EncoderConfig(fps_num=30000, fps_denum=1001).output_fps(Fraction(25)) == Fraction(
        30000, 1001
    )


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"gop": 30, "idr": 50}, "idr (50) must be a multiple of encoderConfig.gop (30)"),
        ({"idr": 60}, "idr needs encoderConfig.gop"),
        ({"codec": 0, "profile": 1}, "profile 1 is not a valid H.264 profile"),
        ({"codec": 1, "profile": 100}, "profile 100 is not a valid H.265 profile"),
        ({"codec": 2, "profile": 66}, "profile 66 is not a valid AV1 profile"),
        ({"codec": 0, "level": 45}, "level 45 is not a valid H.264 level"),
        ({"codec": 1, "level": 9}, "level 9 is not a valid H.265 level"),
        ({"codec": 2, "level": 10}, "level 10 is not a valid AV1 level"),
        ({"res": [1921, 1080]}, "must be even"),
        ({"res": [8, 8]}, "between 16 and 8192"),
        ({"res": [16000, 1080]}, "between 16 and 8192"),
        ({"fpsDenum": 1001}, "fpsDenum is given without fpsNum"),
        ({"fpsNum": 1000}, "must lie between 1 and 240"),
        ({"rc": 0, "bitrate": 0}, "too low for CBR"),
        ({"rc": 1, "bitrate": 5}, "too low for VBR"),
        ({"rc": 3, "qp": 20}, "qp only applies to rc 2"),
        ({"rc": 2, "crf": 20}, "crf only applies to rc 3"),
        ({"bitrate": -1}, "encoderConfig.bitrate"),
        ({"codec": 3}, "encoderConfig.codec"),
        ({"preset": 6}, "encoderConfig.preset"),
        ({"rc": 4}, "encoderConfig.rc"),
        ({"qp": 52}, "encoderConfig.qp"),
        ({"gop": 0}, "encoderConfig.gop"),
        ({"unknown": 1}, "encoderConfig.unknown"),
        ({"res": [3840, 2160], "fpsNum": 30, "level": 41}, "too large for H.264 level 4.1"),
        ({"res": [1920, 1080], "fpsNum": 60, "level": 41}, "exceeds H.264 level 4.1"),
        ({"rc": 0, "bitrate": 30_000_000, "level": 31}, "exceeds H.264 level 3.1"),
    ],
)
def test_invalid_values_and_combinations_are_refused(fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidEncoderConfig) as caught:
        EncoderConfig.parse(fields)
    assert needle in str(caught.value)
    # Through pydantic directly (as FastAPI does) it is an ordinary validation error.
    with pytest.raises(ValidationError):
        EncoderConfig.model_validate(fields)


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(InvalidEncoderConfig) as caught:
        EncoderConfig.parse({"codec": 9, "preset": -1})
    message = str(caught.value)
    assert "encoderConfig.codec" in message and "encoderConfig.preset" in message


@pytest.mark.parametrize(
    ("fields", "size", "fps"),
    [
        ({"level": 41}, (1920, 1080), Fraction(30)),
        ({"level": 42}, (1920, 1080), Fraction(60)),
        ({"level": 51}, (3840, 2160), Fraction(30)),
        ({"codec": 1, "level": 41}, (1920, 1080), Fraction(60)),
        ({"codec": 2, "level": 40}, (1920, 1080), Fraction(30)),
        ({"level": 9}, (176, 144), Fraction(15)),
    ],
)
def test_size_and_rate_that_fit_the_level_pass(
    fields: dict[str, Any], size: tuple[int, int], fps: Fraction
) -> None:
    EncoderConfig.parse(fields).validate_combination(size[0], size[1], fps)


@pytest.mark.parametrize(
    ("fields", "size", "fps", "needle"),
    [
        ({"level": 41}, (3840, 2160), Fraction(30), "too large"),
        ({"level": 41}, (1920, 1080), Fraction(60), "luma samples per second"),
        ({"codec": 1, "level": 31}, (1920, 1080), Fraction(30), "too large"),
        ({"codec": 2, "level": 30}, (1920, 1080), Fraction(30), "too large"),
        ({}, (1921, 1080), Fraction(30), "even"),
        ({}, (1920, 1080), Fraction(500), "frame rate"),
    ],
)
def test_size_and_rate_beyond_the_level_are_refused(
    fields: dict[str, Any], size: tuple[int, int], fps: Fraction, needle: str
) -> None:
    config = EncoderConfig.parse(fields)
    with pytest.raises(InvalidEncoderConfig, match=needle):
        config.validate_combination(size[0], size[1], fps)


def test_level_numbering_helpers() -> None:
    assert level_name(41) == "4.1" and level_name(9) == "1b"
    assert probe_level(Codec.H264, 41) == 41
    assert probe_level(Codec.H265, 123) == 41  # HEVC general_level_idc = 30 × level
    assert probe_level(Codec.AV1, 9) == 41  # AV1 seq_level_idx: (4 - 2) × 4 + 1


# --- frame ranges ----------------------------------------------------------------------------


def test_frame_range_defaults_to_the_whole_composition() -> None:
    assert resolve_frame_range(None, None, 300) == (0, 300)
    assert resolve_frame_range(10, None, 300) == (10, 300)
    assert resolve_frame_range(None, 20, 300) == (0, 20)


def test_frame_range_is_half_open() -> None:
    assert resolve_frame_range(299, 300, 300) == (299, 300)
    assert resolve_frame_range(0, 1, 300) == (0, 1)


@pytest.mark.parametrize(
    ("start", "end", "needle"),
    [
        (10, 10, "less than"),
        (20, 10, "less than"),
        (-1, 10, "start frame -1"),
        (0, 301, "end frame 301"),
        (301, None, "start frame 301"),
        (300, None, "less than"),
    ],
)
def test_bad_frame_ranges_are_refused(start: int, end: int | None, needle: str) -> None:
    with pytest.raises(InvalidFrameRange, match=needle):
        resolve_frame_range(start, end, 300)


@pytest.mark.parametrize(
    ("start", "end", "api"),
    [
        (-1, 10, "jobInfo.fStart -1 lies outside the template's frames 0..300"),
        (
            0,
            301,
            "jobInfo.fEnd 301 lies outside the template's frames 0..300 (the range is "
            "half-open: fEnd 300 renders to the last frame)",
        ),
        (
            20,
            10,
            "jobInfo.fStart (20) must be less than jobInfo.fEnd (10); the range [fStart, fEnd) "
            "is half-open",
        ),
    ],
)
def test_frame_range_refusals_are_worded_by_each_side(start: int, end: int, api: str) -> None:
    """The renderer speaks of start and end frames; the API words the same refusal as the
    request field (``jobInfo.fStart``), byte for byte what it always answered."""
    import pickle

    from jobs.renders.submission import frame_range_message

    with pytest.raises(InvalidFrameRange) as info:
        resolve_frame_range(start, end, 300)
    assert "jobInfo" not in str(info.value) and "fStart" not in str(info.value)
    assert frame_range_message(info.value) == api
    # Renders run in child processes: the details cross back through pickle.
    assert frame_range_message(pickle.loads(pickle.dumps(info.value))) == api
