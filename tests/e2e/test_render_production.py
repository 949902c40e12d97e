"""Production mode: PostgreSQL + Redis + two real ``velocity worker`` processes, the API on
loopback. Template upload -> audio upload -> render with customisations and an EncoderConfig
-> ranged download; cancel a processing render; SIGKILL a worker mid-render; a long render
split into chunks that both workers render in parallel, surviving a SIGKILL mid-chunk; a render
surviving the whole service (``velocity serve`` and its worker) being SIGKILLed and restarted."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import pytest

from jobs.db import create_database, run_migrations
from tests.integration.test_render_support import (
    LiveServer,
    add_user,
    api_key,
    client_for,
    make_settings,
    render_row,
    run,
    tmp_render_files,
    user_row,
    wait_for,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 2


class Worker:
    """A ``velocity`` subprocess (by default ``velocity worker``) in its own process group;
    its output is drained to a log file and ``ready`` is set when ``ready_line`` appears."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        args: Sequence[str] = ("worker", "--threads", "1"),
        ready_line: bytes = b"velocity worker ready",
    ) -> None:
        self.log = log
        self.ready_line = ready_line
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own group, so a crash can be simulated by killing everything it started.
            start_new_session=True,
        )
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("wb") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                if self.ready_line in line:
                    self.ready.set()

    def kill_group(self) -> None:
        """SIGKILL the process and everything in its group, as a machine crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Production:
    def __init__(self, tmp: Path, env: dict[str, str], chunk_frames: int = 0) -> None:
        from api.app import build_service, create_app

        self.env = {
            **env,
            "VELOCITY_LEASE_SECONDS": str(LEASE_S),
            "VELOCITY_ENCODER": "software",
            # 0: renders in one piece (the single-render path); chunking has its own test.
            "VELOCITY_CHUNK_FRAMES": str(chunk_frames),
        }
        self.settings = make_settings(
            tmp,
            env["VELOCITY_DATABASE_URL"],
            broker_url=env["VELOCITY_BROKER_URL"],
            storage_dir=Path(env["VELOCITY_STORAGE_DIR"]),
            chunk_frames=chunk_frames,
        )
        run_migrations(self.settings.database_url)
        self.svc = build_service(self.settings)
        # Test-side database access runs on its own event loops: no pooled connections.
        self.db, self.storage = create_database(self.settings, null_pool=True), self.svc.storage
        self.app = create_app(service=self.svc, run_worker=False, recover=False)
        self.workers = [Worker(self.env, tmp / f"worker{i}.log") for i in range(2)]
        for worker in self.workers:
            assert worker.ready.wait(120), worker.log.read_text(errors="replace")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def prod(tmp_path: Path, service_env: dict[str, str]) -> Iterator[tuple[Production, Any]]:
    p = Production(tmp_path, service_env)
    try:
        with LiveServer(p.app) as server, client_for(server.url) as client:
            yield p, client
    finally:
        p.close()


@pytest.fixture
def prod_chunked(tmp_path: Path, service_env: dict[str, str]) -> Iterator[tuple[Production, Any]]:
    p = Production(tmp_path, service_env, chunk_frames=50)
    try:
        with LiveServer(p.app) as server, client_for(server.url) as client:
            yield p, client
    finally:
        p.close()


_h = api_key


def _completions(logs: Sequence[Path], rid: str) -> int:
    """How many times any of these workers completed render ``rid`` (it logs each)."""
    line = f"render {rid} completed (".encode()
    return sum(log.read_bytes().count(line) for log in logs if log.exists())


def _completed_once(logs: Sequence[Path], rid: str) -> None:
    """Exactly one worker completed the render, once. The log line follows the commit that
    the status poll saw, so wait for it to arrive; a second completion would add a line."""
    wait_until(lambda: _completions(logs, rid) >= 1, 30, "the completion logged")
    assert _completions(logs, rid) == 1


def _upload_template(c: Any, key: str, zip_path: Path) -> str:
    with zip_path.open("rb") as handle:
        response = c.post(
            "/Template/upload",
            files={"file": (zip_path.name, handle, "application/zip")},
            headers=_h(key),
        )
    assert response.status_code == 200, response.text
    tid = str(response.json()["templateId"])

    def ready() -> bool:
        status = c.get(f"/template/{tid}/status", headers=_h(key)).json()
        assert status["status"] != "failed", status
        return bool(status["status"] == "completed")

    wait_until(ready, 120, "template processing")
    return tid


def _zip_demo(fixtures_module: Any, tmp: Path, frames: int) -> Path:
    folder = fixtures_module.make_demo_template(
        tmp / f"demo{frames}", width=64, height=36, fps=30, frames=frames
    )
    return Path(fixtures_module.zip_folder(folder, tmp / f"demo{frames}.zip"))


def test_full_flow_upload_render_ranged_download(
    prod: tuple[Production, Any], fixtures_module: Any, tmp_path: Path
) -> None:
    p, c = prod
    uid, key = run(add_user(p.db, "prod-user"))
    tid = _upload_template(c, key, _zip_demo(fixtures_module, tmp_path, 30))

    group = c.post("/audio-asset-group", json={"name": "music"}, headers=_h(key)).json()
    wav = fixtures_module.make_audio(tmp_path / "tone.wav", 1.0, fmt="wav")
    with wav.open("rb") as handle:
        uploaded = c.post(
            f"/audio-asset-group/{group['id']}/audio",
            files={"file": ("tone.wav", handle, "audio/wav")},
            headers=_h(key),
        )
    assert uploaded.status_code == 200, uploaded.text
    audio_id = uploaded.json()["audioId"]
    wait_until(
        lambda: c.get(f"/audio/{audio_id}/status", headers=_h(key)).json()["status"] == "completed",
        120,
        "audio processing",
    )

    body = {
        "templateId": tid,
        "name": "Prod video",
        "audioId": audio_id,
        "jobInfo": {"fStart": 0, "fEnd": 30},
        "encoderConfig": {"bitrate": 300_000, "codec": 0, "preset": 4, "gop": 10, "rc": 0},
        "customizationMap": [{"layerId": "headline", "text": "Hello prod"}],
    }
    rid = c.post("/render", json=body, headers=_h(key)).json()["renderId"]
    done = wait_for(c, rid, key, {"completed", "failed", "cancelled"})
    assert done["status"] == "completed", done
    size = done["sizeBytes"]
    part = c.get(f"/render/{rid}/download", headers={**_h(key), "Range": "bytes=-500"})
    assert part.status_code == 206 and part.headers["content-range"] == (
        f"bytes {size - 500}-{size - 1}/{size}"
    )
    whole = c.get(f"/render/{rid}/download", headers=_h(key))
    assert whole.content[-500:] == part.content
    out = tmp_path / "out.mp4"
    out.write_bytes(whole.content)
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
    assert run(user_row(p.db, uid)).render_reserved_ms == 0


def _long_render(c: Any, key: str, tid: str) -> str:
    body = {
        "templateId": tid,
        "name": "long",
        "encoderConfig": {"bitrate": 200_000, "fpsNum": 240, "res": [320, 180], "preset": 0},
    }
    response = c.post("/render", json=body, headers=_h(key))
    assert response.status_code == 200, response.text
    return str(response.json()["renderId"])


def _producing(c: Any, key: str, rid: str) -> bool:
    status = c.get(f"/render/{rid}/status", headers=_h(key)).json()
    return bool(status["status"] == "processing" and status["framesDone"] > 0)


def test_cancel_processing_render_across_processes(
    prod: tuple[Production, Any], fixtures_module: Any, tmp_path: Path
) -> None:
    p, c = prod
    uid, key = run(add_user(p.db, "prod-cancel"))
    tid = _upload_template(c, key, _zip_demo(fixtures_module, tmp_path, 150))
    rid = _long_render(c, key, tid)
    wait_until(lambda: _producing(c, key, rid), 120, "render producing frames")
    assert c.post(f"/render/{rid}/cancel", headers=_h(key)).status_code == 200
    final = wait_for(c, rid, key, {"cancelled", "completed", "failed"}, limit_s=30)
    assert final["status"] == "cancelled", final
    row = run(render_row(p.db, rid))
    user = run(user_row(p.db, uid))
    assert row.render_time_ms > 0 and user.render_used_ms == row.render_time_ms
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0
    assert tmp_render_files(p.storage) == []


def test_sigkill_mid_render_completes_exactly_once_on_the_other_worker(
    prod: tuple[Production, Any], fixtures_module: Any, tmp_path: Path
) -> None:
    p, c = prod
    uid, key = run(add_user(p.db, "prod-kill"))
    tid = _upload_template(c, key, _zip_demo(fixtures_module, tmp_path, 150))
    rid = _long_render(c, key, tid)
    wait_until(lambda: _producing(c, key, rid), 120, "render producing frames")

    owner = run(render_row(p.db, rid)).lease_owner or ""
    pid = int(owner.split(":")[1])
    victim = next(w for w in p.workers if w.proc.pid == pid)
    survivor = next(w for w in p.workers if w is not victim)
    os.kill(pid, signal.SIGKILL)
    victim.proc.wait(30)

    final = wait_for(c, rid, key, {"completed", "failed", "cancelled"}, limit_s=180)
    assert final["status"] == "completed", (final, survivor.log.read_text(errors="replace"))
    _completed_once([w.log for w in p.workers], rid)
    row = run(render_row(p.db, rid))
    # The victim's claim and the survivor's at least (a lease that runs out under load makes
    # more); what matters is that it completed once, correctly and charged exactly.
    assert row.attempts >= 2
    assert survivor.proc.poll() is None  # the survivor did it: the victim is dead
    outputs = sorted((p.storage.root / "renders").rglob("*.mp4"))
    assert outputs == [p.storage.abs(row.output_path or "")]
    assert tmp_render_files(p.storage) == []
    user = run(user_row(p.db, uid))
    # Charged: what the dead worker's heartbeats booked plus the full second run, nothing
    # left reserved, and never more than the budget.
    assert user.render_used_ms == row.render_time_ms > 0
    assert user.render_reserved_ms == 0
    assert user.render_used_ms <= user.render_budget_ms
    with av.open(str(outputs[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 1200
    history = c.get("/render/history", params={"status": "completed"}, headers=_h(key)).json()
    assert [h["renderId"] for h in history] == [rid]


def _chunk_rows(p: Production, rid: str) -> list[Any]:
    import asyncio
    import uuid

    import sqlalchemy as sa

    from jobs.models.render import RenderChunk

    async def go() -> list[Any]:
        async with p.db.session() as s:
            rows = await s.scalars(
                sa.select(RenderChunk)
                .where(RenderChunk.render_id == uuid.UUID(rid))
                .order_by(RenderChunk.index)
            )
            return list(rows)

    return asyncio.run(go())


def _pid(owner: str | None) -> int | None:
    return int(owner.split(":")[1]) if owner and owner.count(":") >= 2 else None


def test_chunks_render_on_both_workers_in_parallel_and_survive_a_sigkill(
    prod_chunked: tuple[Production, Any], fixtures_module: Any, tmp_path: Path
) -> None:
    from jobs.models import JobStatus

    p, c = prod_chunked
    uid, key = run(add_user(p.db, "prod-chunks"))
    tid = _upload_template(c, key, _zip_demo(fixtures_module, tmp_path, 150))
    # 600 output frames, GOP 50: 12 chunks of 50 frames.
    body = {
        "templateId": tid,
        "name": "chunked",
        "encoderConfig": {
            "bitrate": 200_000,
            "fpsNum": 120,
            "res": [160, 90],
            "preset": 3,
            "gop": 50,
        },
    }
    response = c.post("/render", json=body, headers=_h(key))
    assert response.status_code == 200, response.text
    rid = str(response.json()["renderId"])
    stored_before = run(user_row(p.db, uid)).storage_used_bytes  # the template's files
    pids = {w.proc.pid for w in p.workers}

    def both_busy() -> bool:
        busy = {
            _pid(ch.lease_owner) for ch in _chunk_rows(p, rid) if ch.status == JobStatus.Processing
        }
        return busy == pids

    wait_until(both_busy, 120, "both workers rendering a chunk of the same render at once")
    # Kill the worker whose chunk has the most frames left, so it dies mid-chunk.
    busy = [ch for ch in _chunk_rows(p, rid) if ch.status == JobStatus.Processing]
    target = min(busy, key=lambda ch: ch.frames_done - ch.frames_total)
    victim = next(w for w in p.workers if w.proc.pid == _pid(target.lease_owner))
    survivor = next(w for w in p.workers if w is not victim)
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(30)
    held = [
        ch.id
        for ch in _chunk_rows(p, rid)
        if ch.status == JobStatus.Processing and _pid(ch.lease_owner) == victim.proc.pid
    ]

    final = wait_for(c, rid, key, {"completed", "failed", "cancelled"}, limit_s=180)
    assert final["status"] == "completed", (final, survivor.log.read_text(errors="replace"))
    chunks = _chunk_rows(p, rid)
    assert len(chunks) == 12 and all(ch.status == JobStatus.Completed for ch in chunks)
    # The chunk the victim held when it died was rendered again by the survivor (held is
    # empty only if that chunk completed between the query above and the kill). Attempt
    # counts are not asserted exactly: under load a 2 s lease can run out and a chunk be
    # claimed once more, which is correct; completing twice would not be.
    for chunk in chunks:
        if chunk.id in held:
            assert chunk.attempts >= 2 and _pid(chunk.lease_owner) == survivor.proc.pid
    assert {_pid(ch.lease_owner) for ch in chunks} <= pids
    _completed_once([w.log for w in p.workers], rid)
    row = run(render_row(p.db, rid))
    outputs = sorted((p.storage.root / "renders").rglob("*.mp4"))
    assert outputs == [p.storage.abs(row.output_path or "")]
    # The finalize step removes the chunk files just after completing the render.
    wait_until(lambda: tmp_render_files(p.storage) == [], 30, "chunk files removed")
    with av.open(str(outputs[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 600
        assert container.streams.audio  # mixed once at the end
    user = run(user_row(p.db, uid))
    assert user.render_used_ms == row.render_time_ms > 0
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0
    assert user.storage_used_bytes == stored_before + (row.size_bytes or 0)


def test_render_survives_the_whole_service_being_sigkilled_and_restarted(
    tmp_path: Path, service_env: dict[str, str], fixtures_module: Any
) -> None:
    """``velocity serve --no-worker`` and its only ``velocity worker`` are SIGKILLed mid-render
    (a machine crash); fresh processes must find the stranded render at start-up, render it
    once more from scratch and clean up after the dead attempt."""
    from jobs.models import utcnow
    from jobs.storage import Storage
    from tests.servers import free_port

    env = {
        **service_env,
        "VELOCITY_LEASE_SECONDS": str(LEASE_S),
        "VELOCITY_ENCODER": "software",
        "VELOCITY_CHUNK_FRAMES": "0",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    storage = Storage(Path(env["VELOCITY_STORAGE_DIR"]))
    procs: list[Worker] = []

    def start(life: int, serve: bool = False) -> Worker:
        if serve:
            # Logged by uvicorn once the lifespan, and with it start-up recovery, has run.
            args = ("serve", "--no-worker", "--port", str(port))
            ready, log = b"Application startup complete", tmp_path / f"serve{life}.log"
            proc = Worker(env, log, args, ready)
        else:
            proc = Worker(env, tmp_path / f"worker{life}.log")
        procs.append(proc)
        assert proc.ready.wait(120), proc.log.read_text(errors="replace")
        return proc

    try:
        serve, worker = start(1, serve=True), start(1)
        db = create_database(
            make_settings(
                tmp_path,
                env["VELOCITY_DATABASE_URL"],
                storage_dir=storage.root,
                broker_url=env["VELOCITY_BROKER_URL"],
            ),
            null_pool=True,
        )
        uid, key = run(add_user(db, "prod-crash"))
        with client_for(url) as c:
            tid = _upload_template(c, key, _zip_demo(fixtures_module, tmp_path, 150))
            rid = _long_render(c, key, tid)
            wait_until(lambda: _producing(c, key, rid), 120, "render producing frames")

        serve.kill_group()
        worker.kill_group()
        # The first attempt's output and the renderer's scratch folder beside it.
        partial = [f for f in tmp_render_files(storage) if f"render-{rid}-1.mp4" in f.name]
        assert partial, "the first attempt left no partial output to clean up"
        assert run(render_row(db, rid)).attempts == 1
        # Nothing is running now: wait out the dead worker's lease, so that it is the
        # start-up recovery of the fresh service that must notice the render is stranded.
        wait_until(
            lambda: run(render_row(db, rid)).lease_expires_at < utcnow(),
            LEASE_S * 5,
            "the dead worker's lease expiring",
        )

        serve = start(2, serve=True)
        with client_for(url) as c:
            status = c.get(f"/render/{rid}/status", headers=_h(key)).json()
            assert status["status"] == "pending", (status, serve.log.read_text(errors="replace"))
            worker = start(2)
            final = wait_for(c, rid, key, {"completed", "failed", "cancelled"}, limit_s=120)
        assert final["status"] == "completed", (final, worker.log.read_text(errors="replace"))
        _completed_once([proc.log for proc in procs], rid)
        row = run(render_row(db, rid))
        assert row.attempts >= 2  # the killed attempt and the fresh worker's, at least
        outputs = sorted((storage.root / "renders").rglob("*.mp4"))
        assert outputs == [storage.abs(row.output_path or "")]
        with av.open(str(outputs[0])) as container:
            assert sum(1 for _ in container.decode(video=0)) == 1200
        user = run(user_row(db, uid))
        assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0
        assert user.render_used_ms == row.render_time_ms > 0
        assert not any(f.exists() for f in partial)
        assert tmp_render_files(storage) == []
    finally:
        for proc in procs:
            proc.stop()
