"""File downloads with RFC 9110 byte ranges, streamed from disk in chunks.

Behaviour:

* ``Accept-Ranges: bytes``, a strong ``ETag`` (from the object id, size and mtime) and
  ``Last-Modified`` on every response; ``If-None-Match`` answers 304.
* ``Range: bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` answer 206 with ``Content-Range``; ends
  past the file are clamped. A syntactically invalid header or another unit is ignored (200).
* No satisfiable range: 416 with ``Content-Range: bytes */<size>``.
* Several ranges: they are merged when they overlap or touch; when one range results it is
  served as a 206, otherwise the whole file is sent with 200 (RFC 9110 lets a server ignore
  ``Range``; we do not produce ``multipart/byteranges``).
* ``If-Range`` with an ETag (strong comparison) or an HTTP-date (exact match of
  ``Last-Modified``) that does not match: the range is ignored and the full file sent (200).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

import anyio
from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from api.errors import NotFound

CHUNK = 256 * 1024


def parse_range(header: str, size: int) -> list[tuple[int, int]] | None:
    """Parse a ``Range`` header against a representation of ``size`` bytes.

    Returns:
        None when the header must be ignored (bad syntax, other unit); otherwise the list of
        satisfiable ``(first, last)`` inclusive byte positions (empty: unsatisfiable).
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[tuple[int, int]] = []
    for raw_part in spec.split(","):
        part = raw_part.strip()
        if not part:
            continue
        first_s, dash, last_s = part.partition("-")
        first_s, last_s = first_s.strip(), last_s.strip()
        if not dash or (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
            return None
        if not first_s:
            if not last_s:
                return None
            suffix = int(last_s)
            if suffix > 0 and size > 0:
                ranges.append((max(size - suffix, 0), size - 1))
            continue
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
        if last_s and last < first:
            return None
        if first < size:
            ranges.append((first, min(last, size - 1)))
    return ranges


def coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge overlapping or adjacent ranges."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _etag_matches(header: str, etag: str, *, weak_ok: bool) -> bool:
    for raw in header.split(","):
        candidate = raw.strip()
        if candidate == "*":
            return True
        if weak_ok:
            candidate = candidate.removeprefix("W/")
        if candidate == etag:
            return True
    return False


async def _stream(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        await handle.seek(start)
        remaining = length
        while remaining > 0:
            chunk = await handle.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the UTF-8 ``filename*``."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def file_response(
    request: Request, path: Path, *, filename: str, media_type: str, etag_seed: str
) -> Response:
    """Serve ``path`` honouring ``Range``, ``If-Range`` and ``If-None-Match``.

    Args:
        request: the incoming request (headers and method are read).
        path: the file on disk.
        filename: the name offered in ``Content-Disposition``.
        media_type: ``Content-Type`` of the body.
        etag_seed: a stable id of the object (its row id); size and mtime are mixed in.

    Raises:
        NotFound: the file is missing on disk.
    """
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise NotFound("The file is no longer available") from None
    size = stat.st_size
    digest = hashlib.sha256(f"{etag_seed}:{size}:{stat.st_mtime_ns}".encode()).hexdigest()
    etag = f'"{digest[:32]}"'
    last_modified = formatdate(stat.st_mtime, usegmt=True)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Last-Modified": last_modified,
        "Content-Disposition": content_disposition(filename),
    }

    if_none_match = request.headers.get("if-none-match")
    if if_none_match and _etag_matches(if_none_match, etag, weak_ok=True):
        return Response(status_code=304, headers=headers)

    start, length, status = 0, size, 200
    range_header = request.headers.get("range")
    if range_header and request.method in ("GET", "HEAD"):
        if_range = request.headers.get("if-range")
        honour = True
        if if_range:
            if_range = if_range.strip()
            if if_range.startswith(('"', "W/")):
                honour = not if_range.startswith("W/") and if_range == etag
            else:
                honour = if_range == last_modified
        ranges = parse_range(range_header, size) if honour else None
        if ranges is not None:
            if not ranges:
                return Response(
                    status_code=416,
                    headers={**headers, "Content-Range": f"bytes */{size}"},
                    media_type=media_type,
                )
            merged = coalesce(ranges)
            if len(merged) == 1:
                first, last = merged[0]
                start, length, status = first, last - first + 1, 206
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"

    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        _stream(path, start, length), status_code=status, headers=headers, media_type=media_type
    )
