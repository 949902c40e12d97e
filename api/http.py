"""HTTP details every client relies on, as small ASGI middlewares installed by the app factory.

* ``BodySizeLimit``: a request body that is not a multipart upload (JSON, in practice) larger
  than ``VELOCITY_MAX_JSON_BODY_BYTES`` answers 413 ``payload_too_large``. A declared
  ``Content-Length`` is refused before anything is read; a chunked body is read up to the
  limit and no further, so memory stays bounded whatever is sent. Multipart uploads stream to
  disk under their own limit (``api.uploads``).
* ``TrailingSlash``: ``/template/all/`` is ``/template/all`` (no 307 with an empty body).
* ``HeadAsGet``: ``HEAD`` is answered wherever ``GET`` is (RFC 9110 section 9.3.2): the
  request is routed as a GET and the body is dropped, headers (``Content-Length``,
  ``Accept-Ranges``, ``ETag``...) kept.
* CORS (Starlette's middleware) when ``VELOCITY_CORS_ORIGINS`` is set: preflight for every
  route with ``X-API-Key`` and ``Range`` allowed, and the download headers exposed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from api.errors import error_body
from jobs.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CORS_ALLOW_HEADERS = [
    "X-API-Key",
    "X-Admin-Key",
    "Content-Type",
    "Range",
    "If-Range",
    "If-None-Match",
    "If-Modified-Since",
]
CORS_EXPOSE_HEADERS = [
    "Content-Range",
    "Content-Length",
    "Accept-Ranges",
    "Content-Disposition",
    "ETag",
    "Last-Modified",
    "Retry-After",
]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _send_error(send: Send, status: int, detail: str, code: str) -> None:
    body = json.dumps(error_body(detail, code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 for non-multipart request bodies over ``max_bytes``, reading at most that much."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return (
            f"Request body exceeds the maximum of {self.max_bytes} bytes for JSON bodies; "
            "send files as multipart/form-data to an upload endpoint"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        ctype = (_header(scope, b"content-type") or "").lower()
        if ctype.startswith("multipart/form-data"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await _send_error(send, 413, self._too_large(), "payload_too_large")
            return
        # Read the body now, never more than the limit, and replay it to the app.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                # Client went away: let the app see the disconnect.
                await self.app(scope, _replay(chunks, message, receive), send)
                return
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_bytes:
                await _send_error(send, 413, self._too_large(), "payload_too_large")
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if _LONG_DIGITS.search(body):
            field = _huge_number_field(body)
            if field is not None:
                await _send_error(send, 400, field, "invalid_request")
                return
        await self.app(scope, _replay([body], None, receive), send)


# Python refuses to parse integers longer than this (CVE-2020-10735), and FastAPI would then
# answer "There was an error parsing the body" without saying where.
_MAX_DIGITS = 4300
_LONG_DIGITS = re.compile(rb"\d{%d,}" % (_MAX_DIGITS + 1))


class _Huge:
    def __init__(self, digits: int) -> None:
        self.digits = digits


class _HugeNumber(Exception):
    def __init__(self, key: str, digits: int) -> None:
        super().__init__(key)
        self.key, self.digits = key, digits


def _huge_in(value: Any) -> _Huge | None:
    if isinstance(value, _Huge):
        return value
    if isinstance(value, list):
        return next((h for h in map(_huge_in, value) if h is not None), None)
    return None


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    for key, value in pairs:
        huge = _huge_in(value)
        if huge is not None:
            raise _HugeNumber(key, huge.digits)
    return dict(pairs)


def _huge_number_field(body: bytes) -> str | None:
    """The message naming the field of ``body`` that holds a too-long number, if any."""
    try:
        json.loads(
            body,
            parse_int=lambda text: int(text) if len(text) <= _MAX_DIGITS else _Huge(len(text)),
            object_pairs_hook=_pairs,
        )
    except _HugeNumber as exc:
        return f"body field '{exc.key[:64]}': a number of {exc.digits} digits is out of range"
    except ValueError:
        return None
    return None


def _replay(chunks: list[bytes], last: Message | None, upstream: Receive) -> Receive:
    body = b"".join(chunks)
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if last is not None:
                return last
            return {"type": "http.request", "body": body, "more_body": False}
        # After the body, the only message left is the client going away: wait for it.
        return await upstream()

    return receive


class TrailingSlash:
    """Serve ``/a/b/`` as ``/a/b`` instead of redirecting."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                stripped = path.rstrip("/") or "/"
                scope = dict(scope)
                scope["path"] = stripped
                scope["raw_path"] = stripped.encode("utf-8")
        await self.app(scope, receive, send)


class HeadAsGet:
    """Answer ``HEAD`` as the ``GET`` of the same URL without its body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope["method"] = "GET"
        finished = False

        async def send_headers_only(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body" and not finished:
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app(scope, receive, send_headers_only)


def cors_origins(settings: Settings) -> list[str]:
    """The allowed origins of ``VELOCITY_CORS_ORIGINS`` (comma-separated; ``*`` any)."""
    raw = settings.cors_origins or ""
    return [o.strip().rstrip("/") for o in raw.split(",") if o.strip()]


def install_http_middleware(app: FastAPI, settings: Settings) -> None:
    """Add the middlewares above; call last in the factory (the last added runs first)."""
    app.router.redirect_slashes = False
    app.add_middleware(HeadAsGet)
    app.add_middleware(TrailingSlash)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_json_body_bytes)
    origins = cors_origins(settings)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            allow_credentials=False,
            max_age=600,
        )
