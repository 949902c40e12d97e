"""The template manifest (SPEC §3, ``GET /template/{id}``): what a client needs to build a
customisation form, as plain JSON-able data with camelCase keys."""

from __future__ import annotations

from typing import Any

from renderer.media.orientation import media_display
from renderer.media.probe import lottie_texts, read_lottie
from renderer.template.customize import asset_kind_for_layer, customizable_properties
from renderer.template.model import (
    ImageLayer,
    LoadedTemplate,
    LottieLayer,
    SolidLayer,
    TextLayer,
    VideoLayer,
)
from renderer.text.fonts import resolve_fallbacks, resolve_font, text_chain, uncovered
from renderer.text.layout import clean_text

MAX_LISTED = 20  # uncovered characters named in one warning


def build_manifest(loaded: LoadedTemplate) -> dict[str, Any]:
    """Describe ``loaded``: size, fps ``[num, den]``, frame count, duration, background, its
    layers (id, type, in/out frames, box in composition pixels, the customisable properties,
    the asset kind that may replace its media, current values of customisable properties;
    for a lottie layer ``defaults.lottieText`` maps each text layer name in its animation to
    its text, and ``warnings`` lists what Velocity ignores in it: expressions, sound; for a
    text layer ``warnings`` names the characters of its text that no font of its fallback
    chain has, which would draw as boxes; for image and video layers ``media``: the file's
    displayed ``width`` and ``height`` with the EXIF orientation or display matrix applied,
    the clockwise ``rotation`` and whether it is ``mirrored``) and audio tracks (id or null,
    src, replaceable) and font names.

    Raises:
        UnsupportedMedia: a lottie, image or video file is no longer readable (the loader
            checked it).

    Returns:
        A dict that ``json.dumps`` accepts as is.
    """
    template = loaded.template
    fps = template.fps_fraction
    layers: list[dict[str, Any]] = []
    for layer in template.layers:
        box = layer.box
        defaults: dict[str, Any] = {"visible": layer.visible}
        extra: dict[str, Any] = {}
        if isinstance(layer, TextLayer):
            defaults.update(text=layer.text, color=layer.color)
            extra["warnings"] = text_warnings(loaded, layer)
        elif isinstance(layer, SolidLayer):
            defaults["color"] = layer.color
        elif isinstance(layer, LottieLayer):
            # The keys a lottieText customisation may set, with the texts they replace.
            doc, info = read_lottie(loaded.path(layer.src), layer.src, loaded.root)
            defaults["lottieText"] = lottie_texts(doc)
            extra["warnings"] = list(info.warnings)
        if isinstance(layer, (ImageLayer, VideoLayer)):
            extra["media"] = media_display(loaded.path(layer.src), layer.type)
        layers.append(
            {
                "id": layer.id,
                "type": layer.type,
                "in": layer.in_,
                "out": layer.out if layer.out is not None else template.frames,
                "box": {
                    "x": box.x if box else 0,
                    "y": box.y if box else 0,
                    "w": box.w if box else template.width,
                    "h": box.h if box else template.height,
                },
                "customizable": customizable_properties(layer.type),
                "assetKind": asset_kind_for_layer(layer),
                "defaults": defaults,
                **extra,
            }
        )
    return {
        "name": template.name,
        "width": template.width,
        "height": template.height,
        "fps": [fps.numerator, fps.denominator],
        "frames": template.frames,
        "durationSeconds": float(template.frames / fps),
        "background": template.background,
        "layers": layers,
        "audio": [
            {
                "id": track.id,
                "src": track.src,
                "replaceable": track.replaceable,
            }
            for track in template.audio
        ],
        "fonts": list(template.fonts),
    }


def describe_uncovered(characters: str) -> str:
    """A person-readable list of characters, each with its code point."""
    return ", ".join(f"'{ch}' (U+{ord(ch):04X})" for ch in characters)


def text_warnings(loaded: LoadedTemplate, layer: TextLayer) -> list[str]:
    """Warnings about a text layer's default text: characters that no font of its chain
    (its font, the template's other fonts, the installed fallbacks) can draw."""
    fallbacks = resolve_fallbacks(loaded, layer.font)
    chain = text_chain(resolve_font(loaded, layer.font), fallbacks)
    missing = uncovered(clean_text(layer.text, layer.uppercase), chain)
    if not missing:
        return []
    return [
        f"no available font has {describe_uncovered(''.join(missing[:MAX_LISTED]))}"
        + (f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else "")
        + "; they would be drawn as empty boxes"
    ]
