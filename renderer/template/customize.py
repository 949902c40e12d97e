"""Customisations (``customizationMap``, SPEC §5): validation and application.

Validation needs only the template model, so the API can refuse a bad entry at submission
(400 naming the entry) instead of failing a render later. Application returns new frozen
objects; the loaded template it starts from is never changed.

``lottieText`` keys name text layers inside a lottie layer's JSON file, which the template
model does not see. ``validate_customizations`` checks them when the caller passes the text
layer names (``read_lottie_text_names(loaded)`` at ingest; the manifest carries them as each
lottie layer's ``defaults.lottieText``); ``apply_customizations`` always checks them against
the file itself.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from renderer.errors import InvalidCustomization, UnsupportedMedia
from renderer.media.probe import probe_image, probe_video, read_lottie
from renderer.template.model import (
    CustomizationEntry,
    ImageLayer,
    Layer,
    LoadedTemplate,
    LottieLayer,
    Template,
    VideoLayer,
)

# Attribute names (snake_case) each layer type takes; messages use the camelCase wire names.
ALLOWED: dict[str, tuple[str, ...]] = {
    "solid": ("color", "visible"),
    "image": ("asset_id", "src", "visible"),
    "video": ("asset_id", "src", "visible"),
    "text": ("text", "color", "visible"),
    "lottie": ("visible", "lottie_text"),
}
_SETTABLE = ("text", "color", "asset_id", "src", "visible", "lottie_text")
_MAX_IDS_LISTED = 10


def wire_name(field: str) -> str:
    """The camelCase name of a ``CustomizationEntry`` attribute (``asset_id`` -> ``assetId``)."""
    info = CustomizationEntry.model_fields[field]
    return info.alias or field


def customizable_properties(layer_type: str, *, public: bool = True) -> list[str]:
    """camelCase properties a layer type accepts. ``public`` leaves out ``src``, which only
    the service sets after resolving an ``assetId``."""
    names = ALLOWED.get(layer_type, ())
    return [wire_name(n) for n in names if not (public and n == "src")]


def asset_kind_for_layer(layer: Layer) -> Literal["image", "video"] | None:
    """Which kind of uploaded asset may replace ``layer``'s media, or None if none may."""
    if isinstance(layer, ImageLayer):
        return "image"
    if isinstance(layer, VideoLayer):
        return "video"
    return None


def _entry_label(index: int, layer_id: object) -> str:
    if isinstance(layer_id, str):
        return f"customizationMap[{index}] (layerId '{layer_id}')"
    return f"customizationMap[{index}]"


def _parse_entry(index: int, raw: CustomizationEntry | Mapping[str, Any]) -> CustomizationEntry:
    if isinstance(raw, CustomizationEntry):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidCustomization(
            f"customizationMap[{index}]: must be an object, not {type(raw).__name__}"
        )
    try:
        return CustomizationEntry.model_validate(dict(raw))
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            problem = "unknown property"
        elif first["type"] == "missing":
            problem = "required"
        else:
            problem = str(first["msg"]).removeprefix("Value error, ")
        label = _entry_label(index, raw.get("layerId", raw.get("layer_id")))
        raise InvalidCustomization(
            f"{label}: {field}: {problem}" if field else f"{label}: {problem}"
        ) from err


def _set_fields(entry: CustomizationEntry) -> list[str]:
    """Fields the entry actually sets (an explicit null sets nothing)."""
    return [name for name in _SETTABLE if getattr(entry, name) is not None]


def validate_customizations(
    template: Template,
    entries: Sequence[CustomizationEntry | Mapping[str, Any]],
    *,
    lottie_text_layers: Mapping[str, Sequence[str]] | None = None,
) -> list[CustomizationEntry]:
    """Check each entry against ``template`` and return them as ``CustomizationEntry``.

    Args:
        template: the validated template.
        entries: the ``customizationMap`` array (models or raw JSON objects).
        lottie_text_layers: lottie layer id -> names of the text layers in its file (see
            ``read_lottie_text_names``); when given, ``lottieText`` keys are checked against it.
            Without it they are checked only when the customisations are applied.

    Raises:
        InvalidCustomization: naming the entry by index and layerId: malformed entry, unknown
            layerId (valid ids listed), an entry that sets nothing, a property the layer
            type does not take, or a ``lottieText`` key that is not a text layer of the
            animation (its text layers listed).
    """
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise InvalidCustomization("customizationMap must be an array of objects")
    valid_ids = [layer.id for layer in template.layers]
    result: list[CustomizationEntry] = []
    for index, raw in enumerate(entries):
        entry = _parse_entry(index, raw)
        label = _entry_label(index, entry.layer_id)
        layer = template.layer(entry.layer_id)
        if layer is None:
            shown = ", ".join(f"'{i}'" for i in valid_ids[:_MAX_IDS_LISTED])
            if len(valid_ids) > _MAX_IDS_LISTED:
                shown += f", ... ({len(valid_ids) - _MAX_IDS_LISTED} more)"
            raise InvalidCustomization(
                f"{label}: the template has no layer '{entry.layer_id}' (layers: {shown or 'none'})"
            )
        fields = _set_fields(entry)
        if not fields:
            raise InvalidCustomization(f"{label}: sets nothing; add a property to change")
        allowed = ALLOWED[layer.type]
        for field in fields:
            if field not in allowed:
                takes = ", ".join(customizable_properties(layer.type))
                raise InvalidCustomization(
                    f"{label}: property '{wire_name(field)}' does not apply to "
                    f"{article(layer.type)} {layer.type} layer (it takes: {takes})"
                )
        if entry.lottie_text is not None:
            known = None if lottie_text_layers is None else lottie_text_layers.get(layer.id)
            _check_lottie_text(label, entry.lottie_text, known, getattr(layer, "src", ""))
        result.append(entry)
    return result


def _check_lottie_text(
    label: str, texts: Mapping[str, str], known: Sequence[str] | None, src: str
) -> None:
    if not texts:
        raise InvalidCustomization(
            f"{label}: lottieText is empty; map a text layer name to its new text"
        )
    if known is None:
        return
    for name in texts:
        if name not in known:
            shown = ", ".join(f"'{n}'" for n in known[:_MAX_IDS_LISTED]) or "none"
            raise InvalidCustomization(
                f"{label}: lottieText: '{name}' is not a text layer of {src} (text layers: {shown})"
            )


def read_lottie_text_names(loaded: LoadedTemplate) -> dict[str, list[str]]:
    """Lottie layer id -> the names of the text layers in its animation, for
    ``validate_customizations(..., lottie_text_layers=...)``.

    Raises:
        UnsupportedMedia: a lottie file is no longer readable (the loader checked it).
    """
    found: dict[str, list[str]] = {}
    for layer in loaded.template.layers:
        if isinstance(layer, LottieLayer):
            _, info = read_lottie(loaded.path(layer.src), layer.src, loaded.root)
            found[layer.id] = list(info.text_layers)
    return found


def article(word: str) -> str:
    """The indefinite article for ``word`` in a message ("an image", "a video")."""
    return "an" if word[:1] in "aeiou" else "a"


def _resolve_src(loaded: LoadedTemplate, src: str, label: str) -> Path:
    candidate = Path(src)
    if candidate.is_absolute():
        target = candidate
    else:
        if "\\" in src or ".." in src.split("/") or posixpath.normpath(src) != src:
            raise InvalidCustomization(
                f"{label}: src {src!r} must be an absolute path or a plain path inside the "
                "template folder"
            )
        target = loaded.root / src
        if not target.resolve().is_relative_to(loaded.root.resolve()):
            raise InvalidCustomization(f"{label}: src {src!r} leads outside the template folder")
    if not target.is_file():
        raise InvalidCustomization(f"{label}: replacement file {src!r} does not exist")
    return target


def apply_customizations(
    loaded: LoadedTemplate, entries: Sequence[CustomizationEntry]
) -> LoadedTemplate:
    """Return a new ``LoadedTemplate`` with ``entries`` applied in order (later entries win).

    Replacement media come from each entry's ``src`` (absolute, or relative to the template
    root), are probed as the layer's kind and keep the layer's box, fit and animation.
    ``lottieText`` replacements are collected in ``LoadedTemplate.lottie_text`` (the lottie
    source rewrites its JSON with them). The input objects are left untouched.

    Raises:
        InvalidCustomization: an entry is invalid for the template (see
            ``validate_customizations``), an ``assetId`` came without a resolved ``src``, the
            replacement file is missing, it is not usable as the layer's media kind, or a
            ``lottieText`` key is not a text layer of the layer's animation.
    """
    checked = validate_customizations(loaded.template, entries)
    updates: dict[str, dict[str, Any]] = {}
    lottie_text = {layer_id: dict(texts) for layer_id, texts in loaded.lottie_text.items()}
    text_layers: dict[str, list[str]] = {}
    for index, entry in enumerate(checked):
        label = _entry_label(index, entry.layer_id)
        layer = loaded.template.layer(entry.layer_id)
        assert layer is not None  # validate_customizations guarantees it
        changes = updates.setdefault(layer.id, {})
        if entry.text is not None:
            changes["text"] = entry.text
        if entry.color is not None:
            changes["color"] = entry.color
        if entry.visible is not None:
            changes["visible"] = entry.visible
        if entry.asset_id is not None and entry.src is None:
            raise InvalidCustomization(
                f"{label}: asset '{entry.asset_id}' was not resolved to a file"
            )
        if entry.src is not None:
            kind = asset_kind_for_layer(layer)
            target = _resolve_src(loaded, entry.src, label)
            try:
                if kind == "image":
                    probe_image(target, entry.src if not Path(entry.src).is_absolute() else None)
                elif kind == "video":
                    probe_video(target, entry.src if not Path(entry.src).is_absolute() else None)
            except UnsupportedMedia as err:
                raise InvalidCustomization(
                    f"{label}: the replacement is not a usable {kind} for this {layer.type} "
                    f"layer: {err}"
                ) from err
            # Absolute, so LoadedTemplate.path() (root / src) yields it unchanged.
            changes["src"] = str(target.resolve())
        if entry.lottie_text is not None and isinstance(layer, LottieLayer):
            if layer.id not in text_layers:
                try:
                    _, info = read_lottie(loaded.path(layer.src), layer.src, loaded.root)
                except UnsupportedMedia as err:
                    raise InvalidCustomization(f"{label}: lottieText: {err}") from err
                text_layers[layer.id] = list(info.text_layers)
            _check_lottie_text(label, entry.lottie_text, text_layers[layer.id], layer.src)
            lottie_text.setdefault(layer.id, {}).update(entry.lottie_text)
    if not updates:
        return dataclasses.replace(loaded, lottie_text=lottie_text)
    layers = [
        layer.model_copy(update=updates[layer.id]) if layer.id in updates else layer
        for layer in loaded.template.layers
    ]
    template = loaded.template.model_copy(update={"layers": layers})
    return dataclasses.replace(loaded, template=template, lottie_text=lottie_text)


def customized(
    template: LoadedTemplate, customizations: Sequence[CustomizationEntry]
) -> LoadedTemplate:
    """``template`` with ``customizations`` checked and applied (itself when there are none).

    Raises:
        InvalidCustomization, UnsupportedMedia: as ``validate_customizations`` and
            ``apply_customizations``.
    """
    entries = validate_customizations(template.template, customizations)
    return apply_customizations(template, entries) if entries else template
