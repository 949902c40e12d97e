"""Render only what changed: static spans and a cache of their encoded video.

A template is rendered thousands of times with different texts, photos and colours, but the
customised layers are usually on screen for part of the video only. :func:`plan_spans` splits
a render into GOP-aligned spans of output frames and marks those in which no customised layer
can be drawn ("static"): their pixels depend on the template, the output plan and the encoder
alone, never on the render's inputs. :func:`render_segmented` renders each span as a closed
piece (as chunked renders do), keeps static ones in a :class:`SpanCache` keyed by everything
that decides their bytes, and joins the pieces by packet copy before mixing the sound once.

The segmentation is a function of the template, the customisation map and the encoder config
only, never of the cache's state: a render whose spans all come from the cache is byte for
byte the render that filled it. The cache only decides whether a static span is encoded
again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from renderer.errors import RenderCancelled
from renderer.report import RenderReport, TextFit
from renderer.template.model import CustomizationEntry, LoadedTemplate

if TYPE_CHECKING:
    from renderer.encode.config import EncoderConfig
    from renderer.plan import OutputPlan
    from renderer.render import EncoderPreference

# Bumped whenever the bytes a span renders to could change for the same key: the renderer's
# compositing or the way spans are encoded.
CACHE_FORMAT = "velocity-span-v1"


@dataclass(frozen=True)
class Span:
    """A run of whole GOPs: template frames ``[f_start, f_end)``, output frames
    ``[k_start, k_end)``. ``static``: no customised layer is drawn in any of its frames."""

    f_start: int
    f_end: int
    k_start: int
    k_end: int
    static: bool

    @property
    def frames(self) -> int:
        return self.k_end - self.k_start


def segmentable(config: EncoderConfig, preference: EncoderPreference) -> bool:
    """Whether renders with ``config`` may be split into spans and joined by packet copy.

    CBR is excluded: its HRD buffer model (and filler) spans the whole stream, so pieces
    encoded apart do not join into a conforming CBR stream. Hardware encoders are excluded
    because their output is not reproducible across runs and GPUs: ``auto`` segments only
    where NVENC cannot open, so the software encoder is what would run anyway.
    """
    import av

    from renderer.encode.config import RateControl
    from renderer.encode.encoder import NVENC_ENCODERS, nvenc_opens

    if config.rate_control == RateControl.CBR or preference == "nvenc":
        return False
    if preference == "software":
        return True
    name = NVENC_ENCODERS[config.codec]
    return not (name in av.codecs_available and nvenc_opens(name))


def _dynamic_layers(
    loaded: LoadedTemplate, customizations: Sequence[CustomizationEntry]
) -> list[str]:
    ids = {entry.layer_id for entry in customizations}
    return [layer.id for layer in loaded.template.layers if layer.id in ids]


def _drawn(loaded: LoadedTemplate, layer_id: str, t_s: float) -> bool:
    """Could the layer put pixels on screen at composition time ``t_s``? Conservative:
    ``visible`` is ignored (a customisation may switch it either way), and only an opacity
    of exactly 0 (as the compositor clamps it) counts as not drawn."""
    from renderer.compose.timeline import value_at

    tpl = loaded.template
    layer = tpl.layer(layer_id)
    assert layer is not None
    t_frames = t_s * float(tpl.fps_fraction)
    out_frame = tpl.frames if layer.out is None else layer.out
    # The compositor's own test (renderer.compose.compositor.Compositor.draws).
    if not layer.in_ <= t_frames + 1e-9 < out_frame:
        return False
    return min(1.0, max(0.0, value_at(layer.transform.opacity, t_frames)[0])) > 0.0


def plan_spans(
    loaded: LoadedTemplate, customizations: Sequence[CustomizationEntry], plan: OutputPlan
) -> list[Span]:
    """Split ``plan``'s range into GOP-aligned spans, static where no customised layer is
    drawn in any of the span's output frames.

    Adjacent GOPs of the same kind are merged, so a render alternates static and dynamic
    spans. Keyframes stay where a single render puts them (every ``gop`` output frames from
    the range's first frame), because every span starts on a GOP boundary.
    """
    dynamic = _dynamic_layers(loaded, customizations)
    spans: list[Span] = []
    for part in plan.chunks(plan.gop):
        static = not any(_drawn(loaded, lid, t) for lid in dynamic for t in part.times())
        span = Span(part.f_start, part.f_end, part.k_start, part.k_end, static)
        if spans and spans[-1].static == static:
            spans[-1] = replace(spans[-1], f_end=span.f_end, k_end=span.k_end)
        else:
            spans.append(span)
    return spans


# --- the template's content hash ------------------------------------------------------------

_DIGESTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
_DIGESTS_LOCK = threading.Lock()


def template_digest(root: Path) -> str:
    """SHA-256 over every file of the template folder (relative path and content).

    Memoised per process on the files' sizes and modification times, so a template used by
    many renders is read once.
    """
    root = Path(root)
    files: list[tuple[str, int, int]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        st = path.stat()
        files.append((path.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    key = (str(root.resolve()), tuple(files))
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    for rel, size, _ in files:
        digest.update(f"{rel}\0{size}\0".encode())
        _hash_into(digest, root / rel)
    value = digest.hexdigest()
    with _DIGESTS_LOCK:
        if len(_DIGESTS) > 256:
            _DIGESTS.clear()
        _DIGESTS[key] = value
    return value


def _encoder_build(name: str) -> str:
    import av

    versions = {k: list(v) for k, v in sorted(av.library_versions.items())}
    return json.dumps({"encoder": name, "pyav": av.__version__, "libs": versions})


def span_key(loaded: LoadedTemplate, plan: OutputPlan, encoder_name: str, span: Span) -> str:
    """The cache key of a static span of ``plan``: a hash of everything that decides its
    bytes."""
    material = {
        "format": CACHE_FORMAT,
        "template": template_digest(loaded.root),
        "encoder": plan.encoder.model_dump(mode="json"),
        "build": _encoder_build(encoder_name),
        "size": list(plan.size),
        "fps": _rates(plan),
        "gop": plan.gop,
        "span": [span.f_start, span.f_end, span.k_start, span.k_end],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _rates(plan: OutputPlan) -> list[int]:
    fps_t, fps_out = plan.template_fps, plan.fps
    return [fps_t.numerator, fps_t.denominator, fps_out.numerator, fps_out.denominator]


# --- the cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int


class SpanCache:
    """Encoded static spans on disk, content-addressed, bounded in size (LRU).

    Entry ``<key>.mp4`` sits beside ``<key>.json`` (its size and SHA-256). Both are written
    under temporary names and renamed into place, the JSON last, so a reader never sees a
    partial entry; a reader re-hashes the file and ignores (and removes) an entry that does
    not match. Reads hard-link the entry into the caller's folder, so eviction by another
    process cannot pull a span from under a render that is joining it. Access refreshes the
    entry's modification time, which orders eviction.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max(0, int(max_bytes))
        self.root.mkdir(parents=True, exist_ok=True)

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.mp4", folder / f"{key}.json"

    def fetch(self, key: str, dest: Path) -> bool:
        """Place the entry ``key`` at ``dest`` (a hard link, or a copy across devices);
        False when it is missing, partial or corrupt (a bad entry is removed)."""
        video, meta = self._paths(key)
        try:
            info = json.loads(meta.read_text())
            size, sha = int(info["size"]), str(info["sha256"])
            os.link(video, dest)
        except FileNotFoundError:
            return False
        except OSError:
            try:
                shutil.copyfile(video, dest)
            except OSError:
                return False
        except (ValueError, KeyError, TypeError):
            self._drop(key)
            return False
        if dest.stat().st_size != size or _sha256(dest) != sha:
            dest.unlink(missing_ok=True)
            self._drop(key)
            return False
        now = time.time()
        with contextlib.suppress(OSError):
            os.utime(meta, (now, now))
        return True

    def store(self, key: str, source: Path) -> None:
        """Add ``source`` (left in place) as entry ``key``, then evict down to the limit."""
        if self.max_bytes <= 0:
            return
        size = source.stat().st_size
        if size > self.max_bytes:
            return
        video, meta = self._paths(key)
        video.parent.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex
        tmp_video = video.with_name(f".{video.name}.{tag}.tmp")
        tmp_meta = meta.with_name(f".{meta.name}.{tag}.tmp")
        try:
            shutil.copyfile(source, tmp_video)
            tmp_meta.write_text(json.dumps({"size": size, "sha256": _sha256(tmp_video)}))
            os.replace(tmp_video, video)
            os.replace(tmp_meta, meta)
        finally:
            tmp_video.unlink(missing_ok=True)
            tmp_meta.unlink(missing_ok=True)
        self.evict()

    def _drop(self, key: str) -> None:
        for path in self._paths(key):
            path.unlink(missing_ok=True)

    def _entries(self) -> list[tuple[float, int, str]]:
        out: list[tuple[float, int, str]] = []
        for meta in self.root.glob("*/*.json"):
            video = meta.with_suffix(".mp4")
            try:
                atime = meta.stat().st_mtime
                size = video.stat().st_size
            except FileNotFoundError:
                continue
            out.append((atime, size, meta.stem))
        return out

    def stats(self) -> CacheStats:
        entries = self._entries()
        return CacheStats(len(entries), sum(size for _, size, _ in entries))

    def evict(self) -> None:
        """Remove the least recently used entries until the cache fits its limit, and
        temporaries left by writers that died more than an hour ago."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        for _, size, key in entries:
            if total <= self.max_bytes:
                break
            self._drop(key)
            total -= size
        stale = time.time() - 3600
        for tmp in self.root.glob("*/.*.tmp"):
            with contextlib.suppress(OSError):
                if tmp.stat().st_mtime < stale:
                    tmp.unlink()


def _hash_into(digest: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_into(digest, path)
    return digest.hexdigest()


# --- rendering in spans ---------------------------------------------------------------------


def render_segmented(
    template: LoadedTemplate,
    out: Path,
    *,
    cache: SpanCache | None,
    customizations: Sequence[CustomizationEntry] = (),
    encoder: EncoderConfig | None = None,
    frames: tuple[int, int] | None = None,
    extra_audio: Path | None = None,
    encoder_preference: EncoderPreference = "software",
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    audio: bool = True,
    max_output_bytes: int | None = None,
) -> RenderReport:
    """``renderer.render.render`` with static spans taken from (and added to) ``cache``.

    Renders in one piece, exactly as ``render`` does, when the config cannot be segmented
    (:func:`segmentable`) or no span is static. Otherwise each span is rendered on its own
    (static ones fetched from the cache when present), the pieces are joined by packet copy
    and the sound of the whole range is mixed once. ``cache=None`` renders the same spans
    without reading or writing any cache, so the output does not depend on the cache.

    The report's ``cached_frames`` counts the output frames that came from the cache and
    ``spans`` lists every span as ``(k_start, k_end, static, cached)``.
    """
    from renderer.plan import OutputPlan
    from renderer.render import render
    from renderer.template.customize import apply_customizations, validate_customizations

    wall0 = time.perf_counter()
    plan = OutputPlan.of(template.template, encoder, frames)
    entries = validate_customizations(template.template, customizations)
    spans = plan_spans(template, entries, plan)
    if not segmentable(plan.encoder, encoder_preference) or not any(s.static for s in spans):
        return render(
            template,
            out,
            customizations=customizations,
            plan=plan,
            extra_audio=extra_audio,
            encoder_preference=encoder_preference,
            on_progress=on_progress,
            should_cancel=should_cancel,
            audio=audio,
            max_output_bytes=max_output_bytes,
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    # Customised once (replacement media are probed here), not again for every span and
    # the mix: the pieces draw ``loaded``; cache keys still come from ``template`` and
    # ``entries``.
    loaded = apply_customizations(template, entries) if entries else template
    job = _SpanJob(template, loaded, plan, cache, tmp, should_cancel, max_output_bytes)
    try:
        job.render_spans(spans, on_progress)
        has_audio = job.write_output(out, entries, extra_audio, audio)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return job.report(out, has_audio, time.perf_counter() - wall0)


class _SpanJob:
    """The pieces of one segmented render: each span rendered (or fetched from the cache)
    into the scratch folder ``tmp``, then joined."""

    def __init__(  # noqa: PLR0917 - the render's own arguments, passed through
        self,
        template: LoadedTemplate,
        loaded: LoadedTemplate,
        plan: OutputPlan,
        cache: SpanCache | None,
        tmp: Path,
        should_cancel: Callable[[], bool] | None,
        max_output_bytes: int | None,
    ) -> None:
        from renderer.encode.encoder import SOFTWARE_ENCODERS

        # ``template`` as stored (the cache keys), ``loaded`` with the customisations applied.
        self.template, self.loaded, self.plan, self.cache = template, loaded, plan, cache
        self.tmp = tmp
        self.should_cancel, self.max_output_bytes = should_cancel, max_output_bytes
        self.name = SOFTWARE_ENCODERS[plan.encoder.codec]
        self.done = 0
        self.used = 0  # bytes of the pieces so far, against max_output_bytes
        self.pieces: list[Path] = []
        self.records: list[tuple[int, int, bool, bool]] = []
        self.reports: list[RenderReport] = []
        self.frames = 0
        self.audio_s = self.mux_s = 0.0

    def _stop_if_cancelled(self, total: int) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise RenderCancelled(f"render cancelled after {self.done} of {total} frames")

    def _left(self) -> int | None:
        return None if self.max_output_bytes is None else self.max_output_bytes - self.used

    def render_spans(
        self, spans: Sequence[Span], on_progress: Callable[[int, int], None] | None
    ) -> None:
        """Fill the scratch folder with one piece per span, in order."""
        from renderer.render import check_output_size

        total = sum(s.frames for s in spans)
        for index, span in enumerate(spans):
            self._stop_if_cancelled(total)
            piece = self.tmp / f"span-{index:04d}.mp4"
            key = span_key(self.template, self.plan, self.name, span) if span.static else None
            if key is not None and self.cache is not None and self.cache.fetch(key, piece):
                self.records.append((span.k_start, span.k_end, True, True))
                check_output_size(piece, self._left(), span.frames)
            else:
                self._render_span(span, piece, key, total, on_progress)
            self.pieces.append(piece)
            self.used += piece.stat().st_size
            self.done += span.frames
            if on_progress is not None:
                on_progress(self.done, total)
        self._stop_if_cancelled(total)

    def _render_span(
        self,
        span: Span,
        piece: Path,
        key: str | None,
        total: int,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        from renderer.render import render

        def progress(n: int, _total: int, base: int = self.done) -> None:
            if on_progress is not None:
                on_progress(base + n, total)

        report = render(
            self.loaded,
            piece,
            plan=self.plan.part(span.f_start, span.f_end),
            encoder_preference="software",
            on_progress=progress,
            should_cancel=self.should_cancel,
            audio=False,
            max_output_bytes=self._left(),
        )
        self.reports.append(report)
        if key is not None and self.cache is not None and report.encoder == self.name:
            self.cache.store(key, piece)
        self.records.append((span.k_start, span.k_end, span.static, False))

    def write_output(
        self,
        out: Path,
        entries: Sequence[CustomizationEntry],
        extra_audio: Path | None,
        audio: bool,
    ) -> bool:
        """Join the pieces, mix and mux the sound when ``audio``, and move the result to
        ``out``; returns whether it has an audio stream."""
        from renderer.encode.concat import concat_chunks
        from renderer.render import check_output_size

        t0 = time.perf_counter()
        joined = self.tmp / "video.mp4"
        self.frames = concat_chunks(self.pieces, joined)
        self.mux_s = time.perf_counter() - t0
        if not audio:
            check_output_size(joined, self.max_output_bytes, self.frames)
            os.replace(joined, out)
            return False
        from renderer.encode.mux import mux

        t0 = time.perf_counter()
        sound = self.tmp / "audio.m4a"
        has_audio = _mixed_audio(self, sound, entries, extra_audio)
        self.audio_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        muxed = self.tmp / "muxed.mp4"
        mux(joined, sound if has_audio else None, muxed)
        check_output_size(muxed, self.max_output_bytes, self.frames)
        os.replace(muxed, out)
        self.mux_s += time.perf_counter() - t0
        return has_audio

    def report(self, out: Path, has_audio: bool, wall_s: float) -> RenderReport:
        return _merged_report(
            self.reports,
            out=out,
            name=self.name,
            size=self.plan.size,
            fps=self.plan.fps,
            frames=self.frames,
            wall_s=wall_s,
            audio_s=self.audio_s,
            mux_s=self.mux_s,
            has_audio=has_audio,
            records=self.records,
        )


def _mixed_audio(
    job: _SpanJob,
    dest: Path,
    customizations: Sequence[CustomizationEntry],
    extra_audio: Path | None,
) -> bool:
    """The range's mixed sound at ``dest``, from the cache when the same sound was mixed
    before: the key covers the template, the range and rate, and the content of every input
    that can change the sound (replacement clips of video layers, the extra track)."""
    from renderer.encode.concat import mix_audio

    key = None
    if job.cache is not None:
        key = _audio_key(job.template, customizations, job.plan, extra_audio)
        if job.cache.fetch(key, dest):
            return True
    has_audio = mix_audio(
        job.loaded, dest, job.plan, extra_audio=extra_audio, should_cancel=job.should_cancel
    )
    if has_audio and job.cache is not None and key is not None:
        job.cache.store(key, dest)
    return has_audio


def _audio_key(
    template: LoadedTemplate,
    customizations: Sequence[CustomizationEntry],
    plan: OutputPlan,
    extra_audio: Path | None,
) -> str:
    video_layers = {layer.id for layer in template.template.layers if layer.type == "video"}
    sounding = []
    for entry in customizations:
        if entry.layer_id in video_layers:
            src = entry.src
            content = _sha256(template.path(src)) if src else None
            sounding.append([entry.model_dump(mode="json"), content])
    material = {
        "format": CACHE_FORMAT + "-audio",
        "template": template_digest(template.root),
        "frames": list(plan.frame_range),
        "fps": _rates(plan),
        "sounding": sounding,
        "extra": _sha256(extra_audio) if extra_audio is not None else None,
        "build": _encoder_build("aac"),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _merged_report(
    reports: Iterable[RenderReport],
    *,
    out: Path,
    name: str,
    size: tuple[int, int],
    fps: Fraction,
    frames: int,
    wall_s: float,
    audio_s: float,
    mux_s: float,
    has_audio: bool,
    records: list[tuple[int, int, bool, bool]],
) -> RenderReport:
    from renderer.report import STAGES

    stages = dict.fromkeys(STAGES, 0.0)
    fits: dict[str, TextFit] = {}
    for report in reports:
        for stage, seconds in report.stages_s.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
        for fit in report.text_fits:
            fits.setdefault(fit.layer_id, fit)
    stages["audio"] += audio_s
    stages["mux"] += mux_s
    return RenderReport(
        frames=frames,
        width=size[0],
        height=size[1],
        fps=fps,
        encoder=name,
        hardware=False,
        wall_s=wall_s,
        output_bytes=out.stat().st_size,
        stages_s=stages,
        text_fits=list(fits.values()),
        has_audio=has_audio,
        cached_frames=sum(k1 - k0 for k0, k1, _, cached in records if cached),
        spans=records,
    )
