"""What a render attempt works from: the stored request resolved into local paths and
validated values (``resolve_inputs``), the one call that renders them (``render_video``),
and where an attempt writes its output before it is moved into place.

Shared by the whole-render attempt (``jobs.renders.single``), the chunks and the join of a
long render (``jobs.renders.chunked``) and the sweeper (``jobs.renders.sweeper``).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.db import Database
from jobs.failures import JobFailure
from jobs.library import store as library
from jobs.models.render import Render
from jobs.renders import queries
from jobs.renders.attempt import Control
from jobs.settings import Settings
from jobs.storage import Storage


def tmp_output(storage: Storage, render_id: uuid.UUID, attempt: int) -> Path:
    """Where attempt ``attempt`` of a render is written before it is moved into place."""
    storage.ensure()
    return storage.root / "tmp" / f"render-{render_id}-{attempt}.mp4"


def remove_partial_outputs(storage: Storage, render_id: uuid.UUID, attempt: int) -> None:
    """Delete what attempt ``attempt`` of ``render_id`` left under ``tmp/`` (a dead worker's
    output and the renderer's scratch folder beside it)."""
    tmp_dir = storage.root / "tmp"
    if not tmp_dir.is_dir():
        return
    name = f"render-{render_id}-{attempt}.mp4"
    (tmp_dir / name).unlink(missing_ok=True)
    for path in tmp_dir.glob(f".{name}.*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@dataclass
class Inputs:
    """What the renderer needs for one render, as local paths and validated values."""

    template_dir: Path
    customizations: list[Any]
    encoder: Any
    frames: tuple[int, int]
    extra_audio: Path | None
    # Render in spans (renderer.segments), and where the span cache lives (None: this render
    # opted out with "cache": false, so its static spans are rendered afresh).
    segments: bool = False
    cache_dir: Path | None = None
    cache_bytes: int = 0


async def resolve_inputs(
    db: Database, storage: Storage, render: Render, settings: Settings | None = None
) -> Inputs:
    """Turn the stored request into local paths and validated values for the renderer."""
    from renderer.encode.config import EncoderConfig
    from renderer.template.model import CustomizationEntry

    async with db.session() as s:
        template = await queries.template_to_render(s, render)
        if template is None or template.extracted_dir is None:
            raise JobFailure("template_deleted", "The template was deleted before rendering")
        entries: list[Any] = []
        for index, raw in enumerate(render.request.get("customizationMap", [])):
            data = dict(raw)
            asset_id = data.get("assetId")
            if asset_id:
                try:
                    asset = await library.customization_asset(
                        s, render.user_id, asset_id, f"customizationMap[{index}]"
                    )
                except library.InvalidAssetReference:
                    # Checked at submission: the asset went away since.
                    raise JobFailure(
                        "invalid_customization",
                        f"customizationMap[{index}]: asset {asset_id} was deleted before rendering",
                    ) from None
                data["src"] = str(storage.abs(asset.path))
            entries.append(CustomizationEntry.model_validate(data))
        extra_audio: Path | None = None
        if render.audio_id is not None:
            audio = await queries.audio_to_render(s, render)
            if audio is None:
                raise JobFailure("invalid_audio", "The audio was deleted before rendering")
            extra_audio = storage.abs(audio.path)
        template_dir = storage.abs(template.extracted_dir)
    job = render.request.get("jobInfo", {})
    return Inputs(
        template_dir=template_dir,
        customizations=entries,
        encoder=EncoderConfig.parse(render.request.get("encoderConfig")),
        frames=(int(job["fStart"]), int(job["fEnd"])),
        extra_audio=extra_audio,
        **_segment_options(settings, storage, render),
    )


def _segment_options(settings: Settings | None, storage: Storage, render: Render) -> dict[str, Any]:
    """How the span cache applies to ``render``: off entirely with
    ``VELOCITY_SEGMENT_CACHE_MB=0``; a request's ``"cache": false`` keeps the spans (so the
    output is the same) but neither reads nor writes the cache."""
    if settings is None or settings.segment_cache_mb <= 0:
        return {}
    root = settings.segment_cache_dir or storage.root / "segment-cache"
    wanted = render.request.get("cache", True) is not False
    return {
        "segments": True,
        "cache_dir": root if wanted else None,
        "cache_bytes": settings.segment_cache_mb * 1024 * 1024,
    }


def render_video(inputs: Inputs, loaded: Any, out: Path, **options: Any) -> Any:
    """Render through the span cache when the inputs ask for it, else in one piece."""
    if inputs.segments:
        from renderer.segments import SpanCache, render_segmented

        cache = SpanCache(inputs.cache_dir, inputs.cache_bytes) if inputs.cache_dir else None
        return render_segmented(
            loaded, out, cache=cache, customizations=inputs.customizations, **options
        )
    from renderer.render import render

    return render(loaded, out, customizations=inputs.customizations, **options)


Work = Callable[[Inputs, Path, str, Control], Any]


__all__ = [
    "Inputs",
    "Work",
    "remove_partial_outputs",
    "render_video",
    "resolve_inputs",
    "tmp_output",
]
