"""Streaming multipart uploads: the body goes to a temp file while its bytes are counted.

The request body is fed chunk by chunk (``request.stream()``) to python-multipart's
incremental parser; the ``file`` part is appended to a temporary file, other form fields
(small) are kept in memory. Memory stays bounded by one network chunk whatever the upload
size. Limits are enforced while streaming: past ``max_bytes`` → 413, past the account's free
quota → 400 ``storage_quota_exceeded``; on any failure the temp file is removed.
Deleting goes the other way round: ``commit_and_remove`` removes stored files only once the
rows are gone for good.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from api.deps import check_free_space
from api.errors import BadRequest, InsufficientStorage, PayloadTooLarge
from jobs.faults import is_disk_full

MAX_FIELD_BYTES = 64 * 1024
_SLACK = 1024 * 1024  # multipart framing allowance for the Content-Length pre-check


@dataclass
class ReceivedFile:
    """The uploaded file, complete on disk at ``path``."""

    path: Path
    filename: str
    size: int
    content_type: str | None


@dataclass
class ReceivedForm:
    """The file part and the other (text) fields of a multipart form."""

    file: ReceivedFile | None
    fields: dict[str, str] = field(default_factory=dict)


def unknown_form_fields(unknown: Sequence[str], known: Sequence[str]) -> str:
    """The message for form fields an upload endpoint does not take."""
    from api.schemas.common import suggest_field

    names = ["file", *known]
    parts = []
    for name in unknown[:5]:
        text = name[:64]
        hint = suggest_field(text, names)
        parts.append(f"'{text}' (did you mean '{hint}'?)" if hint else f"'{text}'")
    return f"unknown form field {', '.join(parts)}; known fields: {', '.join(names)}"


def quota_error(needed: int, available: int) -> BadRequest:
    """The 400 for an upload larger than what the account has left."""
    return BadRequest(
        f"Storage quota exceeded: the upload needs {needed / 1e6:.1f} MB but only "
        f"{max(available, 0) / 1e6:.1f} MB are available. Delete templates, audio or renders, "
        "or ask an admin for a larger quota.",
        "storage_quota_exceeded",
    )


def storage_full() -> InsufficientStorage:
    """The server's disk filled while receiving an upload (507, nothing kept)."""
    return InsufficientStorage(
        "The server ran out of storage while receiving the upload; nothing was kept. Retry later",
        "storage_full",
        headers={"Retry-After": "60"},
    )


def too_large(max_bytes: int) -> PayloadTooLarge:
    """The 413 for an upload past the size limit."""
    return PayloadTooLarge(
        f"File size exceeds the maximum allowed ({max_bytes} bytes)", "payload_too_large"
    )


class _Collector:
    def __init__(self, file_field: str, tmp_path: Path) -> None:
        self.file_field = file_field
        self.tmp_path = tmp_path
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[str, bytes] = {}
        self.part_name: str | None = None
        self.part_filename: str | None = None
        self.part_content_type: str | None = None
        self.in_file = False
        self.file_seen = False
        self.filename = ""
        self.content_type: str | None = None
        self.pending: list[bytes] = []
        self.fields: dict[str, bytearray] = {}
        self.field_bytes = 0

    def on_part_begin(self) -> None:
        self.headers = {}
        self.part_name = self.part_filename = self.part_content_type = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.decode("latin-1").lower()] = self.header_value
        self.header_field = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get("content-disposition", b""))
        name = options.get(b"name")
        filename = options.get(b"filename")
        self.part_name = name.decode("utf-8", "replace") if name is not None else None
        self.part_filename = filename.decode("utf-8", "replace") if filename is not None else None
        ctype = self.headers.get("content-type")
        self.part_content_type = ctype.decode("latin-1") if ctype else None
        if self.part_name == self.file_field:
            if self.file_seen:
                raise BadRequest(f"Send a single '{self.file_field}' part", "invalid_request")
            self.file_seen = True
            self.in_file = True
            self.filename = self.part_filename or ""
            self.content_type = self.part_content_type
        elif self.part_filename is not None:
            # A file under another name would otherwise be read as a text field and refused
            # as "too large", which hides the real mistake.
            raise BadRequest(
                f"Send the file in the form field '{self.file_field}' "
                f"(got a file in '{self.part_name}')",
                "invalid_request",
            )
        elif self.part_name is not None:
            self.fields.setdefault(self.part_name, bytearray())

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.pending.append(data[start:end])
        elif self.part_name is not None:
            self.field_bytes += end - start
            if self.field_bytes > MAX_FIELD_BYTES:
                raise BadRequest("Form fields other than the file are too large", "invalid_request")
            self.fields[self.part_name] += data[start:end]

    def on_part_end(self) -> None:
        self.in_file = False


async def receive_multipart(
    request: Request,
    tmp_path: Path,
    *,
    max_bytes: int,
    available_bytes: int | None = None,
    file_field: str = "file",
) -> ReceivedForm:
    """Stream a ``multipart/form-data`` body, writing the ``file_field`` part to ``tmp_path``.

    Args:
        request: the request whose body has not been read yet.
        tmp_path: where the file part is written (same filesystem as its final place).
        max_bytes: largest accepted file.
        available_bytes: the account's free quota at the start; exceeding it aborts early
            (the caller still reserves atomically afterwards).
        file_field: name of the file part.

    Raises:
        BadRequest: not multipart, malformed, or (code ``storage_quota_exceeded``) over quota.
        PayloadTooLarge: the file is larger than ``max_bytes``.
    """
    boundary = _boundary(request, file_field)
    length = request.headers.get("content-length")
    # What the upload will amount to: the declared length (file plus a little multipart
    # framing) when given, so a quota message quotes the real size, not what arrived so far.
    declared = int(length) if length and length.isdigit() else 0
    if declared > max_bytes + _SLACK:
        raise too_large(max_bytes)

    collector = _Collector(file_field, tmp_path)
    handle = await anyio.open_file(tmp_path, "wb")
    try:
        try:
            written = await _write_parts(
                request,
                _parser(collector, boundary),
                collector,
                handle,
                limits=(max_bytes, available_bytes, declared),
            )
        finally:
            await handle.aclose()
        if not collector.file_seen:
            raise BadRequest(f"Missing form field '{file_field}' with the file", "invalid_request")
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fields = {k: v.decode("utf-8", "replace") for k, v in collector.fields.items()}
    received = ReceivedFile(tmp_path, collector.filename, written, collector.content_type)
    return ReceivedForm(received, fields)


def _boundary(request: Request, file_field: str) -> bytes:
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BadRequest(
            f"Send the upload as multipart/form-data with a '{file_field}' field",
            "invalid_request",
        )
    return boundary


def _parser(collector: _Collector, boundary: bytes) -> MultipartParser:
    callbacks = {
        name: getattr(collector, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    return MultipartParser(boundary, callbacks)  # type: ignore[arg-type]


async def _write_parts(
    request: Request,
    parser: MultipartParser,
    collector: _Collector,
    handle: Any,
    *,
    limits: tuple[int, int | None, int],
) -> int:
    """Feed the body to ``parser`` and write the file part to ``handle``; the bytes written.

    ``limits`` is (largest file, free quota or None, declared length). A full disk does not
    stop the reading: the answer (507) goes out once the body is drained."""
    max_bytes, available_bytes, declared = limits
    written = 0
    disk_full: OSError | None = None
    async for chunk in request.stream():
        if not chunk:
            continue
        try:
            parser.write(chunk)
        except (BadRequest, PayloadTooLarge):
            raise
        except Exception as exc:
            raise BadRequest("The multipart body is malformed", "invalid_request") from exc
        if not collector.pending:
            continue
        data = b"".join(collector.pending)
        collector.pending.clear()
        written += len(data)
        if written > max_bytes:
            raise too_large(max_bytes)
        if available_bytes is not None and written > available_bytes:
            raise quota_error(max(written, declared), available_bytes)
        if disk_full is None:
            try:
                await handle.write(data)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                disk_full = exc
    if disk_full is not None:
        raise storage_full() from disk_full
    parser.finalize()
    return written


def display_name(filename: str, fallback: str) -> str:
    """A client file name reduced to its last path component (for display only)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(c for c in name if c.isprintable())
    return (name or fallback)[:255]


async def stream_upload(
    request: Request, session: Any, user: Any, settings: Any, storage: Any
) -> ReceivedForm:
    """End the session's transaction, then stream the body to a temp file in storage.

    The early quota check uses the user's row as loaded by authentication; the atomic
    reservation happens afterwards (``reserve_upload``).
    """
    check_free_space(settings, storage, "uploads")
    available = user.storage_quota_bytes - user.storage_used_bytes - user.storage_reserved_bytes
    # Nothing may hold a database transaction while a large body is streaming in.
    await session.commit()
    tmp = storage.tmp_path()
    return await receive_multipart(
        request, tmp, max_bytes=settings.max_upload_bytes, available_bytes=max(available, 0)
    )


async def reserve_upload(session: Any, user: Any, received: ReceivedFile) -> None:
    """Atomically reserve storage for the received file, or remove it and refuse.

    Raises:
        BadRequest: ``storage_quota_exceeded`` (the temp file is deleted first).
    """
    from jobs.quota import reserve_storage

    if not await reserve_storage(session, user.id, received.size):
        received.path.unlink(missing_ok=True)
        await session.refresh(user)
        available = user.storage_quota_bytes - user.storage_used_bytes - user.storage_reserved_bytes
        raise quota_error(received.size, available)


@dataclass
class Upload:
    """A received upload on its way into storage (see ``receive_upload``)."""

    form: ReceivedForm
    file: ReceivedFile
    session: Any
    storage: Any
    final_path: Path | None = None

    async def keep(self, relative: str) -> None:
        """Move the file to its stored path ``relative`` and commit the session (rows and
        outbox): the last step of an accepted upload."""
        self.final_path = self.storage.move_into_place(self.file.path, relative)
        await self.session.commit()


@asynccontextmanager
async def receive_upload(
    request: Request,
    session: Any,
    user: Any,
    settings: Any,
    storage: Any,
    *,
    fields: Sequence[str] = (),
) -> AsyncIterator[Upload]:
    """Stream an upload (``stream_upload``) and hold it while the caller accepts it.

    The block checks the file, reserves its storage (``reserve_upload``), inserts its rows,
    enqueues its job and ends with ``upload.keep(relative)``. Whatever fails inside the
    block, neither the temp file nor the moved file is left behind.

    ``fields`` are the text form fields the endpoint takes besides the file; any other is
    refused, naming it and the known field it resembles, as in JSON bodies.

    Raises:
        BadRequest: ``invalid_file_format`` for an empty file, ``invalid_request`` for an
            unknown form field, and as ``stream_upload``.
        PayloadTooLarge: as ``stream_upload``.
    """
    form = await stream_upload(request, session, user, settings, storage)
    assert form.file is not None
    upload = Upload(form, form.file, session, storage)
    try:
        unknown = [name for name in form.fields if name not in fields]
        if unknown:
            raise BadRequest(unknown_form_fields(unknown, list(fields)), "invalid_request")
        if upload.file.size == 0:
            raise BadRequest("The uploaded file is empty", "invalid_file_format")
        yield upload
    except BaseException:
        upload.file.path.unlink(missing_ok=True)
        if upload.final_path is not None:
            upload.final_path.unlink(missing_ok=True)
        raise


async def commit_and_remove(session: Any, storage: Any, paths: list[str]) -> None:
    """Commit a delete, then remove its stored ``paths``: a delete that fails to commit keeps
    its files."""
    await session.commit()
    for path in paths:
        storage.remove(path)
