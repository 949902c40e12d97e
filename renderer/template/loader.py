"""Loading and validating a template from a folder or a ZIP (SPEC §4, §9).

``load_template`` is the one door through which a template enters the renderer: after it
returns, ``data.json`` matched the schema, every path it names stays inside the template
folder and exists, and every referenced file was probed as the kind its user expects. Every
refusal is an ``InvalidTemplate`` (or ``UnsupportedMedia``) whose message names the layer,
field or file to fix.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from renderer.errors import InvalidTemplate
from renderer.media.probe import (
    ImageInfo,
    VideoInfo,
    check_font,
    probe_audio,
    probe_image,
    probe_video,
)
from renderer.template.archive import (
    DATA_JSON,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    remove_tree,
    safe_extract,
)
from renderer.template.model import (
    AudioTrack,
    ImageLayer,
    LoadedTemplate,
    LottieLayer,
    Template,
    TextLayer,
    VideoLayer,
)

MAX_DATA_JSON_BYTES = 16 * 1024 * 1024
# Decoded source frames of all image and video layers together (each layer decodes its own).
MAX_SOURCE_PIXELS = 256 * 1024 * 1024
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
# Pydantic labels union members in error locations ("float", "list[Keyframe]", "function-after
# [...]"); they are not fields, so they are dropped from the path shown to the user.
_UNION_LABELS = {"float", "int", "str", "bool", "none", "dict", "list"}
_LAYER_TYPES = ("solid", "image", "video", "text", "lottie")
# A refusal names this many missing files and counts the rest.
MAX_MISSING_LISTED = 20


def load_template(
    path: Path, workdir: Path | None = None, *, trusted: bool = False
) -> LoadedTemplate:
    """Load, validate and probe a template.

    Args:
        path: a folder holding ``data.json`` (or one sub-folder holding it), a ``.zip``, or
            a ``data.json`` file itself.
        workdir: where a ZIP is extracted; a fresh temporary folder when None (the caller
            owns it afterwards: it is ``LoadedTemplate.root`` or its parent). Ignored for
            folders, which are used in place.
        trusted: the folder was loaded untrusted before and has not changed since (a stored
            template, immutable after ingest): keep the schema and path checks but do not
            probe its media files again, which costs a decode of every file.

    Returns:
        The validated template and the folder its relative paths resolve against.

    Raises:
        InvalidTemplate: the archive is unsafe or malformed, ``data.json`` is missing, is not
            JSON or does not match the schema, a referenced file is missing or outside the
            template, or a lottie layer is used where the Lottie engine is not installed.
        UnsupportedMedia: a referenced file is not an accepted image, video, audio, font or
            Lottie animation (or one of its images).
        On failure, whatever was extracted from a ZIP is removed again.
    """
    path = Path(path)
    if path.is_dir():
        root = _folder_root(path)
        return load_template_from_dict(_read_data_json(root / DATA_JSON), root, trusted=trusted)
    if not path.exists():
        raise InvalidTemplate(f"template not found: {path.name}")
    if path.name == DATA_JSON and not zipfile.is_zipfile(path):
        return load_template_from_dict(_read_data_json(path), path.parent, trusted=trusted)

    fresh = workdir is None
    dest = Path(tempfile.mkdtemp(prefix="velocity-template-")) if workdir is None else workdir
    before = set(dest.iterdir()) if dest.is_dir() else None
    try:
        root = safe_extract(path, dest)
        return load_template_from_dict(_read_data_json(root / DATA_JSON), root, trusted=trusted)
    except BaseException:
        _cleanup(dest, before, fresh)
        raise


def _cleanup(dest: Path, before: set[Path] | None, fresh: bool) -> None:
    """Remove what a failed load extracted: the whole temp folder, or only new entries."""
    if fresh or before is None:
        remove_tree(dest)
        return
    for entry in set(dest.iterdir()) - before:
        remove_tree(entry)


def _folder_root(folder: Path) -> Path:
    if (folder / DATA_JSON).is_file():
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir() and p.name != "__MACOSX"]
    if len(subdirs) == 1 and (subdirs[0] / DATA_JSON).is_file():
        return subdirs[0]
    raise InvalidTemplate(
        f"data.json not found in the template folder '{folder.name}' "
        "(it must be at the top or inside a single sub-folder)"
    )


def _read_data_json(path: Path) -> dict[str, Any]:
    try:
        size = path.stat().st_size
    except FileNotFoundError as err:
        raise InvalidTemplate("data.json not found") from err
    if not path.is_file():
        raise InvalidTemplate("data.json is not a regular file")
    if size > MAX_DATA_JSON_BYTES:
        raise InvalidTemplate(
            f"data.json is {size} bytes; the limit is {MAX_DATA_JSON_BYTES // (1024 * 1024)} MB"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidTemplate(f"data.json is not UTF-8 text (byte {err.start})") from err
    return parse_data_json(text)


def _reject_constant(name: str) -> Any:
    raise InvalidTemplate(f"data.json is not valid JSON: {name} is not a number JSON allows")


# Integers longer than this are read as floats (inf past ~308 digits), so the schema's bounds
# name the field; Python's int() would refuse 4,300+ digits with a bare ValueError.
_MAX_INT_DIGITS = 18


def _parse_int(text: str) -> int | float:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= _MAX_INT_DIGITS else float(text)


def parse_data_json(text: str) -> dict[str, Any]:
    """Parse ``data.json`` text into a dict.

    Numbers too large for a float (``1e999``) and integers of more than 18 digits become
    floats (infinite when out of range): the schema then refuses them naming the field.

    Raises:
        InvalidTemplate: not JSON (with line and column), NaN/Infinity, or not an object.
    """
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except json.JSONDecodeError as err:
        raise InvalidTemplate(
            f"data.json is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from err
    except RecursionError as err:
        raise InvalidTemplate("data.json is not valid JSON: nested too deeply") from err
    if not isinstance(data, dict):
        shown = "array" if isinstance(data, list) else type(data).__name__
        raise InvalidTemplate(f"data.json must hold a JSON object, not {shown}")
    return data


def load_template_from_dict(
    data: Mapping[str, Any], root: Path, *, trusted: bool = False
) -> LoadedTemplate:
    """Validate an already-parsed ``data.json`` whose paths resolve against ``root``
    (``trusted``: as ``load_template``).

    Raises:
        InvalidTemplate, UnsupportedMedia: as ``load_template``.
    """
    try:
        template = Template.model_validate(data)
    except ValidationError as err:
        raise InvalidTemplate(format_validation_error(err, data)) from err
    check_references(template, root, trusted=trusted)
    return LoadedTemplate(root=root, template=template)


# --- pydantic errors to one sentence ---------------------------------------------------------


def _is_field(part: str | int) -> bool:
    if isinstance(part, int):
        return True
    return part not in _UNION_LABELS and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) is not None


def _field_path(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        if not _is_field(part):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _union_prefix(loc: Sequence[str | int]) -> tuple[str | int, ...]:
    for index, part in enumerate(loc):
        if not _is_field(part):
            return tuple(loc[:index])
    return tuple(loc)


def _item_label(data: Mapping[str, Any], collection: str, index: int) -> str:
    items = data.get(collection)
    item = items[index] if isinstance(items, list) and 0 <= index < len(items) else None
    ident = item.get("id") if isinstance(item, dict) else None
    kind = "layer" if collection == "layers" else "audio track"
    if isinstance(ident, str) and ident:
        return f"{kind} '{ident}' ({collection}[{index}])"
    return f"{kind} {collection}[{index}]"


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    msg = str(error.get("msg", "invalid value"))
    if kind == "union_tag_not_found":
        return f"missing 'type' (one of {', '.join(_LAYER_TYPES)})"
    if kind == "extra_forbidden":
        return "unknown field (not part of template format v1; check its spelling)"
    if kind == "missing":
        return "field required"
    if kind in ("finite_number", "int_parsing_size"):
        return "number is too large (or not finite) to be used"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg


def format_validation_error(err: ValidationError, data: Mapping[str, Any]) -> str:
    """Turn a pydantic error on ``data.json`` into one message naming the layer (by id and
    index) and the field, e.g. ``layer 'headline' (layers[3]): size: Input should be greater
    than 0``; further problems are counted, not listed."""
    errors = err.errors(include_url=False)
    # Of a failed union, the member that got furthest tells the most ("opacity[1].t" beats
    # "opacity is not a number"); max() keeps the earliest on ties.
    first = max(errors, key=lambda e: len(_field_path(e["loc"])))
    loc = list(first["loc"])
    if len(loc) >= 2 and loc[0] in ("layers", "audio") and isinstance(loc[1], int):
        where = _item_label(data, str(loc[0]), loc[1])
        rest = loc[2:]
        # The discriminated union puts the layer type first; it is not a field.
        if loc[0] == "layers" and rest and rest[0] in _LAYER_TYPES:
            rest = rest[1:]
    else:
        where = "data.json"
        rest = loc
    field = _field_path(rest)
    text = f"{where}: {field}: {_message(first)}" if field else f"{where}: {_message(first)}"
    # Each member of a failed union reports separately: count the place of the union once.
    places = {_union_prefix(e["loc"]) for e in errors}
    if len(places) > 1:
        text += f" (and {len(places) - 1} more problem{'s' if len(places) > 2 else ''})"
    return text


# --- referenced files ------------------------------------------------------------------------


def _resolve_relative(value: str, root: Path, owner: str) -> Path:
    """Resolve a path from ``data.json`` after checking it is relative, normalised and stays
    inside ``root``; whether it exists is the caller's question.

    Raises:
        InvalidTemplate: naming ``owner`` and the path.
    """
    if not value:
        raise InvalidTemplate(f"{owner}: empty path")
    if "\\" in value:
        raise InvalidTemplate(f"{owner}: path {value!r} uses a backslash; use '/' between folders")
    if value.startswith("/") or _DRIVE_RE.match(value) or "\x00" in value:
        raise InvalidTemplate(
            f"{owner}: path {value!r} must be relative to data.json (like 'images/logo.png')"
        )
    parts = value.split("/")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES or any(
        len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in parts
    ):
        shown = value if len(value) <= 80 else value[:60] + f"… ({len(value)} characters)"
        raise InvalidTemplate(
            f"{owner}: path {shown!r} is too long (at most {MAX_PATH_BYTES} bytes, "
            f"{MAX_NAME_BYTES} per file or folder name)"
        )
    if ".." in parts:
        raise InvalidTemplate(f"{owner}: path {value!r} must not contain '..'")
    normal = posixpath.normpath(value)
    if normal != value:
        raise InvalidTemplate(f"{owner}: path {value!r} is not normalised; write {normal!r}")
    try:
        base = root.resolve()
        target = (root / value).resolve()
    except OSError as err:
        raise InvalidTemplate(
            f"{owner}: path {value!r} cannot be opened ({os.strerror(err.errno or 0)})"
        ) from err
    if not target.is_relative_to(base):
        # A symlink inside a template folder pointing elsewhere.
        raise InvalidTemplate(f"{owner}: path {value!r} leads outside the template folder")
    return target


def check_relative_path(value: str, root: Path, owner: str) -> Path:
    """Check a path from ``data.json``: relative, normalised, inside ``root`` and an
    existing regular file. Returns the resolved file.

    Raises:
        InvalidTemplate: naming ``owner`` (e.g. "layer 'logo'") and the path.
    """
    target = _resolve_relative(value, root, owner)
    try:
        if not target.exists():
            raise InvalidTemplate(missing_files_message({value: [owner]}))
        if not target.is_file():
            raise InvalidTemplate(f"{owner}: {value} is not a file")
    except OSError as err:
        raise InvalidTemplate(
            f"{owner}: path {value!r} cannot be opened ({os.strerror(err.errno or 0)})"
        ) from err
    return target


def missing_files_message(missing: Mapping[str, Sequence[str]]) -> str:
    """One refusal naming every missing file (path -> the owners that reference it), the
    first ``MAX_MISSING_LISTED`` in order and a count of the rest, e.g. ``Missing
    images/logo.png referenced by layer 'logo'`` or ``Missing 3 files: a.png referenced by
    layer 'a' and layer 'b'; ...``."""
    items = [f"{value} referenced by {' and '.join(owners)}" for value, owners in missing.items()]
    if len(items) == 1:
        return f"Missing {items[0]}"
    shown = "; ".join(items[:MAX_MISSING_LISTED])
    rest = len(items) - MAX_MISSING_LISTED
    more = f"; and {rest} more missing file{'s' if rest > 1 else ''}" if rest > 0 else ""
    return f"Missing {len(items)} files: {shown}{more}"


def _references(template: Template) -> list[tuple[str, str]]:
    """Every file ``template`` names, as (path, owner), in data.json order: fonts, layers,
    audio tracks."""
    refs = [(path, f"font '{name}'") for name, path in template.fonts.items()]
    refs += [
        (layer.src, f"layer '{layer.id}'")
        for layer in template.layers
        if isinstance(layer, (ImageLayer, VideoLayer, LottieLayer))
    ]
    refs += [(track.src, _track_label(track, i)) for i, track in enumerate(template.audio)]
    return refs


def check_missing_files(template: Template, root: Path) -> None:
    """Refuse a template that names files it does not contain, naming all of them at once
    (so one upload round fixes them all, not one per try).

    Raises:
        InvalidTemplate: a path is unsafe (the first such), or files are missing (all of
            them, up to ``MAX_MISSING_LISTED`` by name).
    """
    missing: dict[str, list[str]] = {}
    for value, owner in _references(template):
        try:
            found = _resolve_relative(value, root, owner).exists()
        except OSError:
            found = False
        if not found:
            owners = missing.setdefault(value, [])
            if owner not in owners:
                owners.append(owner)
    if missing:
        raise InvalidTemplate(missing_files_message(missing))


def check_references(template: Template, root: Path, *, trusted: bool = False) -> None:
    """Check every file ``template`` names and probe it as the kind it is used as (with
    ``trusted``, only that it lies inside ``root`` and is a file: see ``load_template``).

    Raises:
        InvalidTemplate: a path is unsafe or files are missing (all named, see
            ``check_missing_files``), a text layer names an undefined font,
            or a lottie layer is present and the Lottie engine is not installed.
        UnsupportedMedia: a file is not an accepted image, video, audio, font or Lottie
            animation (a Lottie's images must exist inside the template and decode).
    """
    check_missing_files(template, root)
    probed: dict[tuple[Path, str], object] = {}
    source_pixels = 0

    def probe(value: str, owner: str, kind: str, fn: Callable[[Path, str | None], object]) -> None:
        nonlocal source_pixels
        target = check_relative_path(value, root, owner)
        if trusted:
            return
        if (target, kind) not in probed:
            probed[(target, kind)] = fn(target, value)
        # Every image and video layer decodes its source at full size, each its own copy.
        info = probed[(target, kind)]
        if isinstance(info, (ImageInfo, VideoInfo)):
            source_pixels += info.width * info.height
            if source_pixels > MAX_SOURCE_PIXELS:
                raise InvalidTemplate(
                    f"{owner}: the image and video layers' sources total "
                    f"{source_pixels / 1e6:.0f} megapixels a frame; the limit for a template "
                    f"is {MAX_SOURCE_PIXELS / 1e6:.0f} megapixels (use smaller sources)"
                )

    for font_name, font_path in template.fonts.items():
        probe(font_path, f"font '{font_name}'", "font", check_font)

    for index, layer in enumerate(template.layers):
        owner = f"layer '{layer.id}'"
        if isinstance(layer, LottieLayer):
            # Imported here: the engine module pulls in numpy, which loading need not.
            from renderer.compose.layers.lottie import engine_unavailable_reason, probe_lottie

            reason = engine_unavailable_reason()
            if reason is not None:
                raise InvalidTemplate(
                    f"layer '{layer.id}': lottie layers cannot be rendered here: {reason}"
                )
            probe(layer.src, owner, "lottie", lambda target, name: probe_lottie(target, name, root))
        elif isinstance(layer, ImageLayer):
            probe(layer.src, owner, "image", probe_image)
        elif isinstance(layer, VideoLayer):
            probe(layer.src, owner, "video", probe_video)
        elif (
            isinstance(layer, TextLayer)
            and layer.font is not None
            and layer.font not in template.fonts
        ):
            known = ", ".join(f"'{name}'" for name in list(template.fonts)[:10]) or "none"
            raise InvalidTemplate(
                f"layer '{layer.id}' (layers[{index}]): font: '{layer.font}' is not a key "
                f"of fonts (defined: {known}); add it to fonts or leave font out"
            )

    for index, track in enumerate(template.audio):
        probe(track.src, _track_label(track, index), "audio", probe_audio)


def _track_label(track: AudioTrack, index: int) -> str:
    return f"audio track '{track.id}'" if track.id else f"audio track audio[{index}]"
