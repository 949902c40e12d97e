"""Users and API keys. Key material is generated at the edge (``api.auth``); this module
stores and finds keys by prefix and hash only."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.db import updated_one
from jobs.errors import Refused
from jobs.models import ApiKey, User, utcnow
from jobs.quota import MB


class UserExists(Refused):
    """A user with that name already exists (409 ``user_exists``)."""

    def __init__(self, name: str) -> None:
        super().__init__("conflict", f"a user named {name!r} already exists", "user_exists")


async def create_user(
    session: AsyncSession,
    name: str,
    *,
    storage_quota_mb: int,
    render_budget_ms: int,
    max_concurrent_renders: int | None = None,
) -> User:
    """Create a user with the given quota (MB) and render-time budget (ms).

    Raises:
        UserExists: ``name`` is taken.
    """
    if await get_user_by_name(session, name) is not None:
        raise UserExists(name)
    user = User(
        name=name,
        storage_quota_bytes=storage_quota_mb * MB,
        storage_used_bytes=0,
        storage_reserved_bytes=0,
        render_budget_ms=render_budget_ms,
        render_used_ms=0,
        render_reserved_ms=0,
        max_concurrent_renders=max_concurrent_renders,
        webhook_secret=secrets.token_urlsafe(32),
    )
    session.add(user)
    await session.flush()
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    """The user with ``user_id`` or None."""
    return await session.get(User, user_id)


async def get_user_by_name(session: AsyncSession, name: str) -> User | None:
    """The user called ``name`` or None."""
    return (await session.execute(sa.select(User).where(User.name == name))).scalar_one_or_none()


async def list_users(session: AsyncSession) -> Sequence[User]:
    """Every user, oldest first."""
    return (await session.execute(sa.select(User).order_by(User.created_at))).scalars().all()


async def count_users(session: AsyncSession) -> int:
    """How many users exist."""
    return int((await session.execute(sa.select(sa.func.count(User.id)))).scalar_one())


async def add_api_key(
    session: AsyncSession, user_id: uuid.UUID, prefix: str, key_hash: str
) -> ApiKey:
    """Store a key's visible prefix and SHA-256 hex digest for ``user_id``."""
    key = ApiKey(user_id=user_id, prefix=prefix, key_hash=key_hash)
    session.add(key)
    await session.flush()
    return key


async def find_api_key(session: AsyncSession, prefix: str) -> tuple[ApiKey, User] | None:
    """The key with ``prefix`` (revoked or not) and its user, or None."""
    row = (
        await session.execute(
            sa.select(ApiKey, User)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.prefix == prefix)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def list_api_keys(session: AsyncSession, user_id: uuid.UUID) -> Sequence[ApiKey]:
    """Keys of ``user_id``, oldest first."""
    return (
        (
            await session.execute(
                sa.select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at)
            )
        )
        .scalars()
        .all()
    )


async def revoke_api_key(session: AsyncSession, prefix: str) -> bool:
    """Revoke the key with ``prefix``; False when no such active key exists."""
    result = await session.execute(
        sa.update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return updated_one(result)
