"""Safe extraction of template ZIPs (SPEC §9).

Every check that can be made from the central directory is made before a single byte is
written: the archive is attacker-controlled, so names, name lengths, folder depth, types,
counts, declared sizes and the compression ratio (per large entry and over the whole archive,
so thousands of small entries cannot add up to a bomb) are all refused up front. While
extracting, the bytes actually written are counted, per entry against its declared size and in
total against the caller's budget (the account's reservation), because a header can lie. On
any failure everything this call wrote is removed again, iteratively (no recursion, however
deep), so a refused upload leaves no trace. Extraction is linear in the number of entries:
each folder is created once and remembered, never re-resolved.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from renderer.errors import InvalidTemplate, StorageLimitExceeded

DATA_JSON = "data.json"
_CHUNK = 1 << 20
# A ratio check on tiny entries would only catch harmless runs of zeros in small files; the
# whole archive's ratio is checked instead once it declares this much.
_RATIO_MIN_BYTES = 1 << 20
# Folder depth, whole-path and per-name lengths: deep enough for any real template, shallow
# enough that paths stay far below PATH_MAX and file systems' 255-byte name limit.
MAX_DEPTH = 32
MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
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


@dataclass(frozen=True)
class ArchivePlan:
    """What the central directory promises, checked: ``declared_bytes`` is the sum of the
    regular files' uncompressed sizes, which extraction will not exceed."""

    entries: int
    declared_bytes: int


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


def _shown(raw: str) -> str:
    """An entry name for a message: quoted, and cut short when it is absurdly long."""
    return repr(raw) if len(raw) <= 80 else repr(raw[:60]) + f" (… {len(raw)} characters)"


def _check_lengths(raw: str, parts: tuple[str, ...], is_dir: bool) -> None:
    shown = _shown(raw)
    depth = len(parts) - (0 if is_dir else 1)
    if depth > MAX_DEPTH:
        raise InvalidTemplate(
            f"archive entry {shown} is {depth} folders deep; the limit is {MAX_DEPTH}"
        )
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidTemplate(
            f"archive entry {shown} has a path longer than {MAX_PATH_BYTES} bytes"
        )
    longest = max(parts, key=lambda p: len(p.encode("utf-8", "surrogatepass")))
    size = len(longest.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise InvalidTemplate(
            f"archive entry {shown} has a file or folder name of {size} bytes; "
            f"the limit is {MAX_NAME_BYTES}"
        )


def _check_name(info: zipfile.ZipInfo) -> tuple[tuple[str, ...], bool]:
    raw = info.filename
    shown = _shown(raw)
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
    _check_lengths(raw, parts, is_dir)
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
    folders: set[tuple[str, ...]] = set()
    total = 0
    compressed = 0
    for info in infos:
        parts, is_dir = _check_name(info)
        if _is_junk(parts):
            continue
        if parts in seen and not is_dir:
            raise InvalidTemplate(f"archive entry {_shown(info.filename)} appears more than once")
        seen.add(parts)
        entries.append(_Entry(info, parts, is_dir))
        folders.update(parts[:i] for i in range(1, len(parts) if not is_dir else len(parts) + 1))
        if not is_dir:
            total += info.file_size
            compressed += info.compress_size
    clash = next((e for e in entries if not e.is_dir and e.parts in folders), None)
    if clash is not None:
        raise InvalidTemplate(
            f"archive entry {_shown(clash.info.filename)} is both a file and a folder"
        )
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
                    f"archive entry {_shown(info.filename)} has a compression ratio of "
                    f"{ratio:.0f}:1 (limit {max_ratio:.0f}:1); it looks like a ZIP bomb"
                )
    # Many small entries, each harmless alone, can add up to a bomb.
    if total >= _RATIO_MIN_BYTES and total / max(1, compressed) > max_ratio:
        raise InvalidTemplate(
            f"the archive expands {total / max(1, compressed):.0f}-fold (to {_human(total)}; "
            f"limit {max_ratio:.0f}:1); it looks like a ZIP bomb"
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


_DEFAULT_MAX_ENTRIES = 10_000
_DEFAULT_MAX_TOTAL = 10 * 1024**3
_DEFAULT_MAX_RATIO = 200.0


def inspect_archive(
    zip_path: Path,
    *,
    max_entries: int = _DEFAULT_MAX_ENTRIES,
    max_total_bytes: int = _DEFAULT_MAX_TOTAL,
    max_ratio: float = _DEFAULT_MAX_RATIO,
) -> ArchivePlan:
    """Check a template ZIP's central directory without writing anything.

    The caller reserves ``declared_bytes`` of the account's storage before extracting (and
    passes it to ``safe_extract`` as the budget), so the quota is checked before a byte is
    written.

    Raises:
        InvalidTemplate: as ``safe_extract`` for everything the central directory shows.
    """
    with _open(zip_path) as zf:
        entries = _inspect(zf, max_entries, max_total_bytes, max_ratio)
        _template_root(entries)
    declared = sum(e.info.file_size for e in entries if not e.is_dir)
    return ArchivePlan(entries=len(entries), declared_bytes=declared)


def safe_extract(
    zip_path: Path,
    dest: Path,
    *,
    max_entries: int = _DEFAULT_MAX_ENTRIES,
    max_total_bytes: int = _DEFAULT_MAX_TOTAL,
    max_ratio: float = _DEFAULT_MAX_RATIO,
    budget_bytes: int | None = None,
) -> Path:
    """Extract a template ZIP into ``dest`` and return the folder holding ``data.json``.

    Args:
        zip_path: the archive.
        dest: extraction folder; created if missing. Existing files are never overwritten.
        max_entries: most entries the archive may list.
        max_total_bytes: most uncompressed bytes, declared and actually written.
        max_ratio: largest uncompressed/compressed ratio of any entry of 1 MB or more, and of
            the whole archive once it declares 1 MB or more.
        budget_bytes: the storage the caller reserved for the extracted files (the account's
            quota); counted against the bytes actually written, entry by entry.

    Returns:
        ``dest`` when ``data.json`` is at the root, else ``dest/<container folder>``.

    Raises:
        StorageLimitExceeded: the declared or written size passes ``budget_bytes``.
        InvalidTemplate: not a ZIP; too many entries; an absolute, ``..``, backslash or
            drive-letter path; a path more than ``MAX_DEPTH`` folders deep, longer than
            ``MAX_PATH_BYTES`` or with a name over ``MAX_NAME_BYTES``; a symlink, device,
            FIFO or socket entry; an encrypted or duplicated entry, or one that is both a
            file and a folder; declared or real size over the limit; a ZIP-bomb ratio; no
            ``data.json`` at the root or in one top-level folder; a corrupt entry. Nothing
            stays behind under ``dest`` when it is raised.
    """
    with _open(zip_path) as zf:
        entries = _inspect(zf, max_entries, max_total_bytes, max_ratio)
        root_parts = _template_root(entries)
        declared = sum(e.info.file_size for e in entries if not e.is_dir)
        if budget_bytes is not None and declared > budget_bytes:
            raise StorageLimitExceeded(
                f"the extracted template needs {_human(declared)}; only "
                f"{_human(max(budget_bytes, 0))} of storage is available"
            )
        limit = max_total_bytes if budget_bytes is None else min(max_total_bytes, budget_bytes)
        # The outermost folder this call creates, so a failure removes it and nothing more.
        created_top = next((p for p in (*reversed(dest.parents), dest) if not p.exists()), None)
        dest.mkdir(parents=True, exist_ok=True)
        base = dest.resolve()
        created: list[Path] = []
        try:
            _extract_all(zf, entries, base, created, limit, over_budget=budget_bytes is not None)
        except BaseException:
            _remove(created)
            if created_top is not None:
                remove_tree(created_top)
            raise
    return dest.joinpath(*root_parts)


def _mkdir(
    base: Path, made: dict[tuple[str, ...], Path], parts: tuple[str, ...], created: list[Path]
) -> Path:
    """The folder ``parts`` under ``base``, created once (each ancestor too) and remembered,
    so extraction stays linear in the number of entries. Folders are made with ``mkdir``
    by this call, and no entry can be a link, so nothing here can lead outside ``base``."""
    known = made.get(parts)
    if known is not None:
        return known
    parent = _mkdir(base, made, parts[:-1], created)  # depth is at most MAX_DEPTH
    current = parent / parts[-1]
    try:
        os.mkdir(current)
        created.append(current)
    except FileExistsError:
        # Only possible when ``dest`` already held something: it must be a real folder.
        mode = os.lstat(current).st_mode
        if stat.S_ISLNK(mode):
            raise InvalidTemplate(
                f"archive path {'/'.join(parts)!r} would be written outside the template "
                "folder through a link already there"
            ) from None
        if not stat.S_ISDIR(mode):
            raise InvalidTemplate(f"archive path {'/'.join(parts)!r} clashes with a file") from None
    made[parts] = current
    return current


def _extract_all(
    zf: zipfile.ZipFile,
    entries: list[_Entry],
    base: Path,
    created: list[Path],
    max_total_bytes: int,
    *,
    over_budget: bool,
) -> None:
    written_total = 0
    made: dict[tuple[str, ...], Path] = {(): base}
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for entry in entries:
        if entry.is_dir:
            _mkdir(base, made, entry.parts, created)
            continue
        parent = _mkdir(base, made, entry.parts[:-1], created)
        target = parent / entry.parts[-1]
        name = _shown(entry.info.filename)
        declared = entry.info.file_size
        try:
            # O_EXCL | O_NOFOLLOW: never follow or replace something already there.
            fd = os.open(target, flags, 0o644)
            created.append(target)
            with zf.open(entry.info) as src, os.fdopen(fd, "wb") as out:
                written = 0
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    written_total += len(chunk)
                    if written > declared:
                        raise InvalidTemplate(
                            f"archive entry {name} holds more data than its header declares"
                        )
                    if written_total > max_total_bytes:
                        raise (StorageLimitExceeded if over_budget else InvalidTemplate)(
                            f"the archive's uncompressed size exceeds the limit of "
                            f"{_human(max_total_bytes)}"
                        )
                    out.write(chunk)
        except FileExistsError as err:
            raise InvalidTemplate(f"archive entry {name} already exists in the folder") from err
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
            raise InvalidTemplate(f"archive entry {name} is corrupt ({err})") from err
        except RuntimeError as err:  # zipfile's way of saying "needs a password"
            raise InvalidTemplate(f"archive entry {name} cannot be read ({err})") from err
        except OSError as err:
            if err.errno in (errno.ENAMETOOLONG, errno.ELOOP, errno.EILSEQ, errno.EINVAL):
                raise InvalidTemplate(
                    f"archive entry {name} cannot be stored here ({os.strerror(err.errno)})"
                ) from err
            raise


def _remove(created: list[Path]) -> None:
    for path in reversed(created):
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        except OSError:
            continue


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything under it, iteratively: however deep the tree, no
    ``RecursionError`` (Python 3.11's ``shutil.rmtree`` and ``os.walk`` recurse per level).
    Links are removed, never followed; errors on single entries are ignored."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
    except FileNotFoundError:
        return
    except OSError:
        return
    stack: list[tuple[str, bool]] = [(str(path), False)]
    while stack:
        folder, listed = stack.pop()
        if listed:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
            continue
        stack.append((folder, True))
        try:
            with os.scandir(folder) as it:
                children = list(it)
        except OSError:
            continue
        for child in children:
            try:
                if child.is_dir(follow_symlinks=False):
                    stack.append((child.path, False))
                else:
                    os.unlink(child.path)
            except OSError:
                continue
