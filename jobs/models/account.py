"""Accounts: users with their storage and render-time ledgers, and hashed API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from jobs.models.base import Base, CreatedMixin, IdMixin


class User(IdMixin, CreatedMixin, Base):
    """An account. Ledger columns are only ever changed by compare-and-set UPDATEs
    (``jobs.quota`` for storage, ``jobs.budget`` for render time)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    storage_quota_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    storage_used_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    storage_reserved_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    render_budget_ms: Mapped[int] = mapped_column(sa.BigInteger)
    render_used_ms: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    render_reserved_ms: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # None means "use Settings.max_concurrent_renders".
    max_concurrent_renders: Mapped[int | None] = mapped_column(sa.Integer, default=None)
    webhook_secret: Mapped[str] = mapped_column(sa.String(128))


class ApiKey(IdMixin, CreatedMixin, Base):
    """An API key, stored as the SHA-256 of the full key plus its visible prefix."""

    __tablename__ = "api_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
