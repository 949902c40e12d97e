"""Fault tolerance with the real servers: Redis restarted without persistence under queued
renders, PostgreSQL stopped and started mid-render, and a storage filesystem that fills up
mid-render. Nothing is restarted but the failing server; every render must reach a terminal
state, once, with exact ledgers."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.db import create_database, run_migrations
from tests.integration.test_render_support import (
    LiveServer,
    add_template,
    add_user,
    api_key,
    client_for,
    demo_template,
    make_settings,
    render_body,
    render_row,
    run,
    user_row,
    wait_for,
    wait_until,
)
from tests.servers import PostgresServer, RedisServer, create_pg_database

pytestmark = pytest.mark.integration

TERMINAL = {"completed", "failed", "cancelled"}


def _metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def template_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-templates")


class Stack:
    """The API on uvicorn plus in-process worker threads on a real broker and database."""

    def __init__(self, tmp: Path, database_url: str, broker_url: str, **overrides: Any) -> None:
        from api.app import build_service, create_app

        self.settings = make_settings(tmp, database_url, broker_url=broker_url, **overrides)
        run_migrations(self.settings.database_url)
        self.svc = build_service(self.settings)
        self.db = create_database(self.settings, null_pool=True)
        self.storage = self.svc.storage
        self.app = create_app(service=self.svc, run_worker=False, recover=False)

    def start_worker(self, threads: int = 1) -> None:
        self.svc.start_worker(threads)

    def stop(self) -> None:
        self.svc.stop_worker()
        self.svc.broker.close()


@pytest.fixture
def redis_stack(
    tmp_path: Path, pg_database: str, redis_server: RedisServer
) -> Iterator[tuple[Stack, Any, RedisServer]]:
    stack = Stack(tmp_path, pg_database, redis_server.url)
    try:
        with LiveServer(stack.app) as server, client_for(server.url) as client:
            yield stack, client, redis_server
    finally:
        stack.stop()


def _ledgers_exact(stack: Stack, uid: uuid.UUID, rids: list[str]) -> None:
    rows = [run(render_row(stack.db, rid)) for rid in rids]
    user = run(user_row(stack.db, uid))
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0
    assert user.render_used_ms == sum(r.render_time_ms for r in rows)
    assert user.storage_used_bytes == sum(r.size_bytes or 0 for r in rows)


def test_redis_restart_without_persistence_loses_no_render(
    redis_stack: tuple[Stack, Any, RedisServer], template_cache: Path
) -> None:
    stack, client, redis = redis_stack
    uid, key = run(add_user(stack.db, "redis"))
    tid = run(add_template(stack.db, stack.storage, uid, demo_template(6, template_cache)))

    # Queued while no worker runs, then Redis restarts empty: these messages are gone.
    queued = []
    for i in range(3):
        r = client.post("/render", json=render_body(tid, f"q{i}"), headers=api_key(key))
        assert r.status_code == 200, r.text
        queued.append(r.json()["renderId"])
    redis.stop()
    # Posted while Redis is down: recorded pending, the send fails.
    down = client.post("/render", json=render_body(tid, "down"), headers=api_key(key))
    assert down.status_code == 200, down.text
    assert down.json()["status"] == "pending"
    redis.start()

    stack.start_worker(1)
    rids = [*queued, down.json()["renderId"]]
    for rid in rids:
        assert wait_for(client, rid, key, TERMINAL, limit_s=90)["status"] == "completed"
    rows = [run(render_row(stack.db, rid)) for rid in rids]
    assert [r.attempts for r in rows] == [1] * len(rids), "each render ran once"
    assert all(r.last_enqueued_at > r.created_at for r in rows), "the sweeper re-sent them"
    _ledgers_exact(stack, uid, rids)

    exposition = client.get("/metrics")
    assert exposition.status_code == 200
    assert exposition.headers["content-type"].startswith("text/plain")
    text = exposition.text
    assert 'velocity_jobs{kind="render",queue="renders",state="completed"} 4.0' in text
    assert 'velocity_queue_depth{queue="renders"} 0.0' in text
    assert 'velocity_dependency_up{dependency="database"} 1.0' in text
    assert "velocity_storage_free_bytes " in text
    assert 'velocity_oldest_pending_seconds{kind="render"} 0.0' in text
    assert _metric("velocity_resends_total", kind="renders") >= 4
    assert _metric("velocity_render_seconds_count", kind="render") >= 4
    assert 'velocity_http_request_seconds_count{method="POST",route="/render"}' in text


def test_render_pending_too_long_fails_and_releases_its_reservations(
    tmp_path: Path, template_cache: Path
) -> None:
    from datetime import timedelta

    import sqlalchemy as sa

    from jobs.models.base import utcnow
    from jobs.models.render import Render
    from jobs.resend import PENDING_TIMEOUT, expire_pending_renders
    from tests.integration.test_render_support import RenderEnv

    env = RenderEnv(tmp_path, template_cache, worker=False)
    settings = env.settings.model_copy(update={"max_pending_s": 60})
    uid, key = env.user("patient")
    tid = env.template(uid, frames=6)
    with LiveServer(env.app) as server, client_for(server.url) as client:
        old = client.post("/render", json=render_body(tid, "old"), headers=api_key(key))
        new = client.post("/render", json=render_body(tid, "new"), headers=api_key(key))
        assert old.status_code == new.status_code == 200
        old_id, new_id = old.json()["renderId"], new.json()["renderId"]

        async def backdate() -> None:  # a factory, not a sleep: the render is 2 min old
            async with env.db.session() as s:
                await s.execute(
                    sa.update(Render)
                    .where(Render.id == uuid.UUID(old_id))
                    .values(created_at=utcnow() - timedelta(minutes=2))
                )

        run(backdate())
        assert run(expire_pending_renders(env.db, settings)) == 1
        status = client.get(f"/render/{old_id}/status", headers=api_key(key)).json()
        assert status["status"] == "failed"
        row = run(render_row(env.db, old_id))
        assert row.failure_code == PENDING_TIMEOUT and "VELOCITY_MAX_PENDING_S" in row.reason
        assert row.render_time_ms == 0
        kept = run(render_row(env.db, new_id))
        assert kept.status.value == "pending"
        user = run(user_row(env.db, uid))
        assert user.render_reserved_ms == kept.reserved_render_ms
        assert user.storage_reserved_bytes == kept.reserved_storage_bytes
        assert user.render_used_ms == 0


def test_postgres_outage_mid_render_answers_503_and_completes_once(
    tmp_path: Path, postgres_server: PostgresServer, clean_redis: str, template_cache: Path
) -> None:
    stack = Stack(tmp_path, create_pg_database(postgres_server.url), clean_redis)
    try:
        uid, key = run(add_user(stack.db, "outage"))
        tid = run(add_template(stack.db, stack.storage, uid, demo_template(300, template_cache)))
        with LiveServer(stack.app) as server, client_for(server.url) as client:
            stack.start_worker(1)
            long = client.post("/render", json=render_body(tid, "long"), headers=api_key(key))
            queued = client.post("/render", json=render_body(tid, "next"), headers=api_key(key))
            assert long.status_code == queued.status_code == 200
            rids = [long.json()["renderId"], queued.json()["renderId"]]

            def rendering() -> bool:
                body = client.get(f"/render/{rids[0]}/status", headers=api_key(key)).json()
                return bool(body["status"] == "processing" and body["progress"] > 0)

            wait_until(rendering, 60, "the first render under way")
            retries = _metric("velocity_completion_retries_total")
            postgres_server.stop()

            for method, path in (
                ("GET", f"/render/{rids[0]}/status"),
                ("GET", "/render/active"),
                ("POST", "/render"),
            ):
                answer = client.request(
                    method, path, headers=api_key(key), json=render_body(tid, "x")
                )
                assert answer.status_code == 503, answer.text
                assert answer.json()["code"] == "service_unavailable"
                assert int(answer.headers["Retry-After"]) > 0
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["down"] == ["database"]

            # The render finishes while the database is down: its completion is retried.
            wait_until(
                lambda: _metric("velocity_completion_retries_total") > retries,
                90,
                "a completion retried during the outage",
            )
            postgres_server.start()
            wait_until(lambda: client.get("/health").status_code == 200, 30, "healthy again")
            for rid in rids:
                assert wait_for(client, rid, key, TERMINAL, limit_s=90)["status"] == "completed"
        rows = [run(render_row(stack.db, rid)) for rid in rids]
        assert [r.attempts for r in rows] == [1, 1], "rendered once each"
        assert all(stack.storage.abs(r.output_path).is_file() for r in rows)
        _ledgers_exact(stack, uid, rids)
    finally:
        stack.stop()


def test_low_free_space_refuses_renders_and_fails_health(
    tmp_path: Path, template_cache: Path
) -> None:
    from tests.integration.test_render_support import RenderEnv

    env = RenderEnv(tmp_path, template_cache, worker=False)
    uid, key = env.user("floor")
    tid = env.template(uid, frames=6)
    free = env.storage.free_bytes()
    # The floor is far above what is free: other writers on a shared disk may free a few MB
    # meanwhile, but not a terabyte.
    env.settings.min_free_mb = free // (1024 * 1024) + 1024 * 1024
    with LiveServer(env.app) as server, client_for(server.url) as client:
        refused = client.post("/render", json=render_body(tid, "x"), headers=api_key(key))
        assert refused.status_code == 507, refused.text
        assert refused.json()["code"] == "storage_full" and refused.headers["Retry-After"]
        upload = client.post(
            "/asset/upload",
            files={"file": ("a.png", b"\x89PNG\r\n\x1a\n" + b"0" * 1024, "image/png")},
            headers=api_key(key),
        )
        assert upload.status_code == 507 and upload.json()["code"] == "storage_full"
        health = client.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["storage"] is False and body["down"] == ["storage"]
        assert body["storageFreeBytes"] > 0
        env.settings.min_free_mb = 0
        assert client.post("/render", json=render_body(tid, "y"), headers=api_key(key)).is_success
        assert client.get("/health").json()["storage"] is True
    user = run(user_row(env.db, uid))
    assert user.render_used_ms == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for the test (root only; skipped otherwise unless CI)."""
    import os
    import subprocess

    if os.geteuid() != 0 or not shutil.which("mount"):
        if os.environ.get("CI"):
            pytest.fail("the full-disk test needs root to mount a tmpfs under CI")
        pytest.skip("mounting a small filesystem needs root")
    mount = tmp_path / "storage"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_filling_mid_render_fails_storage_full_uncharged(
    small_fs: Path, tmp_path: Path, template_cache: Path
) -> None:
    from jobs.faults import STORAGE_FULL
    from tests.integration.test_render_support import RenderEnv, tmp_render_files

    env = RenderEnv(tmp_path, template_cache)  # storage_dir is tmp_path/storage: the tmpfs
    env.settings.min_free_mb = 0
    assert env.storage.root == small_fs
    uid, key = env.user("full")
    tid = env.template(uid, frames=300)
    # Leave 48 KiB: the lossless render below writes several times that.
    (small_fs / "filler.bin").write_bytes(b"\0" * (env.storage.free_bytes() - 48 * 1024))
    lossless = {"bitrate": 200_000, "rc": 2, "qp": 0, "gop": 5, "preset": 5}
    with LiveServer(env.app) as server, client_for(server.url) as client:
        r = client.post(
            "/render", json=render_body(tid, "big", encoderConfig=lossless), headers=api_key(key)
        )
        assert r.status_code == 200, r.text
        rid = r.json()["renderId"]
        done = wait_for(client, rid, key, TERMINAL, limit_s=120)
    assert done["status"] == "failed", done
    row = run(render_row(env.db, rid))
    assert row.failure_code == STORAGE_FULL and "disk space" in row.reason
    assert row.render_time_ms == 0
    user = run(user_row(env.db, uid))
    assert user.render_used_ms == 0 and user.render_reserved_ms == 0
    assert user.storage_used_bytes == 0 and user.storage_reserved_bytes == 0
    assert tmp_render_files(env.storage) == []


def test_upload_onto_a_full_disk_answers_507_and_keeps_nothing(
    small_fs: Path, tmp_path: Path, template_cache: Path
) -> None:
    from tests.integration.test_render_support import RenderEnv

    env = RenderEnv(tmp_path, template_cache, worker=False)
    env.settings.min_free_mb = 0
    uid, key = env.user("uploader")
    (small_fs / "filler.bin").write_bytes(b"\0" * (env.storage.free_bytes() - 32 * 1024))
    body = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4096  # 1 MiB, far more than is free
    with LiveServer(env.app) as server, client_for(server.url) as client:
        r = client.post(
            "/asset/upload",
            files={"file": ("big.png", body, "image/png")},
            headers=api_key(key),
        )
        assert r.status_code == 507, r.text
        assert r.json()["code"] == "storage_full" and r.json()["detail"]
        # The body was drained before the answer: the same connection still serves.
        assert client.get("/health").status_code == 200
    # The service's own files (the signing secret) are not the upload's.
    own = {"filler.bin", "signing-secret"}
    left = [p for p in small_fs.rglob("*") if p.is_file() and p.name not in own]
    assert left == []
    user = run(user_row(env.db, uid))
    assert user.storage_used_bytes == 0 and user.storage_reserved_bytes == 0


def test_sweeper_resends_lost_library_and_render_messages_once(
    tmp_path: Path, template_cache: Path
) -> None:
    from datetime import timedelta

    import sqlalchemy as sa

    from jobs.models import Asset, JobStatus
    from jobs.models.base import utcnow
    from jobs.models.render import Render
    from jobs.queues import LIBRARY_QUEUE, RENDERS_QUEUE
    from jobs.resend import queued_ids, resend_stale
    from tests.integration.test_render_support import RenderEnv

    env = RenderEnv(tmp_path, template_cache, worker=False)  # nothing consumes the queues
    uid, key = env.user("lost")
    tid = env.template(uid, frames=6)
    broker = env.svc.broker
    with LiveServer(env.app) as server, client_for(server.url) as client:
        rid = client.post("/render", json=render_body(tid, "r"), headers=api_key(key)).json()[
            "renderId"
        ]
    asset_id = uuid.uuid4()
    long_ago = utcnow() - timedelta(minutes=5)

    async def lose_messages() -> None:
        async with env.db.session() as s:
            s.add(
                Asset(
                    id=asset_id,
                    user_id=uid,
                    name="a.png",
                    path=f"assets/{uid}/{asset_id}.png",
                    status=JobStatus.Pending,
                    last_enqueued_at=long_ago,
                )
            )
            await s.execute(
                sa.update(Render)
                .where(Render.id == uuid.UUID(rid))
                .values(last_enqueued_at=long_ago)
            )
        broker.flush_all()  # as a Redis restart without persistence would

    run(lose_messages())
    assert queued_ids(broker, RENDERS_QUEUE) == set() and queued_ids(broker, LIBRARY_QUEUE) == set()
    sent = run(resend_stale(env.db, broker, env.settings))
    assert sent == {"renders": 1, "templates": 0, "audio": 0, "assets": 1}
    assert queued_ids(broker, RENDERS_QUEUE) == {rid}
    assert queued_ids(broker, LIBRARY_QUEUE) == {str(asset_id)}

    async def backdate_again() -> None:
        async with env.db.session() as s:
            for model, row_id in ((Render, uuid.UUID(rid)), (Asset, asset_id)):
                await s.execute(
                    sa.update(model).where(model.id == row_id).values(last_enqueued_at=long_ago)
                )

    run(backdate_again())
    # Still queued: stale by the clock, but not lost, so nothing is sent twice.
    assert run(resend_stale(env.db, broker, env.settings)) == {
        "renders": 0,
        "templates": 0,
        "audio": 0,
        "assets": 0,
    }
