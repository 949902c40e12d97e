"""Request dependencies: settings, database, unit-of-work session, current user, admin.

``SessionDep`` is function-scoped: the session commits (and sends its outbox) right after the
path function returns, before the response goes out, so a client that sees an id can always
read it back. On an error the session rolls back.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import authenticate
from api.errors import Forbidden, InsufficientStorage, Unauthorized
from jobs.db import Database
from jobs.models import User
from jobs.settings import Settings
from jobs.storage import Storage

api_key_header = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKeyAuth",
    auto_error=False,
    description="Your API key (`vel_...`), in the X-API-Key header (not Authorization)",
)
admin_key_header = APIKeyHeader(
    name="X-Admin-Key",
    scheme_name="AdminKeyAuth",
    auto_error=False,
    description="VELOCITY_ADMIN_KEY",
)


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Database:
    """The app's database."""
    db: Database = request.app.state.db
    return db


def get_storage(request: Request) -> Storage:
    """The app's storage root."""
    storage: Storage = request.app.state.storage
    return storage


async def get_session(db: Annotated[Database, Depends(get_db)]) -> AsyncIterator[AsyncSession]:
    """A unit of work for the request: commit after the handler, roll back on error."""
    async with db.session() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
StorageDep = Annotated[Storage, Depends(get_storage)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def current_user(
    request: Request, session: SessionDep, key: Annotated[str | None, Depends(api_key_header)]
) -> User:
    """The user of the ``X-API-Key`` header.

    Raises:
        Unauthorized: the header is missing, or the key is unknown or revoked.
    """
    if not key:
        if request.headers.get("authorization", "").lower().startswith("bearer"):
            # Generated clients often default to a Bearer token.
            raise Unauthorized(
                "Send the API key in the X-API-Key header; Authorization: Bearer is not used",
                "missing_api_key",
            )
        raise Unauthorized("Missing X-API-Key header", "missing_api_key")
    user = await authenticate(session, key.strip())
    if user is None:
        raise Unauthorized("Invalid or revoked API key", "invalid_api_key")
    return user


UserDep = Annotated[User, Depends(current_user)]


async def admin(
    settings: SettingsDep, key: Annotated[str | None, Depends(admin_key_header)]
) -> None:
    """Allow the request only with ``X-Admin-Key`` equal to ``VELOCITY_ADMIN_KEY``.

    Raises:
        Forbidden: the admin API is disabled (no admin key configured).
        Unauthorized: the header is missing or wrong.
    """
    if not settings.admin_key:
        raise Forbidden("The admin API is disabled: set VELOCITY_ADMIN_KEY", "admin_disabled")
    if not key or not hmac.compare_digest(key.encode(), settings.admin_key.encode()):
        raise Unauthorized("Missing or invalid X-Admin-Key header", "invalid_admin_key")


AdminDep = Depends(admin)


def check_free_space(settings: Settings, storage: Storage, what: str = "renders") -> None:
    """Refuse new work while the storage filesystem is below ``VELOCITY_MIN_FREE_MB``.

    Raises:
        InsufficientStorage: 507 ``storage_full`` (with ``Retry-After``).
    """
    floor = settings.min_free_mb * 1024 * 1024
    if floor and storage.free_bytes() < floor:
        raise InsufficientStorage(
            f"The server is low on storage and accepts no new {what} for now; retry later",
            "storage_full",
            headers={"Retry-After": "60"},
        )


async def require_free_space(
    settings: Annotated[Settings, Depends(get_settings)],
    storage: Annotated[Storage, Depends(get_storage)],
) -> None:
    """``check_free_space`` as a route dependency (``POST /render``, ``/render/batch``)."""
    check_free_space(settings, storage)
