"""Layer sources: solid, image (fit, radius, GIF, TGA), video frame selection, text wrapper."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from renderer.compose.layers import SourceContext, open_source, registered_types
from renderer.compose.layers.image import ImageSource
from renderer.compose.layers.solid import SolidSource
from renderer.compose.layers.video import VideoSource
from renderer.errors import UnsupportedMedia
from renderer.template.model import LoadedTemplate, Template, TextLayer

# --- helpers -----------------------------------------------------------------------------


def grey_level(k: int) -> int:
    """Luma code of source frame k in the test videos."""
    return 20 + 15 * k


def make_grey_video(path: Path, frames: int, fps: int, w: int = 32, h: int = 16) -> Path:
    """A lossless H.264 clip whose frame k is flat grey at luma ``grey_level(k)``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"qp": "0", "preset": "ultrafast"}
        )
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # Written straight in YUV and tagged, so the planes can be handed over untouched.
        ctx = stream.codec_context
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # BT.709
        ctx.color_range = 1  # limited
        for k in range(frames):
            frame = av.VideoFrame(w, h, "yuv420p")
            for i, value in enumerate((grey_level(k), 128, 128)):
                plane = frame.planes[i]
                np.frombuffer(plane, np.uint8)[:] = value
            frame.pts = k
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def frame_index(rgba: np.ndarray) -> int:
    """Which source frame a decoded RGBA image came from (via its grey level)."""
    r = float(rgba[..., 0].mean())
    luma = r * 219 / 255 + 16
    return round((luma - 20) / 15)


def ctx(tmp_path: Path, w: int, h: int, scale: float = 1.0) -> SourceContext:
    tpl = Template(width=64, height=36, frames=10)
    return SourceContext(LoadedTemplate(tmp_path, tpl), w, h, scale, 64, 36)


# --- solid -------------------------------------------------------------------------------


def test_solid_is_premultiplied_and_static() -> None:
    src = SolidSource("#ff804080", 3, 2)
    px = src.frame(0.0)
    assert px is not None and px.shape == (2, 3, 4)
    assert px[1, 2].tolist() == [128, 64, 32, 128]
    assert src.static and src.frame(5.0) is px


def test_registry_knows_the_builtin_types() -> None:
    assert {"solid", "image", "video", "text"} <= set(registered_types())


# --- images ------------------------------------------------------------------------------


def _halves_png(path: Path, w: int = 40, h: int = 20) -> Path:
    img = np.zeros((h, w, 4), np.uint8)
    img[:, : w // 2] = (255, 0, 0, 255)
    img[:, w // 2 :] = (0, 0, 255, 255)
    Image.fromarray(img).save(path)
    return path


@pytest.mark.parametrize(
    ("fit", "size"),
    [("cover", (20, 20)), ("contain", (20, 10)), ("fill", (20, 20)), ("none", (20, 20))],
)
def test_image_fit_modes(tmp_path: Path, fit: str, size: tuple[int, int]) -> None:
    src = ImageSource(_halves_png(tmp_path / "a.png"), 20, 20, fit=fit)
    px = src.frame(0.0)
    assert px is not None
    assert (src.width, src.height) == size == (px.shape[1], px.shape[0])
    assert px[5, 1].tolist() == [255, 0, 0, 255]
    assert px[5, -2].tolist() == [0, 0, 255, 255]


def test_image_fit_none_keeps_natural_size_in_a_big_box(tmp_path: Path) -> None:
    src = ImageSource(_halves_png(tmp_path / "a.png", 8, 4), 20, 20, fit="none")
    assert (src.width, src.height) == (8, 4)
    scaled = ImageSource(_halves_png(tmp_path / "b.png", 8, 4), 20, 20, fit="none", scale=2.0)
    assert (scaled.width, scaled.height) == (16, 8)


def test_image_is_premultiplied(tmp_path: Path) -> None:
    path = tmp_path / "semi.png"
    Image.new("RGBA", (4, 4), (200, 100, 50, 128)).save(path)
    px = ImageSource(path, 4, 4).frame(0.0)
    assert px is not None
    assert np.abs(px[2, 2].astype(int) - [100, 50, 25, 128]).max() <= 1


def test_rounded_corners_are_transparent_and_anti_aliased(tmp_path: Path) -> None:
    path = tmp_path / "white.png"
    Image.new("RGB", (32, 32), (255, 255, 255)).save(path)
    px = ImageSource(path, 32, 32, radius=10).frame(0.0)
    assert px is not None
    alpha = px[..., 3]
    assert alpha[0, 0] == 0 and alpha[31, 31] == 0 and alpha[0, 31] == 0 and alpha[31, 0] == 0
    assert alpha[16, 16] == 255 and alpha[0, 16] == 255 and alpha[16, 0] == 255
    assert 0 < alpha[1, 4] < 255  # partial coverage on the arc
    assert (px[..., 0] <= alpha).all()  # still premultiplied


def test_animated_gif_frames_follow_their_durations_and_loop(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (4, 4), c) for c in colours]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[100, 200, 300], loop=0)
    src = ImageSource(path, 4, 4)
    assert not src.static and src.frame_count == 3

    def colour(t: float) -> list[int]:
        px = src.frame(t)
        assert px is not None
        return px[0, 0, :3].tolist()

    assert colour(0.05) == [255, 0, 0]
    assert colour(0.15) == [0, 255, 0]
    assert colour(0.29) == [0, 255, 0]
    assert colour(0.35) == [0, 0, 255]
    assert colour(0.65) == [255, 0, 0]  # 0.6 s loop


def test_gif_frame_starting_exactly_at_an_output_frame_time_is_shown_then(
    tmp_path: Path,
) -> None:
    # At 25 fps, output frame 35 is t = 1.4 s: 14 GIF frames of 100 ms in, so frame 14 % 3.
    # 1.4 % 0.3 in floating point is 0.19999..., which used to select the previous frame.
    path = tmp_path / "anim.gif"
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (4, 4), c) for c in colours]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    src = ImageSource(path, 4, 4)
    for k in range(60):
        t = k / 25
        px = src.frame(t)
        assert px is not None
        expected = colours[(k * 40 // 100) % 3]
        assert px[0, 0, :3].tolist() == list(expected), f"output frame {k} (t={t})"


def test_tga_and_jpeg_load(tmp_path: Path) -> None:
    Image.new("RGBA", (6, 4), (10, 20, 30, 255)).save(tmp_path / "a.tga")
    px = ImageSource(tmp_path / "a.tga", 6, 4).frame(0.0)
    assert px is not None and px[1, 1].tolist() == [10, 20, 30, 255]
    Image.new("RGB", (6, 4), (200, 40, 40)).save(tmp_path / "a.jpg", quality=95)
    jp = ImageSource(tmp_path / "a.jpg", 6, 4).frame(0.0)
    assert jp is not None and np.abs(jp[1, 1, :3].astype(int) - [200, 40, 40]).max() <= 4


def test_bad_image_is_unsupported_media(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(UnsupportedMedia, match="layer 'logo'"):
        ImageSource(bad, 4, 4, layer_id="logo")


# --- video -------------------------------------------------------------------------------


@pytest.fixture
def clip12(tmp_path: Path) -> Path:
    """12 frames at 12 fps: one second, frame k at k/12 s."""
    return make_grey_video(tmp_path / "clip.mp4", 12, 12)


def _index_at(src: VideoSource, t: float) -> int:
    px = src.frame(t)
    assert px is not None
    return frame_index(px)


def test_video_frames_by_presentation_time(clip12: Path) -> None:
    src = VideoSource(clip12, 32, 16)
    try:
        assert src.duration_s == pytest.approx(1.0)
        assert [_index_at(src, k / 12) for k in range(12)] == list(range(12))
        assert _index_at(src, 0.999) == 11
        assert _index_at(src, 5.0) == 11  # held on the last frame
        assert _index_at(src, 0.0) == 0  # backwards: seeks
    finally:
        src.close()


def test_video_trim_and_loop(clip12: Path) -> None:
    src = VideoSource(clip12, 32, 16, trim=0.5)
    assert _index_at(src, 0.0) == 6
    assert _index_at(src, 0.25) == 9
    assert _index_at(src, 2.0) == 11
    src.close()
    looped = VideoSource(clip12, 32, 16, loop=True)
    assert [_index_at(looped, t) for t in (0.25, 1.0, 1.25, 2.5)] == [3, 0, 3, 6]
    looped.close()
    both = VideoSource(clip12, 32, 16, trim=0.5, loop=True)
    assert [_index_at(both, t) for t in (0.0, 0.1, 0.5, 0.6)] == [6, 7, 6, 7]
    both.close()


def test_video_other_output_rate_lines_up(clip12: Path) -> None:
    src = VideoSource(clip12, 32, 16)
    got = [_index_at(src, i / 30) for i in range(30)]
    src.close()
    assert got == [(i * 12) // 30 for i in range(30)]


class _CountingVideo(VideoSource):
    restarts = 0

    def _restart(self, target_s: float) -> None:
        self.restarts += 1
        super()._restart(target_s)


def test_sequential_access_never_seeks(clip12: Path) -> None:
    src = _CountingVideo(clip12, 32, 16)
    for i in range(25):
        src.frame(i / 25)
    assert src.restarts == 1
    src.close()
    held = _CountingVideo(clip12, 32, 16)
    got = [frame_index(held.frame(i / 12)) for i in range(12 * 8)]  # type: ignore[arg-type]
    assert got[:12] == list(range(12)) and set(got[12:]) == {11}
    assert held.restarts == 1  # holding the last frame for 7 s never seeks
    held.close()
    looped = _CountingVideo(clip12, 32, 16, loop=True)
    for i in range(36):
        looped.frame(i / 12)
    assert looped.restarts == 3  # the first open and one per wrap
    looped.close()


def test_scheduled_decoding_matches_random_access(clip12: Path) -> None:
    times = [i / 24 for i in range(40)]
    ahead = VideoSource(clip12, 32, 16, loop=True)
    ahead.schedule(times, "rgba")
    got = [_index_at(ahead, t) for t in times]
    ahead.close()
    direct = VideoSource(clip12, 32, 16, loop=True)
    assert got == [_index_at(direct, t) for t in times]
    direct.close()
    assert ahead.timings()["decode"] > 0


def test_schedule_mismatch_is_an_error(clip12: Path) -> None:
    src = VideoSource(clip12, 32, 16)
    src.schedule([0.0, 0.5], "rgba")
    src.frame(0.0)
    with pytest.raises(RuntimeError, match="schedule"):
        src.frame(0.25)
    src.close()


def test_video_yuv_fast_path_and_fit(clip12: Path) -> None:
    src = VideoSource(clip12, 32, 16, canvas=(32, 16))
    assert src.yuv_capable
    y, u, v = src.frame_yuv(3 / 12) or (None, None, None)
    assert y is not None and u is not None and v is not None
    assert y.shape == (16, 32) and u.shape == (8, 16)
    assert int(y[4, 4]) == grey_level(3) and int(u[2, 2]) == 128
    src.close()
    cover = VideoSource(clip12, 16, 16, fit="cover", canvas=(64, 36))
    assert (cover.width, cover.height) == (16, 16) and not cover.yuv_capable
    px = cover.frame(0.0)
    assert px is not None and px.shape == (16, 16, 4) and (px[..., 3] == 255).all()
    cover.close()


def test_video_missing_file_is_unsupported_media(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMedia, match="layer 'bg'"):
        VideoSource(tmp_path / "none.mp4", 4, 4, layer_id="bg")


# --- text wrapper ------------------------------------------------------------------------


def test_text_source_renders_once_into_its_box(tmp_path: Path) -> None:
    layer = TextLayer(type="text", id="t", text="Hi", size=20)
    src = open_source(layer, ctx(tmp_path, 60, 30))
    px = src.frame(0.0)
    assert src.static and px is not None and px.shape == (30, 60, 4)
    assert px[..., 3].max() == 255
    fit = src.text_fit  # type: ignore[attr-defined]
    assert fit.layer_id == "t" and fit.used_size == pytest.approx(20)
    doubled = open_source(layer, ctx(tmp_path, 120, 60, scale=2.0))
    big = doubled.frame(0.0)
    assert big is not None
    # Laid out at twice the size, not resampled: about four times the ink.
    ratio = (big[..., 3] > 128).sum() / max(1, (px[..., 3] > 128).sum())
    assert 3.0 < ratio < 5.0
    assert doubled.text_fit.used_size == pytest.approx(20)  # type: ignore[attr-defined]


def test_untagged_sd_video_is_read_as_bt601(tmp_path: Path) -> None:
    # PyAV (like swscale) converts RGB with BT.601 and tags nothing; below 720 lines players
    # read untagged video as BT.601, so a saturated red must stay red, not shift hue.
    path = tmp_path / "red.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        rgb = np.zeros((16, 32, 3), np.uint8)
        rgb[..., 0] = 200
        for k in range(2):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = k
            frame.time_base = Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    src = VideoSource(path, 32, 16)
    try:
        px = src.frame(0.0)
    finally:
        src.close()
    assert px is not None
    r, g, b, a = (int(c) for c in px[8, 16])
    assert a == 255
    assert abs(r - 200) <= 3 and g <= 3 and b <= 3
