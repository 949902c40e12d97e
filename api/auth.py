"""API keys: ``vel_`` + 43 url-safe characters (32 random bytes).

Only the SHA-256 of the whole key and its first 12 characters (``vel_`` + 8, the visible
prefix used to find and revoke it) are stored. Verification looks the key up by prefix and
compares digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from jobs.models import User
from jobs.store import accounts

KEY_PREFIX = "vel_"
PREFIX_LENGTH = len(KEY_PREFIX) + 8
KEY_BYTES = 32


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: show ``key`` once, store ``prefix`` and ``key_hash``."""

    key: str
    prefix: str
    key_hash: str


def hash_key(key: str) -> str:
    """SHA-256 hex digest of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> NewKey:
    """A new random API key with its prefix and hash."""
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    return NewKey(key=key, prefix=key[:PREFIX_LENGTH], key_hash=hash_key(key))


async def issue_key(session: AsyncSession, user_id: uuid.UUID) -> NewKey:
    """Generate a key for ``user_id`` and store its prefix and hash (flushes)."""
    new = generate_key()
    await accounts.add_api_key(session, user_id, new.prefix, new.key_hash)
    return new


async def authenticate(session: AsyncSession, key: str | None) -> User | None:
    """The user owning an active ``key``, or None (missing, unknown, wrong or revoked)."""
    if not key or not key.startswith(KEY_PREFIX) or len(key) < PREFIX_LENGTH + 8:
        return None
    found = await accounts.find_api_key(session, key[:PREFIX_LENGTH])
    if found is None:
        # Spend the same hashing work on unknown prefixes as on known ones.
        hmac.compare_digest(hash_key(key), "0" * 64)
        return None
    api_key, user = found
    if not hmac.compare_digest(hash_key(key), api_key.key_hash):
        return None
    if api_key.revoked_at is not None:
        return None
    return user
