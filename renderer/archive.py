"""Safe extraction of template ZIPs (SPEC §9).

Every check that can be made from the central directory is made before a single byte is
written: the archive is attacker-controlled, so names, types, counts and declared sizes are
all refused up front. While extracting, the bytes actually written are counted as well,
because a header can lie about an entry's size. On any failure everything this call wrote is
removed again, so a refused upload leaves no trace.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from renderer.errors import InvalidTemplate

DATA_JSON = "data.json"
_CHUNK = 1 << 20
# A ratio check on tiny entries would only catch harmless runs of zeros in small files.
_RATIO_MIN_BYTES = 1 << 20
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_FORBIDDEN_TYPES = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
}


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]
    is_dir: bool


def _is_junk(parts: tuple[str, ...]) -> bool:
    """macOS Finder adds resource forks and folder metadata no template needs."""
    return parts[0] == "__MACOSX" or parts[-1] == ".DS_Store"


def _human(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _check_name(info: zipfile.ZipInfo) -> tuple[tuple[str, ...], bool]:
    raw = info.filename
    shown = repr(raw)
    if "\x00" in raw:
        raise InvalidTemplate(f"archive entry {shown} has a NUL byte in its name")
    if "\\" in raw:
        raise InvalidTemplate(
            f"archive entry {shown} uses a backslash in its path; "
            "re-create the ZIP with '/' as the folder separator"
        )
    if raw.startswith("/") or _DRIVE_RE.match(raw):
        raise InvalidTemplate(
            f"archive entry {shown} is an absolute path; entries must be relative"
        )
    is_dir = raw.endswith("/")
    parts = tuple(p for p in raw.split("/") if p)
    if not parts:
        raise InvalidTemplate(f"archive entry {shown} has an empty name")
    if any(p in ("..", ".") for p in parts):
        raise InvalidTemplate(
            f"archive entry {shown} contains '..' or '.' and would escape the template folder"
        )
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind in _FORBIDDEN_TYPES:
        raise InvalidTemplate(
            f"archive entry {shown} is {_FORBIDDEN_TYPES[kind]}; "
            "templates may contain only regular files and folders"
        )
    if kind == stat.S_IFDIR:
        is_dir = True
    if info.flag_bits & 0x1:
        raise InvalidTemplate(
            f"archive entry {shown} is encrypted; encrypted ZIPs are not supported"
        )
    return parts, is_dir


def _inspect(
    zf: zipfile.ZipFile, max_entries: int, max_total_bytes: int, max_ratio: float
) -> list[_Entry]:
    infos = zf.infolist()
    if len(infos) > max_entries:
        raise InvalidTemplate(
            f"the archive has too many entries ({len(infos)}; the limit is {max_entries})"
        )
    entries: list[_Entry] = []
    seen: set[tuple[str, ...]] = set()
    total = 0
    for info in infos:
        parts, is_dir = _check_name(info)
        if _is_junk(parts):
            continue
        if parts in seen and not is_dir:
            raise InvalidTemplate(f"archive entry {info.filename!r} appears more than once")
        seen.add(parts)
        entries.append(_Entry(info, parts, is_dir))
        if not is_dir:
            total += info.file_size
    if total > max_total_bytes:
        raise InvalidTemplate(
            f"the archive's declared uncompressed size ({_human(total)}) exceeds the limit "
            f"of {_human(max_total_bytes)}"
        )
    for entry in entries:
        info = entry.info
        if not entry.is_dir and info.file_size >= _RATIO_MIN_BYTES:
            ratio = info.file_size / max(1, info.compress_size)
            if ratio > max_ratio:
                raise InvalidTemplate(
                    f"archive entry {info.filename!r} has a compression ratio of {ratio:.0f}:1 "
                    f"(limit {max_ratio:.0f}:1); it looks like a ZIP bomb"
                )
    return entries


def _template_root(entries: list[_Entry]) -> tuple[str, ...]:
    """Where data.json lives: the archive root or the single top-level folder."""
    files = {e.parts for e in entries if not e.is_dir}
    if (DATA_JSON,) in files:
        return ()
    top_folders = sorted({e.parts[0] for e in entries if len(e.parts) > 1 or e.is_dir})
    with_data = [name for name in top_folders if (name, DATA_JSON) in files]
    if len(top_folders) == 1 and with_data:
        return (top_folders[0],)
    if len(top_folders) > 1:
        listed = ", ".join(f"{name}/" for name in top_folders[:5])
        more = f" and {len(top_folders) - 5} more" if len(top_folders) > 5 else ""
        raise InvalidTemplate(
            f"data.json is not at the archive root and the archive has several top-level "
            f"folders ({listed}{more}); put data.json at the root or zip a single folder"
        )
    deeper = sorted("/".join(p) for p in files if p[-1] == DATA_JSON)
    hint = f" (found {deeper[0]!r}, which is too deep)" if deeper else ""
    raise InvalidTemplate(
        f"data.json not found at the archive root or inside a single top-level folder{hint}"
    )


def _open(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as err:
        raise InvalidTemplate(f"the upload is not a ZIP archive ({err})") from err
    except OSError as err:
        raise InvalidTemplate(f"the upload cannot be read as a ZIP archive ({err})") from err


def safe_extract(
    zip_path: Path,
    dest: Path,
    *,
    max_entries: int = 10_000,
    max_total_bytes: int = 10 * 1024**3,
    max_ratio: float = 200.0,
) -> Path:
    """Extract a template ZIP into ``dest`` and return the folder holding ``data.json``.

    Args:
        zip_path: the archive.
        dest: extraction folder; created if missing. Existing files are never overwritten.
        max_entries: most entries the archive may list.
        max_total_bytes: most uncompressed bytes, declared and actually written.
        max_ratio: largest uncompressed/compressed ratio of any entry of 1 MB or more.

    Returns:
        ``dest`` when ``data.json`` is at the root, else ``dest/<container folder>``.

    Raises:
        InvalidTemplate: not a ZIP; too many entries; an absolute, ``..``, backslash or
            drive-letter path; a symlink, device, FIFO or socket entry; an encrypted or
            duplicated entry; declared or real size over the limit; a ZIP-bomb ratio; no
            ``data.json`` at the root or in one top-level folder; a corrupt entry. Nothing
            stays behind under ``dest`` when it is raised.
    """
    with _open(zip_path) as zf:
        entries = _inspect(zf, max_entries, max_total_bytes, max_ratio)
        root_parts = _template_root(entries)
        # The outermost folder this call creates, so a failure removes it and nothing more.
        created_top = next((p for p in (*reversed(dest.parents), dest) if not p.exists()), None)
        dest.mkdir(parents=True, exist_ok=True)
        base = dest.resolve()
        created: list[Path] = []
        try:
            _extract_all(zf, entries, base, created, max_total_bytes)
        except BaseException:
            _remove(created)
            if created_top is not None:
                shutil.rmtree(created_top, ignore_errors=True)
            raise
    return dest.joinpath(*root_parts)


def _inside(base: Path, target: Path) -> Path:
    resolved = target.resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise InvalidTemplate(
            f"archive entry would be written outside the template folder: {target}"
        )
    return resolved


def _mkdirs(base: Path, parts: tuple[str, ...], created: list[Path]) -> Path:
    current = base
    for part in parts:
        current = _inside(base, current / part)
        if not current.exists():
            current.mkdir()
            created.append(current)
        elif not current.is_dir():
            raise InvalidTemplate(f"archive path {'/'.join(parts)!r} clashes with a file")
    return current


def _extract_all(
    zf: zipfile.ZipFile,
    entries: list[_Entry],
    base: Path,
    created: list[Path],
    max_total_bytes: int,
) -> None:
    written_total = 0
    for entry in entries:
        if entry.is_dir:
            _mkdirs(base, entry.parts, created)
            continue
        parent = _mkdirs(base, entry.parts[:-1], created)
        target = _inside(base, parent / entry.parts[-1])
        name = entry.info.filename
        declared = entry.info.file_size
        try:
            # "xb": never follow or replace something already there.
            with zf.open(entry.info) as src, open(target, "xb") as out:
                created.append(target)
                written = 0
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    written_total += len(chunk)
                    if written > declared:
                        raise InvalidTemplate(
                            f"archive entry {name!r} holds more data than its header declares"
                        )
                    if written_total > max_total_bytes:
                        raise InvalidTemplate(
                            f"the archive's uncompressed size exceeds the limit of "
                            f"{_human(max_total_bytes)}"
                        )
                    out.write(chunk)
        except FileExistsError as err:
            raise InvalidTemplate(f"archive entry {name!r} already exists in {base}") from err
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
            raise InvalidTemplate(f"archive entry {name!r} is corrupt ({err})") from err
        except RuntimeError as err:  # zipfile's way of saying "needs a password"
            raise InvalidTemplate(f"archive entry {name!r} cannot be read ({err})") from err


def _remove(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        except OSError:
            continue
