"""50 concurrent ``POST /render`` never overspend the render-time budget nor exceed the
concurrency limit, on SQLite (embedded default) and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from jobs.db import run_migrations
from jobs.models import JobStatus, User
from jobs.models.render import Render
from jobs.renders.submission import MIN_ESTIMATE_MS
from tests.integration.test_render_support import (
    add_template,
    add_user,
    demo_template,
    make_settings,
    render_body,
)

pytestmark = pytest.mark.integration

REQUESTS = 50


async def _scenario(
    tmp: Path, database_url: str, *, budget_ms: int, max_concurrent: int
) -> tuple[Counter[int], User, int]:
    from api.app import build_service, create_app

    settings = make_settings(tmp, database_url)
    run_migrations(settings.database_url)
    svc = build_service(settings)
    try:
        uid, key = await add_user(
            svc.db, "racer", budget_ms=budget_ms, max_concurrent=max_concurrent
        )
        tid = await add_template(svc.db, svc.storage, uid, demo_template(30, tmp.parent))
        app = create_app(service=svc, run_worker=False, recover=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def one(i: int) -> int:
                response = await client.post(
                    "/render", json=render_body(tid, f"r{i}"), headers={"X-API-Key": key}
                )
                return response.status_code

            codes = Counter(await asyncio.gather(*(one(i) for i in range(REQUESTS))))
        async with svc.db.session() as s:
            user = await s.scalar(sa.select(User).where(User.id == uid))
            active = await s.scalar(
                sa.select(sa.func.count())
                .select_from(Render)
                .where(Render.user_id == uid, Render.status == JobStatus.Pending)
            )
        assert user is not None
        return codes, user, int(active or 0)
    finally:
        await svc.db.dispose()


def _database_url(kind: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp}/race.db"
    return str(request.getfixturevalue("pg_database"))


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_concurrent_reservations_never_overspend_the_budget(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fits = 7
    work = tmp_path / uuid.uuid4().hex[:6]
    work.mkdir()
    codes, user, active = asyncio.run(
        _scenario(
            work,
            _database_url(kind, work, request),
            budget_ms=fits * MIN_ESTIMATE_MS + MIN_ESTIMATE_MS // 2,
            max_concurrent=REQUESTS,
        )
    )
    assert codes == Counter({200: fits, 402: REQUESTS - fits})
    assert active == fits
    assert user.render_reserved_ms == fits * MIN_ESTIMATE_MS
    assert user.render_used_ms + user.render_reserved_ms <= user.render_budget_ms


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_concurrent_submissions_never_exceed_the_concurrency_limit(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    limit = 5
    work = tmp_path / uuid.uuid4().hex[:6]
    work.mkdir()
    codes, user, active = asyncio.run(
        _scenario(
            work,
            _database_url(kind, work, request),
            budget_ms=10_000_000,
            max_concurrent=limit,
        )
    )
    assert codes == Counter({200: limit, 429: REQUESTS - limit})
    assert active == limit
    # Refused requests left no reservation behind.
    assert user.render_reserved_ms == limit * MIN_ESTIMATE_MS
    assert user.storage_reserved_bytes > 0
