"""Integration fixtures: real PostgreSQL/Redis (``tests.servers``), a per-test settings
factory, and the embedded service (SQLite + StubBroker worker threads) behind an
``httpx.AsyncClient`` on the ASGI app with its lifespan running."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from jobs.queues import LIBRARY_QUEUE
from jobs.settings import Settings
from tests.servers import (  # noqa: F401 (fixtures re-exported for this package)
    clean_redis,
    pg_database,
    pg_url,
    postgres_server,
    redis_server,
    redis_url,
    service_env,
)

ADMIN_KEY = "test-admin-key"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    """Settings isolated in ``tmp_path`` (own SQLite file and storage), env and .env ignored."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'velocity.db'}",
            "broker_url": None,
            "storage_dir": tmp_path / "storage",
            "admin_key": ADMIN_KEY,
            "worker_threads": 2,
            "encoder": "software",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@dataclass
class Embedded:
    """The embedded service under test."""

    client: httpx.AsyncClient
    settings: Settings
    service: Any

    async def user(self, name: str | None = None, *, quota_bytes: int | None = None) -> str:
        """Create a user and return its API key."""
        from api.auth import issue_key
        from jobs.models import User
        from jobs.store.accounts import create_user

        async with self.service.db.session() as s:
            user = await create_user(
                s,
                name or f"u{uuid.uuid4().hex[:8]}",
                storage_quota_mb=100,
                render_budget_ms=600_000,
            )
            if quota_bytes is not None:
                await s.execute(
                    sa.update(User)
                    .where(User.id == user.id)
                    .values(storage_quota_bytes=quota_bytes)
                )
            return (await issue_key(s, user.id)).key

    async def drain(self, queue: str = LIBRARY_QUEUE) -> None:
        """Wait until every message of ``queue`` has been processed."""
        join = functools.partial(self.service.broker.join, queue, timeout=180_000)
        await anyio.to_thread.run_sync(join)

    def storage_files(self, kind: str) -> list[Path]:
        """Regular files stored under ``kind`` (templates, audio, ...)."""
        root = self.service.storage.root / kind
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def tmp_files(self) -> list[Path]:
        """Anything left in storage/tmp."""
        root = self.service.storage.root / "tmp"
        return sorted(root.iterdir()) if root.exists() else []


@pytest.fixture
def embedded_factory(
    settings_factory: Callable[..., Settings],
) -> Callable[..., Any]:
    """``async with embedded_factory(**settings) as svc`` runs the embedded service."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Embedded]:
        from api.app import build_service, create_app
        from jobs.db import run_migrations

        settings = settings_factory(**overrides)
        run_migrations(settings.database_url)
        service = build_service(settings)
        app = create_app(service=service, run_worker=True, recover=True)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://velocity") as c:
                yield Embedded(c, settings, service)

    return make


@pytest.fixture
async def embedded(embedded_factory: Callable[..., Any]) -> AsyncIterator[Embedded]:
    """The embedded service with default test settings."""
    async with embedded_factory() as svc:
        yield svc
