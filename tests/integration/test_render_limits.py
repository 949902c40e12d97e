"""Quotas and budgets cannot be exceeded whatever the settings (issue 6, items 4 and 7).

- A CQP ``qp: 0`` render reserves bitrate x duration but writes far more: it may grow into
  the account's free space, and when it would pass the quota it fails with
  ``storage_quota_exceeded``, its partial files are removed and nothing is booked; chunked
  renders too.
- The render-time budget is enforced at frame granularity, set-up included. These tests
  drive the worker's job function with a fake clock (a port we own) so the time a render
  "takes" does not depend on the machine: everything else (SQLite, storage, the renderer,
  x264) is real.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobs.db import Database
from jobs.models import User
from jobs.models.render import RenderChunk
from jobs.renders.attempt import BUDGET_REASON
from jobs.renders.chunked import chunk_job, finalize_job
from jobs.renders.single import render_job
from tests.integration.test_render_support import (
    LiveServer,
    RenderEnv,
    api_key,
    client_for,
    render_body,
    render_row,
    run,
    tmp_render_files,
    user_row,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.integration

_h = api_key
# Lossless at 640x360 (the 64x36 demo drawn 10x larger): about 390 KB for 30 frames, while
# the reservation (200 kb/s for one second, plus audio and container) is about 115 KB.
QP0 = {"bitrate": 200_000, "rc": 2, "qp": 0, "gop": 5, "preset": 5, "res": [640, 360]}
SMALL_QUOTA = 200_000


@pytest.fixture(scope="module")
def template_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limit-templates")


@pytest.fixture
def env(tmp_path: Path, template_cache: Path) -> Iterator[tuple[RenderEnv, Any]]:
    e = RenderEnv(tmp_path, template_cache, chunk_frames=0)
    with LiveServer(e.app) as server, client_for(server.url) as client:
        yield e, client


@pytest.fixture
def chunked_env(tmp_path: Path, template_cache: Path) -> Iterator[tuple[RenderEnv, Any]]:
    e = RenderEnv(tmp_path, template_cache, chunk_frames=10)
    with LiveServer(e.app) as server, client_for(server.url) as client:
        yield e, client


@pytest.fixture(params=["sqlite", "postgresql"])
def idle_env(
    request: pytest.FixtureRequest, tmp_path: Path, template_cache: Path
) -> Iterator[tuple[RenderEnv, Any]]:
    """No worker threads: the test runs the worker's job function itself, on SQLite and on
    a real PostgreSQL server. The fake clock is read where the frames are drawn, so the
    renderer runs on the worker's thread here (render_subprocess=False); in a child process
    the parent's clock sets the child's stop flag instead (tests/unit/test_child.py)."""
    url = None if request.param == "sqlite" else str(request.getfixturevalue("pg_database"))
    e = RenderEnv(
        tmp_path,
        template_cache,
        chunk_frames=0,
        worker=False,
        database_url=url,
        render_subprocess=False,
    )
    with LiveServer(e.app) as server, client_for(server.url) as client:
        yield e, client


def _set_quota(db: Database, user_id: uuid.UUID, quota_bytes: int) -> None:
    async def go() -> None:
        async with db.session() as s:
            await s.execute(
                sa.update(User).where(User.id == user_id).values(storage_quota_bytes=quota_bytes)
            )

    run(go())


def _rendered_files(e: RenderEnv) -> list[Path]:
    renders = e.storage.root / "renders"
    return sorted(p for p in renders.rglob("*") if p.is_file()) if renders.is_dir() else []


def _assert_quota_refusal(e: RenderEnv, uid: uuid.UUID, status: dict[str, Any]) -> None:
    assert status["status"] == "failed", status
    assert status["failureCode"] == "storage_quota_exceeded", status
    assert "storage quota" in status["reason"], status
    wait_until(lambda: not tmp_render_files(e.storage), 30, "partial outputs removed")
    assert _rendered_files(e) == []
    user = run(user_row(e.db, uid))
    assert user.storage_used_bytes == 0 and user.storage_reserved_bytes == 0
    assert user.render_reserved_ms == 0


def test_cqp_render_over_the_quota_fails_and_books_nothing(env: tuple[RenderEnv, Any]) -> None:
    e, c = env
    uid, key = e.user("lossless")
    _set_quota(e.db, uid, SMALL_QUOTA)
    tid = e.template(uid)
    response = c.post("/render", json=render_body(tid, encoderConfig=QP0), headers=_h(key))
    assert response.status_code == 200, response.text  # the estimate fits
    rid = response.json()["renderId"]
    status = wait_for(c, rid, key, {"completed", "failed", "cancelled"})
    _assert_quota_refusal(e, uid, status)
    assert f"at most {SMALL_QUOTA} bytes" in status["reason"]  # the whole quota, no more
    row = run(render_row(e.db, rid))
    assert row.size_bytes is None and row.output_path is None
    assert row.reserved_storage_bytes == 0
    user = run(user_row(e.db, uid))
    assert user.render_used_ms == row.render_time_ms  # the time it used is charged


def test_render_may_grow_into_the_free_quota(env: tuple[RenderEnv, Any]) -> None:
    e, c = env
    uid, key = e.user("roomy")
    _set_quota(e.db, uid, 1024 * 1024)
    tid = e.template(uid)
    response = c.post("/render", json=render_body(tid, encoderConfig=QP0), headers=_h(key))
    rid = response.json()["renderId"]
    status = wait_for(c, rid, key, {"completed", "failed", "cancelled"})
    assert status["status"] == "completed", status
    row = run(render_row(e.db, rid))
    user = run(user_row(e.db, uid))
    assert row.size_bytes is not None and row.size_bytes > SMALL_QUOTA  # past its estimate
    assert user.storage_used_bytes == row.size_bytes and user.storage_reserved_bytes == 0


def test_chunked_render_over_the_quota_fails_and_books_nothing(
    chunked_env: tuple[RenderEnv, Any],
) -> None:
    e, c = chunked_env
    uid, key = e.user("chunky")
    _set_quota(e.db, uid, SMALL_QUOTA)
    tid = e.template(uid)
    response = c.post("/render", json=render_body(tid, encoderConfig=QP0), headers=_h(key))
    assert response.status_code == 200, response.text
    rid = response.json()["renderId"]
    status = wait_for(c, rid, key, {"completed", "failed", "cancelled"})
    _assert_quota_refusal(e, uid, status)


def test_quota_holds_on_both_databases(idle_env: tuple[RenderEnv, Any]) -> None:
    """The worker's job function itself, so the same path runs on PostgreSQL."""
    e, c = idle_env
    uid, key = e.user("lossless-pg")
    _set_quota(e.db, uid, SMALL_QUOTA)
    tid = e.template(uid)
    response = c.post("/render", json=render_body(tid, encoderConfig=QP0), headers=_h(key))
    assert response.status_code == 200, response.text
    rid = response.json()["renderId"]
    run(render_job(e.db, e.settings, e.storage, uuid.UUID(rid)))
    status = wait_for(c, rid, key, {"completed", "failed", "cancelled"}, limit_s=10)
    _assert_quota_refusal(e, uid, status)


class StepClock:
    """A monotonic clock that moves ``step`` seconds each time it is read: the render
    "takes" a fixed time per frame and per set-up step whatever the machine. The render
    thread reads it once per frame, so ``reads`` also bounds the frames drawn."""

    def __init__(self, step: float) -> None:
        self.step, self.now, self.reads = step, 1000.0, 0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.reads += 1
            self.now += self.step
            return self.now


def _run_with_clock(e: RenderEnv, c: Any, key: str, tid: uuid.UUID, clock: StepClock) -> str:
    body = render_body(tid, encoderConfig={"bitrate": 200_000, "preset": 5})
    response = c.post("/render", json=body, headers=_h(key))
    assert response.status_code == 200, response.text
    rid: str = response.json()["renderId"]
    run(render_job(e.db, e.settings, e.storage, uuid.UUID(rid), clock=clock))
    return rid


def test_render_stops_when_its_budget_runs_out(idle_env: tuple[RenderEnv, Any]) -> None:
    e, c = idle_env
    budget_ms = 3000
    uid, key = e.user("thrifty", budget_ms=budget_ms)
    tid = e.template(uid, frames=90)
    # 100 ms per read: the budget runs out after about 30 polls, well before 90 frames.
    clock = StepClock(0.1)
    rid = _run_with_clock(e, c, key, tid, clock)
    status = wait_for(c, rid, key, {"completed", "failed", "cancelled"}, limit_s=10)
    assert status["status"] == "failed", status
    assert status["failureCode"] == "insufficient_render_budget"
    assert status["reason"] == BUDGET_REASON
    row = run(render_row(e.db, rid))
    # Stopped at the frame the budget ran out, not at the end (90 frames, 90+ reads).
    assert clock.reads < 45
    user = run(user_row(e.db, uid))
    # Charged what it used, which is all that was left (never more).
    assert row.render_time_ms == budget_ms == user.render_used_ms
    assert user.render_reserved_ms == 0 and row.reserved_render_ms == 0
    assert user.storage_used_bytes == 0 and user.storage_reserved_bytes == 0
    assert tmp_render_files(e.storage) == []


def test_set_up_time_counts_against_the_budget(idle_env: tuple[RenderEnv, Any]) -> None:
    e, c = idle_env
    budget_ms = 3000
    uid, key = e.user("slowstart", budget_ms=budget_ms)
    tid = e.template(uid)
    # Each read is 5 s later: claiming and resolving the inputs alone spend the budget.
    clock = StepClock(5.0)
    rid = _run_with_clock(e, c, key, tid, clock)
    status = wait_for(c, rid, key, {"completed", "failed", "cancelled"}, limit_s=10)
    assert status["status"] == "failed" and status["reason"] == BUDGET_REASON, status
    row = run(render_row(e.db, rid))
    assert clock.reads < 10  # refused before the first of its 30 frames
    user = run(user_row(e.db, uid))
    assert row.render_time_ms == budget_ms == user.render_used_ms
    assert user.render_reserved_ms == 0
    assert tmp_render_files(e.storage) == []


def test_render_within_its_budget_is_charged_what_it_used(
    idle_env: tuple[RenderEnv, Any],
) -> None:
    e, c = idle_env
    uid, key = e.user("steady", budget_ms=60_000)
    tid = e.template(uid)
    clock = StepClock(0.01)
    rid = _run_with_clock(e, c, key, tid, clock)
    status = wait_for(c, rid, key, {"completed", "failed", "cancelled"}, limit_s=10)
    assert status["status"] == "completed", status
    row = run(render_row(e.db, rid))
    user = run(user_row(e.db, uid))
    assert 0 < row.render_time_ms < 60_000
    assert user.render_used_ms == row.render_time_ms and user.render_reserved_ms == 0


@pytest.fixture
def idle_chunked_env(tmp_path: Path, template_cache: Path) -> Iterator[tuple[RenderEnv, Any]]:
    """Chunks of 45 frames and no worker threads: the test runs every job itself."""
    # In-thread for the fake clock, as idle_env.
    e = RenderEnv(tmp_path, template_cache, chunk_frames=45, worker=False, render_subprocess=False)
    with LiveServer(e.app) as server, client_for(server.url) as client:
        yield e, client


def _chunk_ids(db: Database, render_id: str) -> list[uuid.UUID]:
    async def go() -> list[uuid.UUID]:
        async with db.session() as s:
            rows = await s.scalars(
                sa.select(RenderChunk.id)
                .where(RenderChunk.render_id == uuid.UUID(render_id))
                .order_by(RenderChunk.index)
            )
            return list(rows)

    return run(go())  # type: ignore[no-any-return]


def test_chunked_render_stops_when_its_budget_runs_out(
    idle_chunked_env: tuple[RenderEnv, Any],
) -> None:
    e, c = idle_chunked_env
    budget_ms = 3000
    uid, key = e.user("chunk-thrift", budget_ms=budget_ms)
    tid = e.template(uid, frames=90)
    body = render_body(tid, encoderConfig={"bitrate": 200_000, "preset": 5, "gop": 15})
    response = c.post("/render", json=body, headers=_h(key))
    assert response.status_code == 200, response.text
    rid = response.json()["renderId"]
    clock = StepClock(0.1)
    run(render_job(e.db, e.settings, e.storage, uuid.UUID(rid), clock=clock))  # splits
    chunk_ids = _chunk_ids(e.db, rid)
    assert len(chunk_ids) == 2
    for chunk_id in chunk_ids:  # one worker taking them in turn
        run(chunk_job(e.db, e.settings, e.storage, chunk_id, clock=clock))
    run(finalize_job(e.db, e.settings, e.storage, uuid.UUID(rid)))
    status = wait_for(c, rid, key, {"completed", "failed", "cancelled"}, limit_s=10)
    assert status["status"] == "failed" and status["reason"] == BUDGET_REASON, status
    # Stopped inside the first chunk (about 30 reads in), not at its end (45 frames).
    assert clock.reads < 45
    row = run(render_row(e.db, rid))
    user = run(user_row(e.db, uid))
    assert row.render_time_ms == budget_ms == user.render_used_ms
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0
    assert user.storage_used_bytes == 0
    assert tmp_render_files(e.storage) == []
