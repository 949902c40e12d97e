"""Helpers shared by the render tests (no tests here).

Library rows (templates, audio, assets) are inserted directly as *completed*, with their files
in storage, so render tests exercise the render machinery without depending on the library
pipeline; the end-to-end tests go through the upload endpoints instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.server
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa

from jobs.db import Database
from jobs.models import Asset, Audio, AudioGroup, JobStatus, Template, User
from jobs.models.render import Render
from jobs.settings import Settings
from jobs.storage import Storage
from tests.conftest import load_fixtures_module

TERMINAL = {"completed", "failed", "cancelled"}
BITRATE = 200_000
TEMPLATE_W, TEMPLATE_H, TEMPLATE_FPS = 64, 36, 30

_template_cache: dict[int, Path] = {}
_cache_lock = threading.Lock()


def demo_template(frames: int, cache_root: Path) -> Path:
    """A generated demo template folder of ``frames`` frames (generated once per size)."""
    with _cache_lock:
        if frames not in _template_cache:
            fx: ModuleType = load_fixtures_module()
            dest = cache_root / f"demo-{frames}"
            if not (dest / "data.json").is_file():
                fx.make_demo_template(
                    dest, width=TEMPLATE_W, height=TEMPLATE_H, fps=TEMPLATE_FPS, frames=frames
                )
            _template_cache[frames] = dest
        return _template_cache[frames]


def make_settings(tmp: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    """Settings for a test service under ``tmp`` (SQLite there unless ``database_url``)."""
    values: dict[str, Any] = {
        "database_url": database_url or f"sqlite+aiosqlite:///{tmp}/velocity.db",
        "storage_dir": tmp / "storage",
        "lease_seconds": 2,
        "worker_threads": 2,
        "encoder": "software",
        "broker_url": None,
        # The webhook receivers of these tests listen on loopback.
        "webhook_allow_private": True,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def run(coro: Any) -> Any:
    """Run a coroutine from synchronous test code (a fresh loop each time)."""
    return asyncio.run(coro)


async def add_user(
    db: Database,
    name: str,
    *,
    budget_ms: int = 600_000,
    quota_mb: int = 200,
    max_concurrent: int | None = None,
) -> tuple[uuid.UUID, str]:
    """A user and an API key: ``(user_id, key)``."""
    from api.auth import issue_key
    from jobs.store.accounts import create_user

    async with db.session() as s:
        user = await create_user(
            s,
            name,
            storage_quota_mb=quota_mb,
            render_budget_ms=budget_ms,
            max_concurrent_renders=max_concurrent,
        )
        key = await issue_key(s, user.id)
    return user.id, key.key


async def add_template(
    db: Database, storage: Storage, user_id: uuid.UUID, source: Path, name: str = "demo"
) -> uuid.UUID:
    """A completed template whose extracted files are a copy of ``source`` (with the
    manifest the library pipeline would have stored)."""
    from renderer.template.loader import load_template
    from renderer.template.manifest import build_manifest

    template_id = uuid.uuid4()
    rel = f"template_files/{user_id}/{template_id}"
    shutil.copytree(source, storage.abs(rel))
    loaded = load_template(storage.abs(rel))
    size = storage.dir_size(rel)
    async with db.session() as s:
        s.add(
            Template(
                id=template_id,
                user_id=user_id,
                name=name,
                status=JobStatus.Completed,
                zip_path=f"templates/{user_id}/{template_id}.zip",
                extracted_dir=rel,
                zip_bytes=0,
                size_bytes=size,
                reserved_bytes=0,
                manifest=build_manifest(loaded),
                definition=loaded.template.model_dump(mode="json", by_alias=True),
            )
        )
    return template_id


async def add_audio(
    db: Database, storage: Storage, user_id: uuid.UUID, group_id: uuid.UUID | None = None
) -> tuple[uuid.UUID, uuid.UUID]:
    """A completed WAV in a (new unless given) audio group: ``(audio_id, group_id)``."""
    fx = load_fixtures_module()
    audio_id = uuid.uuid4()
    rel = storage.new_path("audio", user_id, audio_id, ".wav")
    fx.make_audio(storage.abs(rel), 1.0, freq=550.0, fmt="wav", volume=0.3)
    async with db.session() as s:
        if group_id is None:
            group = AudioGroup(id=uuid.uuid4(), user_id=user_id, name="music")
            s.add(group)
            await s.flush()
            group_id = group.id
        s.add(
            Audio(
                id=audio_id,
                user_id=user_id,
                group_id=group_id,
                name="tone.wav",
                format="wav",
                path=rel,
                size_bytes=storage.size(rel),
                status=JobStatus.Completed,
            )
        )
    return audio_id, group_id


async def add_asset(db: Database, storage: Storage, user_id: uuid.UUID, kind: str) -> uuid.UUID:
    """A completed image (PNG) or video (MP4) asset."""
    fx = load_fixtures_module()
    asset_id = uuid.uuid4()
    if kind == "image":
        rel = storage.new_path("assets", user_id, asset_id, ".png")
        fx.make_png(storage.abs(rel), 16, 16, (20, 200, 40), "gradient")
    else:
        rel = storage.new_path("assets", user_id, asset_id, ".mp4")
        fx.make_video(storage.abs(rel), 32, 18, 30, 15)
    async with db.session() as s:
        s.add(
            Asset(
                id=asset_id,
                user_id=user_id,
                kind=kind,
                name=f"asset.{rel.rsplit('.', 1)[1]}",
                format=rel.rsplit(".", 1)[1],
                path=rel,
                size_bytes=storage.size(rel),
                status=JobStatus.Completed,
            )
        )
    return asset_id


async def user_row(db: Database, user_id: uuid.UUID) -> User:
    async with db.session() as s:
        user = await s.scalar(
            sa.select(User).where(User.id == user_id).execution_options(populate_existing=True)
        )
        assert user is not None
        return user


async def render_row(db: Database, render_id: uuid.UUID | str) -> Render:
    async with db.session() as s:
        row = await s.scalar(
            sa.select(Render)
            .where(Render.id == uuid.UUID(str(render_id)))
            .execution_options(populate_existing=True)
        )
        assert row is not None
        return row


def render_body(template_id: uuid.UUID | str, name: str = "clip", **extra: Any) -> dict[str, Any]:
    """A minimal valid ``POST /render`` body."""
    body: dict[str, Any] = {
        "templateId": str(template_id),
        "name": name,
        "encoderConfig": {"bitrate": BITRATE, "preset": 5},
    }
    body.update(extra)
    return body


def wait_for(
    client: Any, render_id: str, key: str, until: set[str], limit_s: float = 120
) -> dict[str, Any]:
    """Long-poll ``GET /render/{id}/status`` until the status is in ``until``."""
    deadline = time.monotonic() + limit_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(
            f"/render/{render_id}/status", params={"wait": 5}, headers={"X-API-Key": key}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in until:
            return body
    raise AssertionError(f"render {render_id} never reached {until}; last {body}")


def wait_until(predicate: Any, limit_s: float = 60, what: str = "condition") -> None:
    """Poll ``predicate`` (a cheap check of real state) until it holds."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not hold within {limit_s}s")


def tmp_render_files(storage: Storage) -> list[Path]:
    """Partial render outputs left in storage's tmp/."""
    tmp = storage.root / "tmp"
    return sorted(p for p in tmp.glob("*render-*")) if tmp.is_dir() else []


@dataclass
class WebhookSink:
    """A tiny local HTTP server recording webhook deliveries; the first ``fail_first``
    requests are answered 500."""

    fail_first: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    attempts: int = 0
    url: str = ""

    def verify(self, secret: str, headers: dict[str, str], body: bytes) -> bool:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, headers.get("x-velocity-signature", ""))


@contextlib.contextmanager
def webhook_sink(fail_first: int = 0) -> Iterator[WebhookSink]:
    sink = WebhookSink(fail_first=fail_first)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with lock:
                sink.attempts += 1
                failing = sink.attempts <= sink.fail_first
                if not failing:
                    sink.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


class LiveServer:
    """The app served by uvicorn on a free loopback port in a background thread (lifespan
    included, so embedded worker threads start and stop with it)."""

    def __init__(self, app: Any) -> None:
        import socket

        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, 30, "uvicorn start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


def client_for(url: str) -> Any:
    import httpx

    return httpx.Client(base_url=url, timeout=90)


def api_key(key: str) -> dict[str, str]:
    """The request header that authenticates as ``key``."""
    return {"X-API-Key": key}


class RenderEnv:
    """An embedded-mode service (SQLite + in-process broker) for render tests.

    ``worker=False`` runs no worker threads, so renders stay pending; ``chunk_frames=0``
    renders in one piece.
    """

    def __init__(
        self,
        tmp: Path,
        cache: Path,
        *,
        chunk_frames: int = 0,
        worker: bool = True,
        **settings: Any,
    ) -> None:
        from api.app import build_service, create_app
        from jobs.db import create_database, run_migrations

        self.settings = make_settings(tmp, chunk_frames=chunk_frames, **settings)
        run_migrations(self.settings.database_url)
        self.svc = build_service(self.settings)
        # Test-side database access runs on its own event loops: no pooled connections.
        self.db = create_database(self.settings, null_pool=True)
        self.storage, self.cache = self.svc.storage, cache
        self.app = create_app(service=self.svc, run_worker=worker, recover=worker)

    def user(self, name: str, **kw: Any) -> tuple[uuid.UUID, str]:
        return run(add_user(self.db, name, **kw))  # type: ignore[no-any-return]

    def template(self, user_id: uuid.UUID, frames: int = 30) -> uuid.UUID:
        source = demo_template(frames, self.cache)
        return run(add_template(self.db, self.storage, user_id, source))  # type: ignore[no-any-return]
