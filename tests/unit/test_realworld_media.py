"""Phone- and editor-shaped media (fixtures/realworld_media.py) come out upright and true.

Orientation is checked by where the marker's coloured corners land; colours against the
ffmpeg command-line tool's decode of the same file (an independent reader: its autorotation,
its PNG/JPEG/GIF decoders and its swscale with accurate rounding), within 2 levels.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from renderer.compose.layers.image import ImageSource
from renderer.compose.layers.video import VideoSource
from renderer.encode.config import EncoderConfig
from renderer.errors import InvalidTemplate
from renderer.media.probe import probe_image, probe_video
from renderer.render import render, render_frame_png
from renderer.template.loader import MAX_MISSING_LISTED, load_template, load_template_from_dict
from renderer.template.manifest import build_manifest
from renderer.template.model import CustomizationEntry

ROOT = Path(__file__).resolve().parents[2]
LOSSLESS = EncoderConfig(rc=2, qp=0, preset=5)
TOLERANCE = 2  # levels, against ffmpeg's reading
# JPEG blocks bleed into the marker's corner blocks; the corner colours are far apart.
MARKER_TOLERANCE = 24
SWS_FLAGS = "accurate_rnd+full_chroma_int+bilinear"


def _load_corpus_module() -> ModuleType:
    existing = sys.modules.get("realworld_media")
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location(
        "realworld_media", ROOT / "fixtures" / "realworld_media.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["realworld_media"] = module
    spec.loader.exec_module(module)
    return module


RW = _load_corpus_module()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made: dict[str, Path] = RW.make_corpus(tmp_path_factory.mktemp("realworld"))
    return made


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("the ffmpeg command is needed as the reference decoder")
        pytest.skip("the ffmpeg command (the reference decoder) is not installed")
    return found


def ffmpeg_frames(ffmpeg: str, path: Path, size: tuple[int, int], fmt: str = "rgba") -> np.ndarray:
    """Every frame ffmpeg decodes from ``path`` (autorotated), frames x rows x columns x
    channels; ``size`` is the (width, height) ffmpeg is expected to show it at."""
    raw = subprocess.run(
        [ffmpeg, "-v", "error", "-sws_flags", SWS_FLAGS, "-i", str(path),
         "-f", "rawvideo", "-pix_fmt", fmt, "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    channels = 4 if fmt == "rgba" else 3
    width, height = size
    assert len(raw) % (width * height * channels) == 0, "ffmpeg shows it at another size"
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, channels).astype(int)


def premultiplied(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4].astype(float)
    return np.concatenate([np.rint(rgba[..., :3] * alpha / 255), alpha], -1).astype(int)


def corners(img: np.ndarray) -> dict[str, np.ndarray]:
    """The colour at the middle of each corner block of the marker (a sixth in from each
    side: the blocks are a third of each side)."""
    h, w = img.shape[:2]
    ys, xs = (h // 6, h - 1 - h // 6), (w // 6, w - 1 - w // 6)
    return {
        "top_left": img[ys[0], xs[0], :3],
        "top_right": img[ys[0], xs[1], :3],
        "bottom_left": img[ys[1], xs[0], :3],
        "bottom_right": img[ys[1], xs[1], :3],
    }


def assert_upright(img: np.ndarray, expected: dict[str, tuple[int, int, int]]) -> None:
    got = corners(img)
    for corner, colour in expected.items():
        diff = np.abs(got[corner].astype(int) - np.array(colour)).max()
        assert diff <= MARKER_TOLERANCE, f"{corner}: {got[corner].tolist()} is not {colour}"


# --- EXIF orientation ----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_show_the_marker_upright(
    corpus: dict[str, Path], orientation: int
) -> None:
    path = corpus[f"exif{orientation}"]
    info = probe_image(path)
    assert (info.width, info.height, info.orientation) == (48, 32, orientation)
    # A square box: contain keeps the displayed (landscape) shape, so a turn shows.
    src = ImageSource(path, 96, 96, fit="contain")
    frame = src.frame(0.0)
    assert frame is not None
    assert frame.shape[:2] == (64, 96)
    assert_upright(frame, RW.CORNERS)


def test_exif_orientation_in_template_preview_and_uploaded_asset(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "tpl"
    (root / "images").mkdir(parents=True)
    shutil.copy(corpus["exif6"], root / "images/photo.jpg")
    (root / "data.json").write_text(
        json.dumps({
            "version": 1, "width": 48, "height": 32, "fps": 10, "frames": 2,
            "layers": [{"id": "photo", "type": "image", "src": "images/photo.jpg"}],
        })
    )  # fmt: skip
    loaded = load_template(root)
    media = build_manifest(loaded)["layers"][0]["media"]
    assert media == {"width": 48, "height": 32, "rotation": 90, "mirrored": False}
    png = tmp_path / "p.png"
    render_frame_png(loaded, [], 0, png)
    assert_upright(np.asarray(Image.open(png).convert("RGB")), RW.CORNERS)
    # An uploaded asset replacing the layer (jobs resolves it to a local path) turns too.
    render_frame_png(
        loaded, [CustomizationEntry(layer_id="photo", src=str(corpus["exif8"]))], 0, png
    )
    assert_upright(np.asarray(Image.open(png).convert("RGB")), RW.CORNERS)


# --- video display matrix --------------------------------------------------------------------

_R, _G, _B, _Y = RW.RED, RW.GREEN, RW.BLUE, RW.YELLOW
# Where the stored marker's corners end up once the display matrix is applied.


def _at(tl: Any, tr: Any, bl: Any, br: Any) -> dict[str, Any]:
    return {"top_left": tl, "top_right": tr, "bottom_left": bl, "bottom_right": br}


_TURNED = {
    "rot0": ((48, 32), 1, _at(_R, _G, _B, _Y)),
    "rot90": ((32, 48), 8, _at(_G, _Y, _R, _B)),  # 90° counter-clockwise
    "rot180": ((48, 32), 3, _at(_Y, _B, _G, _R)),
    "rot-90": ((32, 48), 6, _at(_B, _R, _Y, _G)),  # 90° clockwise
    "rot90_mirrored": ((32, 48), 7, _at(_Y, _G, _B, _R)),
    "rot-90_hevc": ((32, 48), 6, _at(_B, _R, _Y, _G)),
}


@pytest.mark.parametrize("name", list(_TURNED))
def test_display_matrix_turns_video_like_ffmpeg(
    corpus: dict[str, Path], ffmpeg: str, name: str
) -> None:
    size, orientation, expected = _TURNED[name]
    path = corpus[name]
    info = probe_video(path)
    assert ((info.width, info.height), info.orientation) == (size, orientation)
    reference = ffmpeg_frames(ffmpeg, path, size)[0]  # ffmpeg turns it the same way
    src = VideoSource(path, *size, fit="fill")
    try:
        frame = src.frame(0.0)
    finally:
        src.close()
    assert frame is not None and frame.shape[1::-1] == size
    assert_upright(frame, expected)
    for corner, colour in corners(frame).items():
        assert np.abs(colour.astype(int) - corners(reference)[corner]).max() <= TOLERANCE


def test_portrait_phone_video_fills_a_portrait_render_and_preview(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    """A full-frame rotated video goes through the encoder's YUV path (its planes are turned)
    and the preview's RGB path; both show it upright."""
    root = tmp_path / "tpl"
    (root / "videos").mkdir(parents=True)
    shutil.copy(corpus["rot-90"], root / "videos/phone.mp4")
    (root / "data.json").write_text(
        json.dumps({
            "version": 1, "width": 32, "height": 48, "fps": 10, "frames": 2,
            "layers": [{"id": "clip", "type": "video", "src": "videos/phone.mp4"}],
        })
    )  # fmt: skip
    loaded = load_template(root)
    _, _, expected = _TURNED["rot-90"]
    media = build_manifest(loaded)["layers"][0]["media"]
    assert media == {"width": 32, "height": 48, "rotation": 90, "mirrored": False}
    out = tmp_path / "out.mp4"
    render(loaded, out, encoder=LOSSLESS)
    with av.open(str(out)) as container:
        decoded = next(container.decode(video=0))
        rgb = decoded.reformat(
            format="rgb24", src_colorspace="ITU709", src_color_range="MPEG"
        ).to_ndarray()
    assert rgb.shape[:2] == (48, 32)
    assert_upright(rgb, expected)
    png = tmp_path / "p.png"
    render_frame_png(loaded, [], 0, png)
    assert_upright(np.asarray(Image.open(png).convert("RGB")), expected)


# --- pixel formats -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["grey16", "grey8", "greyalpha8", "greyalpha16", "rgb16", "rgba16", "palette",
     "cmyk_adobe", "cmyk_plain"],
)  # fmt: skip
def test_image_pixel_formats_match_ffmpeg(corpus: dict[str, Path], ffmpeg: str, name: str) -> None:
    path = corpus[name]
    with Image.open(path) as img:
        width, height = img.size
    reference = premultiplied(ffmpeg_frames(ffmpeg, path, (width, height))[0])
    src = ImageSource(path, width, height, fit="fill")
    ours = src.frame(0.0)
    assert ours is not None and ours.shape[:2] == (height, width)
    centres = RW.patch_centres(width // RW.PATCH)
    diffs = [int(np.abs(ours[c].astype(int) - reference[c]).max()) for c in centres]
    assert max(diffs) <= TOLERANCE, (name, diffs, [ours[c].tolist() for c in centres])


def test_sixteen_bit_grey_is_not_white(corpus: dict[str, Path]) -> None:
    src = ImageSource(corpus["grey16"], 128, 16, fit="fill")
    frame = src.frame(0.0)
    assert frame is not None
    levels = [int(frame[c][0]) for c in RW.patch_centres(8)]
    assert levels == [round(v * 255 / 65535) for v in RW.grey_patches()]


_DISPOSED_TOP_LEFT = {  # frame 3's top-left after frame 2 (green there) is disposed
    "gif_dispose1": (30, 200, 40, 255),  # kept
    "gif_dispose2": (0, 0, 0, 0),  # cleared to the (transparent) background
    "gif_dispose3": (230, 30, 30, 255),  # restored to frame 1's red
    "gif_dispose1_opaque": (30, 200, 40, 255),
    "gif_dispose2_opaque": (0, 0, 0, 255),  # the background colour, palette entry 0
    "gif_dispose3_opaque": (230, 30, 30, 255),
}


@pytest.mark.parametrize("name", list(_DISPOSED_TOP_LEFT))
def test_gif_disposal_modes_match_ffmpeg(corpus: dict[str, Path], ffmpeg: str, name: str) -> None:
    reference = premultiplied(ffmpeg_frames(ffmpeg, corpus[name], (16, 16)))
    src = ImageSource(corpus[name], 16, 16, fit="fill")
    assert src.frame_count == len(reference) == 3
    for index, ends_s in enumerate((0.05, 0.15, 0.25)):  # 100 ms a frame
        ours = src.frame(ends_s)
        assert ours is not None
        for y, x in ((2, 2), (2, 12), (14, 14)):
            assert np.abs(ours[y, x].astype(int) - reference[index][y, x]).max() <= TOLERANCE
    last = src.frame(0.25)
    assert last is not None
    assert last[2, 2].tolist() == list(_DISPOSED_TOP_LEFT[name])


# --- video range and matrix ------------------------------------------------------------------

_RANGE_VIDEOS = [f"{r}_{m}" for r in ("limited", "full") for m in ("bt601", "bt709", "untagged")]


@pytest.mark.parametrize("name", _RANGE_VIDEOS)
def test_video_range_and_matrix_match_ffmpeg(
    corpus: dict[str, Path], ffmpeg: str, name: str, tmp_path: Path
) -> None:
    path = corpus[name]
    height, width = RW.patch_image().shape[:2]
    reference = ffmpeg_frames(ffmpeg, path, (width, height), "rgb24")[0]
    centres = RW.patch_centres()

    def worst(img: Any) -> int:
        return max(
            int(np.abs(np.asarray(img)[c][:3].astype(int) - reference[c]).max()) for c in centres
        )

    src = VideoSource(path, width, height, fit="fill")
    try:
        rgba = src.frame(0.0)
    finally:
        src.close()
    assert worst(rgba) <= TOLERANCE  # the RGB path (previews, layers over others)
    # The YUV path: a full-frame video goes to the encoder as planes, converted to BT.709.
    root = tmp_path / "tpl"
    (root / "videos").mkdir(parents=True)
    shutil.copy(path, root / "videos/v.mp4")
    (root / "data.json").write_text(
        json.dumps({
            "version": 1, "width": width, "height": height, "fps": 10, "frames": 1,
            "layers": [{"id": "v", "type": "video", "src": "videos/v.mp4"}],
        })
    )  # fmt: skip
    out = tmp_path / "out.mp4"
    render(load_template(root), out, encoder=LOSSLESS)
    assert worst(ffmpeg_frames(ffmpeg, out, (width, height), "rgb24")[0]) <= TOLERANCE


# --- missing files -------------------------------------------------------------------------


def _with_refs(count: int) -> dict[str, Any]:
    return {
        "version": 1, "width": 32, "height": 32, "fps": 10, "frames": 2,
        "fonts": {"Brand": "fonts/brand.ttf"},
        "layers": [
            {"id": f"img{i}", "type": "image", "src": f"images/{i}.png"} for i in range(count)
        ] + [{"id": "again", "type": "image", "src": "images/0.png"}],
        "audio": [{"id": "music", "src": "audio/m.mp3"}],
    }  # fmt: skip


def test_every_missing_file_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(InvalidTemplate) as err:
        load_template_from_dict(_with_refs(2), tmp_path)
    assert str(err.value) == (
        "Missing 4 files: fonts/brand.ttf referenced by font 'Brand'; "
        "images/0.png referenced by layer 'img0' and layer 'again'; "
        "images/1.png referenced by layer 'img1'; "
        "audio/m.mp3 referenced by audio track 'music'"
    )


def test_many_missing_files_are_capped_and_counted(tmp_path: Path) -> None:
    with pytest.raises(InvalidTemplate) as err:
        load_template_from_dict(_with_refs(30), tmp_path)
    message = str(err.value)
    assert message.startswith("Missing 32 files: fonts/brand.ttf referenced by font 'Brand'; ")
    assert message.count(" referenced by ") == MAX_MISSING_LISTED
    assert message.endswith("; and 12 more missing files")


def test_one_missing_file_keeps_the_short_reason(tmp_path: Path) -> None:
    data = _with_refs(1)
    data["fonts"], data["audio"] = {}, []
    with pytest.raises(InvalidTemplate, match=r"^Missing images/0\.png referenced by layer "
                       r"'img0' and layer 'again'$"):  # fmt: skip
        load_template_from_dict(data, tmp_path)


# --- angles that are not a multiple of 90° ---------------------------------------------------


def _matrix(degrees_ccw: float, hflip: bool = False) -> bytes:
    """A display matrix as FFmpeg writes it (av_display_rotation_set, then an optional
    mirror), for a turn of ``degrees_ccw`` counter-clockwise."""
    import math
    import struct

    rad = math.radians(degrees_ccw)  # PyAV passes -degrees to av_display_rotation_set
    c, s = math.cos(rad), math.sin(rad)
    m = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]
    if hflip:
        m[0], m[3] = -m[0], -m[3]
    fixed = [round(v * (1 << 16)) for v in m[:8]] + [1 << 30]
    return struct.pack("<9i", *fixed)


@pytest.mark.parametrize(
    ("degrees", "hflip", "orientation"),
    [(0, False, 1), (90, False, 8), (180, False, 3), (-90, False, 6), (270, False, 6),
     (90, True, 7), (-90, True, 5), (0, True, 2), (180, True, 4),
     # Not a multiple of 90°: snapped to the nearest one, a 45° tie to the smaller turn.
     (30, False, 1), (44, False, 1), (45, False, 1), (46, False, 8), (100, False, 8),
     (150, False, 3), (-120, False, 6)],
)  # fmt: skip
def test_display_matrix_angles_snap_to_quarter_turns(
    degrees: float, hflip: bool, orientation: int
) -> None:
    from renderer.media.orientation import from_display_matrix

    assert from_display_matrix(_matrix(degrees, hflip)) == orientation


def test_malformed_orientation_data_reads_as_upright() -> None:
    from renderer.media.orientation import from_display_matrix, from_rotate_tag

    assert from_display_matrix(b"\x00" * 36) == 1
    assert from_display_matrix(b"\x01\x02") == 1
    assert [from_rotate_tag(v) for v in ("90", "180", "270", "-90", "x", "nan", "1e999")] == [
        6, 3, 8, 8, 1, 1, 1,
    ]  # fmt: skip


def test_broken_exif_orientation_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "odd.jpg"
    exif = Image.Exif()
    exif[0x0112] = 9  # out of range
    Image.fromarray(RW.marker_image()).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    assert probe_image(path).orientation == 1
    frame = ImageSource(path, 48, 32, fit="fill").frame(0.0)
    assert frame is not None
    assert_upright(frame, RW.CORNERS)
