"""Expiring signed download URLs.

A media element or a CDN cannot send ``X-API-Key``, so a download can also be authorised by
the query ``?expires=<unix seconds>&signature=<hex>``, where the signature is
HMAC-SHA256(secret, ``"GET\\n<canonical path>\\n<expires>"``). The canonical path is
``/<kind>/<uuid>/download`` with the lower-case id, so a link works whatever case the request
uses. The secret is ``VELOCITY_SIGNING_SECRET`` or, when that is unset, 32 random bytes
generated once and kept in ``<storage dir>/signing-secret`` (every API process sharing the
storage shares it, and restarts keep issued links valid). Rotating the secret revokes every
link issued with it.

A wrong signature or an expired link is a 403 (``invalid_signature``,
``signature_expired``), checked before anything is looked up; a well-signed link to something
deleted since is a 404 like any other missing object.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Query, Request

from api.deps import SessionDep, api_key_header, current_user
from api.errors import Forbidden, NotFound
from jobs.models import Audio, Template, User
from jobs.models.render import Render
from jobs.settings import Settings

SECRET_FILE = "signing-secret"
DEFAULT_TTL_S = 3600
MAX_TTL_S = 7 * 24 * 3600
_OWNED: dict[str, Any] = {"render": Render, "template": Template, "audio": Audio}


def load_signing_secret(settings: Settings) -> bytes:
    """The HMAC key: ``settings.signing_secret``, else the persisted random one (created on
    first use with mode 0600; a concurrent creator's file wins)."""
    if settings.signing_secret:
        return settings.signing_secret.encode("utf-8")
    path = Path(settings.storage_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    value = path.read_text(encoding="ascii").strip()
    if len(value) < 32:
        raise RuntimeError(f"{path} is truncated; delete it to generate a new signing secret")
    return value.encode("ascii")


def download_path(kind: str, object_id: uuid.UUID) -> str:
    """The canonical path a signature covers."""
    return f"/{kind}/{object_id}/download"


def signature(secret: bytes, path: str, expires: int) -> str:
    """Hex HMAC-SHA256 of the method, canonical path and expiry."""
    message = f"GET\n{path}\n{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SignedUrl:
    """A relative signed URL and its expiry (unix seconds)."""

    url: str
    expires: int


def sign_download(
    secret: bytes, kind: str, object_id: uuid.UUID, ttl_s: int, now: float | None = None
) -> SignedUrl:
    """A signed download URL for ``kind``/``object_id`` valid for ``ttl_s`` seconds."""
    expires = int(now if now is not None else time.time()) + ttl_s
    path = download_path(kind, object_id)
    return SignedUrl(
        f"{path}?expires={expires}&signature={signature(secret, path, expires)}", expires
    )


def verify(secret: bytes, path: str, expires: int, given: str, now: float | None = None) -> None:
    """Accept a signature or raise.

    Raises:
        Forbidden: the signature does not match (``invalid_signature``) or the link has
            expired (``signature_expired``).
    """
    expected = signature(secret, path, expires)
    # Compare bytes: compare_digest refuses non-ASCII str, and the query is client input.
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("ascii")):
        raise Forbidden("The download link's signature is not valid", "invalid_signature")
    if expires < int(now if now is not None else time.time()):
        raise Forbidden("The download link has expired; ask for a new one", "signature_expired")


def get_signing_secret(request: Request) -> bytes:
    """The app's signing secret (set by ``create_app``; loaded here for a bare app)."""
    secret: bytes | None = getattr(request.app.state, "signing_secret", None)
    if secret is None:
        secret = load_signing_secret(request.app.state.settings)
        request.app.state.signing_secret = secret
    return secret


SecretDep = Annotated[bytes, Depends(get_signing_secret)]

_EXPIRES = Query(
    ge=0,
    le=2**53,
    description="Signed link: expiry in unix seconds (with `signature`, no X-API-Key needed)",
)
_SIGNATURE = Query(max_length=128, description="Signed link: hex HMAC-SHA256 from .../signed-url")


def key_or_signature(kind: str, param: str) -> Callable[..., Awaitable[User]]:
    """A dependency giving the user a download acts for: the ``X-API-Key`` owner, or with
    ``expires`` and ``signature`` in the query, the owner of the signed object."""
    model = _OWNED[kind]

    async def dependency(
        request: Request,
        *,
        session: SessionDep,
        secret: SecretDep,
        key: Annotated[str | None, Depends(api_key_header)],
        expires: Annotated[int | None, _EXPIRES] = None,
        signature: Annotated[str | None, _SIGNATURE] = None,
    ) -> User:
        if expires is None and signature is None:
            return await current_user(request, session, key)
        if expires is None or signature is None:
            raise Forbidden("A signed link needs both expires and signature", "invalid_signature")
        try:
            object_id = uuid.UUID(str(request.path_params[param]))
        except ValueError:
            raise NotFound(f"{kind} not found") from None
        verify(secret, download_path(kind, object_id), expires, signature)
        owner = await session.scalar(
            sa.select(User).join(model, model.user_id == User.id).where(model.id == object_id)
        )
        if owner is None:
            raise NotFound(f"{kind.capitalize()} {object_id} not found")
        return owner

    return dependency


RenderDownloadUser = Annotated[User, Depends(key_or_signature("render", "render_id"))]
TemplateDownloadUser = Annotated[User, Depends(key_or_signature("template", "template_id"))]
AudioDownloadUser = Annotated[User, Depends(key_or_signature("audio", "audio_id"))]
