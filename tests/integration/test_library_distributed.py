"""The production mode: PostgreSQL + Redis started by the test run, the API in this process
(no worker threads) and a real ``velocity worker`` subprocess doing the processing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from jobs.settings import Settings
from tests.integration.conftest import Embedded

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 120.0


def _velocity() -> list[str]:
    script = Path(sys.executable).with_name("velocity")
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


@pytest.fixture
def worker(service_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``velocity worker`` process; yields once it reports ready."""
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*_velocity(), "worker", "--threads", "2"],
            env=service_env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while b"velocity worker ready" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def api(service_env: dict[str, str], worker: Any) -> AsyncIterator[Embedded]:
    """The API in this process against the same database, broker and storage."""
    from api.app import build_service, create_app

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=service_env["VELOCITY_DATABASE_URL"],
        broker_url=service_env["VELOCITY_BROKER_URL"],
        storage_dir=Path(service_env["VELOCITY_STORAGE_DIR"]),
        admin_key=service_env["VELOCITY_ADMIN_KEY"],
    )
    service = build_service(settings)
    app = create_app(service=service, run_worker=False, recover=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://velocity") as c:
            yield Embedded(c, settings, service)


async def wait_status(client: httpx.AsyncClient, url: str, key: str) -> dict[str, Any]:
    """Poll ``url`` until the job leaves pending/processing (the worker is another process)."""
    import anyio

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        body: dict[str, Any] = (await client.get(url, headers={"X-API-Key": key})).json()
        if body.get("status") not in ("pending", "processing"):
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"{url} still {body.get('status')} after {JOB_TIMEOUT_S}s")
        await anyio.sleep(0.2)


async def test_template_and_audio_flow_on_postgres_and_redis(
    api: Embedded,
    demo_zip: Path,
    hostile_zips: dict[str, tuple[Path, str]],
    fixtures_module: ModuleType,
    tmp_path: Path,
) -> None:
    assert api.service.db.engine.dialect.name == "postgresql"
    key = await api.user()
    c = api.client
    headers = {"X-API-Key": key}

    with demo_zip.open("rb") as fh:
        r = await c.post("/template/upload", headers=headers, files={"file": ("demo.zip", fh)})
    assert r.status_code == 200, r.text
    tid = r.json()["templateId"]
    path, expected = hostile_zips["missing_file"]
    with path.open("rb") as fh:
        bad = await c.post("/template/upload", headers=headers, files={"file": ("x.zip", fh)})
    bad_id = bad.json()["templateId"]

    wav = fixtures_module.make_audio(tmp_path / "tune.wav", 0.4)
    group = (await c.post("/audio-asset-group", headers=headers, json={"name": "g"})).json()
    with wav.open("rb") as fh:
        r = await c.post(
            f"/audio-asset-group/{group['id']}/audio",
            headers=headers,
            files={"file": ("tune.wav", fh)},
        )
    audio_id = r.json()["audioId"]

    done = await wait_status(c, f"/template/{tid}/status", key)
    assert done["status"] == "completed", done
    failed = await wait_status(c, f"/template/{bad_id}/status", key)
    assert failed["status"] == "failed" and expected in failed["reason"]
    audio = await wait_status(c, f"/audio/{audio_id}/status", key)
    assert audio["status"] == "completed", audio

    manifest = (await c.get(f"/template/{tid}", headers=headers)).json()["manifest"]
    assert manifest["frames"] == 12
    part = await c.get(f"/audio/{audio_id}/download", headers={**headers, "Range": "bytes=0-3"})
    assert part.status_code == 206 and part.content == b"RIFF"
    status = (await c.get("/template/storage-status", headers=headers)).json()
    # storageBytes: the ZIP plus its extracted files (sizeBytes is the ZIP alone).
    size = (await c.get(f"/template/{tid}", headers=headers)).json()["storageBytes"]
    assert status["usedBytes"] == size + wav.stat().st_size
    assert os.path.isdir(api.settings.storage_dir / "template_files")
    # Start-up recovery's pooled connections are closed on their own loop, not a new one.
    assert "Exception closing connection" not in (tmp_path / "worker.log").read_text()
