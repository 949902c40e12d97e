"""Make an uploaded Lottie document safe for the engine before the engine sees it.

``read_lottie`` passes every parsed document through ``sanitize_lottie``, so validation,
previews and renders all hand the engine the same checked, self-contained JSON:

* **Precomps**: every ``refId`` must name an asset of the right kind (a precomp layer a
  precomp, an image layer an image); precomps that contain themselves, directly or through
  others, are refused, as are chains deeper than ``MAX_PRECOMP_DEPTH`` and documents whose
  precomps expand to more than ``MAX_EXPANDED_LAYERS`` layers (a "billion laughs" of precomps).
* **Expressions** (a string ``"x"`` on a property) are removed, and the manifest says how
  many: the engine then draws the keyframed values, which is what a designer sees with
  expressions off. Expressions run JavaScript in the engine; one ``while(true){}`` would hold
  a CPU for ever, and reading other layers' sliders through them is where the engine draws
  real files wrong.
* **Files**: the engine never opens a path. Embedded images (``"e": 1``) must be real
  ``data:image/...;base64,`` URIs of a bounded size that decode; external ones are resolved by
  Velocity inside the template folder (no absolute paths, ``..`` or links leading out) and
  rewritten as data URIs. Sound and data ("footage") assets are removed and listed as ignored.
  Embedded fonts must be ``data:font/...;base64,`` URIs; any other font path is dropped.
* **Effects** the engine cannot draw are listed as ignored; a Fill effect on a masked layer
  (which the engine spreads over the whole layer) is removed.
* **Nesting** of the JSON itself is bounded (``MAX_JSON_DEPTH``).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from renderer.errors import UnsupportedMedia

MAX_PRECOMP_DEPTH = 32
MAX_EXPANDED_LAYERS = 20_000
MAX_JSON_DEPTH = 200
MAX_EMBEDDED_BYTES = 16 * 1024 * 1024  # one decoded image or font
MAX_INLINED_BYTES = 64 * 1024 * 1024  # all images of one animation, after inlining
_PRECOMP, _IMAGE, _AUDIO = 0, 2, 6
_FX_FIRST_VISUAL = 20  # lower effect types are expression controls (slider, checkbox...)
_FX_FILL = 21
_FX_DRAWN = {20, 21, 23, 25, 29}  # Tint, Fill, Tritone, Drop Shadow, Gaussian Blur
_AUDIO_SUFFIXES = (".mp3", ".wav", ".aac", ".m4a", ".ogg", ".flac")
_DATA_SUFFIXES = (".json", ".csv", ".tsv", ".txt", ".mgjson")
_IMAGE_URI = re.compile(r"data:image/([a-z0-9.+-]{1,20});base64,", re.IGNORECASE)
_FONT_URI = re.compile(r"data:(?:font|application)/([a-z0-9.+-]{1,30});base64,", re.IGNORECASE)
_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_ENGINE_IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpeg"}


@dataclass(frozen=True)
class Sanitized:
    """The engine-ready document, the template files it drew from, and what was ignored."""

    doc: dict[str, Any]
    images: tuple[Path, ...]
    warnings: tuple[str, ...]


def sanitize_lottie(doc: dict[str, Any], path: Path, root: Path, label: str) -> Sanitized:
    """Check ``doc`` (parsed from ``path``, a file inside the template folder ``root``) and
    make it self-contained. ``doc`` is modified in place and returned in ``Sanitized``.

    Raises:
        UnsupportedMedia: naming ``label`` and the asset or layer: cyclic, too deep or too
            large precomps, a dangling or mistyped ``refId``, an embedded asset that is not a
            valid data URI, an image path leading outside the template, missing or unreadable,
            or JSON nested too deeply.
    """
    warnings: list[str] = []
    expressions = _strip_expressions(doc, label)
    if expressions:
        warnings.append(f"{expressions} expression(s) ignored: Velocity draws the keyframed values")
    assets = doc.get("assets")
    if assets is not None and not isinstance(assets, list):
        raise UnsupportedMedia(f"{label}: not a Lottie animation: 'assets' must be an array")
    by_id = _assets_by_id(assets or [], label)
    audio_ids = _audio_asset_ids(doc, by_id)
    images: list[Path] = []
    inlined = 0
    kept: list[Any] = []
    for asset in assets or []:
        if not isinstance(asset, dict):
            continue  # the engine skips what is not an object
        asset_id = _asset_id(asset)
        if "p" in asset:
            kind = _file_asset_kind(asset, asset_id in audio_ids)
            if kind != "image":
                warnings.append(
                    f"{kind} asset '{asset_id}' ignored: "
                    + (
                        "Lottie sound is not played; add it as an audio track of the template"
                        if kind == "audio"
                        else "data-driven (footage) assets are not supported"
                    )
                )
                continue
            image, size = _inline_image(asset, asset_id, path, root, label)
            inlined += size
            if inlined > MAX_INLINED_BYTES:
                raise UnsupportedMedia(
                    f"{label}: its images add up to more than "
                    f"{MAX_INLINED_BYTES // (1024 * 1024)} MB"
                )
            if image is not None:
                images.append(image)
        kept.append(asset)
    if assets is not None:
        doc["assets"] = kept
    _drop_audio_layers(doc)
    warnings.extend(_check_effects(doc))
    _check_precomps(doc, by_id, label)
    _check_fonts(doc, label)
    return Sanitized(doc=doc, images=tuple(images), warnings=tuple(warnings))


# --- expressions and depth -------------------------------------------------------------------


def _strip_expressions(doc: dict[str, Any], label: str) -> int:
    """Remove every string ``"x"`` (an expression) from the document; bound its nesting.
    Iterative, so a deep document cannot exhaust Python's stack either."""
    removed = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise UnsupportedMedia(
                f"{label}: the Lottie JSON is nested more than {MAX_JSON_DEPTH} levels deep"
            )
        if isinstance(node, dict):
            if isinstance(node.get("x"), str):
                del node["x"]
                removed += 1
            stack.extend((value, depth + 1) for value in node.values() if _container(value))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node if _container(value))
    return removed


def _container(value: object) -> bool:
    return isinstance(value, (dict, list))


# --- assets and precomps ---------------------------------------------------------------------


def _asset_id(asset: dict[str, Any]) -> str:
    # ThorVG matches an integer id by its decimal text, as Bodymovin does.
    value = asset.get("id")
    return value if isinstance(value, str) else str(value) if isinstance(value, int) else ""


def _assets_by_id(assets: list[Any], label: str) -> dict[str, dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for asset in assets:
        if not isinstance(asset, dict):
            continue
        asset_id = _asset_id(asset)
        if asset_id in by_id:
            raise UnsupportedMedia(f"{label}: asset id '{asset_id}' is used by two assets")
        by_id[asset_id] = asset
    return by_id


def _layer_lists(doc: dict[str, Any]) -> Iterator[tuple[str | None, list[Any]]]:
    """(asset id or None for the main composition, its layers)."""
    layers = doc.get("layers")
    if isinstance(layers, list):
        yield None, layers
    for asset in doc.get("assets") or []:
        if isinstance(asset, dict) and isinstance(asset.get("layers"), list):
            yield _asset_id(asset), asset["layers"]


def _ref(layer: dict[str, Any]) -> str | None:
    value = layer.get("refId")
    return value if isinstance(value, str) else str(value) if isinstance(value, int) else None


def _audio_asset_ids(doc: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for _, layers in _layer_lists(doc):
        for layer in layers:
            if isinstance(layer, dict) and layer.get("ty") == _AUDIO:
                ref = _ref(layer)
                if ref is not None and ref in by_id:
                    found.add(ref)
    return found


def _drop_audio_layers(doc: dict[str, Any]) -> None:
    for _, layers in _layer_lists(doc):
        layers[:] = [x for x in layers if not (isinstance(x, dict) and x.get("ty") == _AUDIO)]


def _file_asset_kind(asset: dict[str, Any], used_as_audio: bool) -> str:
    name = asset.get("p")
    text = name.lower() if isinstance(name, str) else ""
    if used_as_audio or text.startswith("data:audio/") or text.endswith(_AUDIO_SUFFIXES):
        return "audio"
    if (
        asset.get("t") == 3
        or text.startswith("data:application/json")
        or (text.endswith(_DATA_SUFFIXES) and not text.startswith("data:"))
    ):
        return "data"
    return "image"


def _check_precomps(doc: dict[str, Any], by_id: dict[str, dict[str, Any]], label: str) -> None:
    """Refuse dangling or mistyped references, cycles, deep chains and precomp bombs."""
    children: dict[str | None, list[str]] = {}
    for owner, layers in _layer_lists(doc):
        refs: list[str] = []
        for layer in layers:
            if not isinstance(layer, dict) or layer.get("ty") not in (_PRECOMP, _IMAGE):
                continue
            ref = _ref(layer)
            if ref is None:
                continue
            name = layer.get("nm")
            where = f"layer '{name}'" if isinstance(name, str) else "a layer"
            if owner is not None:
                where += f" of precomp '{owner}'"
            target = by_id.get(ref)
            if target is None:
                raise UnsupportedMedia(
                    f"{label}: {where} refers to asset '{ref}', which is missing"
                )
            is_precomp = isinstance(target.get("layers"), list)
            if layer.get("ty") == _PRECOMP:
                if not is_precomp:
                    raise UnsupportedMedia(
                        f"{label}: {where} is a precomp layer but asset '{ref}' is not a precomp"
                    )
                refs.append(ref)
            elif is_precomp:
                raise UnsupportedMedia(
                    f"{label}: {where} is an image layer but asset '{ref}' is a precomp"
                )
        children[owner] = refs

    # Depth-first over every precomp (reachable or not: the engine parses them all), with
    # an explicit stack so a long chain cannot exhaust Python's.
    sizes = {owner: len(layers) for owner, layers in _layer_lists(doc)}
    state: dict[str | None, int] = {}  # 1 on the path, 2 done
    depth: dict[str | None, int] = {}
    expanded: dict[str | None, int] = {}
    for start in children:
        if state.get(start) == 2:
            continue
        path: list[str | None] = [start]
        iters = [iter(children.get(start, []))]
        state[start] = 1
        while path:
            node = path[-1]
            child = next(iters[-1], None)
            if child is None:
                depth[node] = 1 + max((depth[c] for c in children.get(node, [])), default=0)
                expanded[node] = sizes.get(node, 0) + sum(
                    expanded[c] for c in children.get(node, [])
                )
                if depth[node] > MAX_PRECOMP_DEPTH:
                    raise UnsupportedMedia(
                        f"{label}: precomps are nested more than {MAX_PRECOMP_DEPTH} deep "
                        f"(through asset '{node}')"
                    )
                if expanded[node] > MAX_EXPANDED_LAYERS:
                    raise UnsupportedMedia(
                        f"{label}: its precomps expand to more than {MAX_EXPANDED_LAYERS} "
                        f"layers (through asset '{node or 'the main composition'}')"
                    )
                state[node] = 2
                path.pop()
                iters.pop()
                continue
            if state.get(child) == 1:
                if child == node:
                    raise UnsupportedMedia(f"{label}: precomp asset '{child}' contains itself")
                cycle = [str(p) for p in path[path.index(child) :]] + [child]
                raise UnsupportedMedia(
                    f"{label}: precomp assets contain each other in a cycle: "
                    + " -> ".join(f"'{c}'" for c in cycle)
                )
            if state.get(child) != 2:
                state[child] = 1
                path.append(child)
                iters.append(iter(children.get(child, [])))


# --- effects ---------------------------------------------------------------------------------


def _check_effects(doc: dict[str, Any]) -> list[str]:
    """Drop layer effects the engine would draw wrongly and name every effect it ignores.

    The engine draws Tint, Fill, Tritone, Drop Shadow and Gaussian Blur; expression controls
    (sliders, checkboxes... types below 20) only feed expressions, which are removed. A Fill on
    a masked layer is drawn over the whole layer instead of the mask, so it is removed: the
    layer keeps its own colours rather than turning into a filled rectangle."""
    notes: list[str] = []
    for owner, layers in _layer_lists(doc):
        for layer in layers:
            effects = layer.get("ef") if isinstance(layer, dict) else None
            if not isinstance(effects, list):
                continue
            name = layer.get("nm")
            where = f"layer '{name}'" if isinstance(name, str) else "a layer"
            if owner is not None:
                where += f" of precomp '{owner}'"
            kept: list[Any] = []
            for effect in effects:
                kind = effect.get("ty") if isinstance(effect, dict) else None
                title = effect.get("nm") if isinstance(effect, dict) else None
                shown = f"'{title}'" if isinstance(title, str) else f"of type {kind}"
                if kind == _FX_FILL and layer.get("masksProperties"):
                    notes.append(f"effect {shown} on masked {where} ignored (Fill on a mask)")
                    continue
                if (
                    isinstance(kind, int)
                    and not isinstance(kind, bool)
                    and kind >= _FX_FIRST_VISUAL
                    and kind not in _FX_DRAWN
                ):
                    notes.append(f"effect {shown} on {where} ignored (not supported)")
                kept.append(effect)
            layer["ef"] = kept
    return notes


# --- images ------------------------------------------------------------------------------------


def _inline_image(
    asset: dict[str, Any], asset_id: str, path: Path, root: Path, label: str
) -> tuple[Path | None, int]:
    """Rewrite an image asset as a checked data URI. Returns the template file it came from
    (None when it was embedded) and the decoded size."""
    name, folder = asset.get("p"), asset.get("u", "")
    shown = f"image asset '{asset_id}'"
    if not isinstance(name, str) or not isinstance(folder, str) or not name:
        raise UnsupportedMedia(f"{label}: {shown} has no usable path")
    if name.startswith("data:"):
        data = _decode_data_uri(name, _IMAGE_URI, f"{label}: {shown}")
        source: Path | None = None
    elif asset.get("e") == 1:
        raise UnsupportedMedia(
            f'{label}: {shown} is marked embedded ("e": 1) but is not a data:image URI'
        )
    else:
        source = _resolve(folder, name, path, root, f"{label}: {shown}")
        size = source.stat().st_size
        if size > MAX_EMBEDDED_BYTES:
            raise UnsupportedMedia(
                f"{label}: image {folder + name!r} is {size} bytes; the limit is "
                f"{MAX_EMBEDDED_BYTES // (1024 * 1024)} MB"
            )
        from renderer.media.probe import probe_image

        probe_image(source, folder + name)
        data = source.read_bytes()
    mime, data = _engine_image(data, f"{label}: {shown}")
    asset["u"] = ""
    asset["p"] = f"data:image/{mime};base64," + base64.b64encode(data).decode("ascii")
    asset["e"] = 1
    return source, len(data)


def _decode_data_uri(uri: str, pattern: re.Pattern[str], what: str) -> bytes:
    match = pattern.match(uri)
    if match is None:
        raise UnsupportedMedia(f"{what}: not a base64 data URI of the expected type")
    payload = uri[match.end() :].encode("ascii", "replace")
    if len(payload) > MAX_EMBEDDED_BYTES * 4 // 3 + 4:
        raise UnsupportedMedia(
            f"{what}: embedded data is over {MAX_EMBEDDED_BYTES // (1024 * 1024)} MB"
        )
    if not _B64.fullmatch(payload):
        raise UnsupportedMedia(f"{what}: embedded data is not valid base64")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise UnsupportedMedia(f"{what}: embedded data is not valid base64") from err


def _engine_image(data: bytes, what: str) -> tuple[str, bytes]:
    """(mime subtype, bytes) of an image the engine decodes: PNG and JPEG as they are, other
    formats Pillow reads (GIF, TGA...) re-encoded as PNG. Checks the size like ``probe_image``."""
    import warnings

    from PIL import Image

    from renderer.media.probe import MAX_IMAGE_PIXELS, MAX_MEDIA_DIMENSION

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if not (0 < width <= MAX_MEDIA_DIMENSION and 0 < height <= MAX_MEDIA_DIMENSION):
                    raise UnsupportedMedia(f"{what}: image is {width}x{height}; too large")
                if width * height > MAX_IMAGE_PIXELS:
                    raise UnsupportedMedia(f"{what}: image is {width}x{height}; too large")
                im.load()
                mime = _ENGINE_IMAGE_FORMATS.get(str(im.format))
                if mime is not None:
                    return mime, data
                out = io.BytesIO()
                im.convert("RGBA").save(out, format="PNG")
                return "png", out.getvalue()
    except UnsupportedMedia:
        raise
    except Exception as err:  # Pillow raises many types on hostile input
        raise UnsupportedMedia(f"{what}: not a readable image") from err


def _resolve(folder: str, name: str, path: Path, root: Path, what: str) -> Path:
    joined = folder + name
    if (
        "\\" in joined
        or "\x00" in joined
        or ":" in joined.split("/", 1)[0]  # a URL scheme or a drive letter
        or joined.startswith("/")
        or ".." in PurePosixPath(joined).parts
    ):
        raise UnsupportedMedia(
            f"{what}: path {joined!r} must be relative to the animation, inside the "
            "template (like 'images/img_0.png')"
        )
    target = (path.parent / joined).resolve()
    if not target.is_relative_to(root.resolve()):
        raise UnsupportedMedia(f"{what}: path {joined!r} leads outside the template folder")
    if not target.is_file():
        raise UnsupportedMedia(f"{what}: image {joined!r} is missing")
    return target


# --- fonts -------------------------------------------------------------------------------------


def _check_fonts(doc: dict[str, Any], label: str) -> None:
    fonts = doc.get("fonts")
    listed = fonts.get("list") if isinstance(fonts, dict) else None
    for font in listed if isinstance(listed, list) else []:
        if not isinstance(font, dict) or "fPath" not in font:
            continue
        value = font["fPath"]
        if isinstance(value, str) and value.startswith("data:"):
            name = font.get("fName")
            _decode_data_uri(value, _FONT_URI, f"{label}: font '{name}'")
        else:
            # A path or URL: the engine must not open it; the font is matched by name.
            font["fPath"] = ""
