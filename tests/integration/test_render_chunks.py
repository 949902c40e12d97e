"""Chunked renders in the embedded mode (SPEC §7): a long render is split into GOP-aligned
chunks rendered by the worker threads, joined without re-encoding, with the audio mixed once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import sqlalchemy as sa

from jobs.db import Database
from jobs.models import JobStatus
from jobs.models.render import RenderChunk
from tests.integration.test_render_support import (
    LiveServer,
    RenderEnv,
    add_user,
    api_key,
    client_for,
    demo_template,
    render_body,
    render_row,
    run,
    tmp_render_files,
    user_row,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.integration

# Lossless, GOP 5: a chunked render must decode to exactly the pixels of a single one.
LOSSLESS = {"bitrate": 200_000, "rc": 2, "qp": 0, "gop": 5, "preset": 5}


@pytest.fixture(scope="module")
def template_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chunk-templates")


@pytest.fixture
def env(tmp_path: Path, template_cache: Path) -> Iterator[tuple[RenderEnv, Any]]:
    e = RenderEnv(tmp_path, template_cache, chunk_frames=10)
    with LiveServer(e.app) as server, client_for(server.url) as client:
        yield e, client


_h = api_key


def _chunks(db: Database, render_id: str) -> list[RenderChunk]:
    async def go() -> list[RenderChunk]:
        async with db.session() as s:
            rows = await s.scalars(
                sa.select(RenderChunk)
                .where(RenderChunk.render_id == uuid.UUID(render_id))
                .order_by(RenderChunk.index)
            )
            return list(rows)

    return asyncio.run(go())


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def _keyframes(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stamped = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None]
    return [i for i, (_, key) in enumerate(sorted(stamped)) if key]


def _audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(stream))
        return samples / stream.codec_context.sample_rate


def test_chunked_render_equals_single_render(env: tuple[RenderEnv, Any], tmp_path: Path) -> None:
    e, c = env
    uid, key = run(add_user(e.db, "chunky"))
    tid = e.template(uid, frames=36)
    body = render_body(tid, "long", encoderConfig=LOSSLESS, jobInfo={"fStart": 2, "fEnd": 36})
    created = c.post("/render", json=body, headers=_h(key))
    assert created.status_code == 200, created.text
    rid = created.json()["renderId"]
    done = wait_for(c, rid, key, {"completed", "failed", "cancelled"})
    assert done["status"] == "completed", done
    assert done["framesTotal"] == 34 and done["framesDone"] == 34 and done["progress"] == 100
    assert done["encoderUsed"] == "libx264"

    chunks = _chunks(e.db, rid)
    assert [(ch.f_start, ch.f_end) for ch in chunks] == [(2, 12), (12, 22), (22, 32), (32, 36)]
    assert all(ch.status == JobStatus.Completed for ch in chunks)
    assert sum(ch.frames_total for ch in chunks) == 34
    # Joined and cleaned up (just after completing): no chunk file or partial is left.
    wait_until(lambda: tmp_render_files(e.storage) == [], 30, "chunk files removed")

    download = c.get(f"/render/{rid}/download", headers=_h(key))
    assert download.status_code == 200
    chunked = tmp_path / "chunked.mp4"
    chunked.write_bytes(download.content)

    # The same request rendered in one piece by the renderer.
    from renderer.encode.config import EncoderConfig
    from renderer.render import render
    from renderer.template.loader import load_template

    row = run(render_row(e.db, rid))
    single = tmp_path / "single.mp4"
    template_dir = demo_template(36, e.cache)
    render(
        load_template(template_dir),
        single,
        encoder=EncoderConfig.parse(LOSSLESS),
        frames=(2, 36),
        encoder_preference="software",
    )
    a, b = _decode(chunked), _decode(single)
    assert len(a) == len(b) == 34
    for index, (x, y) in enumerate(zip(a, b, strict=True)):
        assert np.array_equal(x, y), f"frame {index} differs"
    assert _keyframes(chunked) == _keyframes(single) == list(range(0, 34, 5))
    # One mix for the whole range, cut to the video's 34/30 s.
    assert _audio_seconds(chunked) == pytest.approx(_audio_seconds(single), abs=1e-9)
    assert _audio_seconds(chunked) == pytest.approx(34 / 30, abs=1024 / 48_000)

    # Storage and budget settled once, with the chunks' summed time charged.
    user = run(user_row(e.db, uid))
    assert row.size_bytes == len(download.content)
    assert user.storage_used_bytes == row.size_bytes and user.storage_reserved_bytes == 0
    assert user.render_reserved_ms == 0 and user.render_used_ms == row.render_time_ms
    assert row.reserved_render_ms == 0 and row.reserved_storage_bytes == 0


def test_short_render_is_not_split(env: tuple[RenderEnv, Any]) -> None:
    e, c = env
    uid, key = run(add_user(e.db, "short"))
    tid = e.template(uid, frames=36)
    body = render_body(tid, "short", encoderConfig=LOSSLESS, jobInfo={"fStart": 0, "fEnd": 8})
    rid = c.post("/render", json=body, headers=_h(key)).json()["renderId"]
    done = wait_for(c, rid, key, {"completed", "failed", "cancelled"})
    assert done["status"] == "completed" and done["framesTotal"] == 8
    assert _chunks(e.db, rid) == []


def test_cancel_stops_every_chunk_and_removes_their_files(env: tuple[RenderEnv, Any]) -> None:
    e, c = env
    uid, key = run(add_user(e.db, "canceller"))
    tid = e.template(uid, frames=150)
    # 1200 slow output frames in chunks of 10: far more work than runs before the cancel.
    slow = {"bitrate": 200_000, "fpsNum": 240, "res": [320, 180], "preset": 0, "gop": 5}
    rid = c.post("/render", json=render_body(tid, "long", encoderConfig=slow), headers=_h(key))
    rid = rid.json()["renderId"]
    wait_until(
        lambda: c.get(f"/render/{rid}/status", headers=_h(key)).json()["framesDone"] > 0,
        60,
        "chunks started producing frames",
    )
    response = c.post(f"/render/{rid}/cancel", headers=_h(key))
    assert response.status_code == 200 and response.json()["status"] in {"cancelling", "cancelled"}
    final = wait_for(c, rid, key, {"cancelled", "completed", "failed"}, limit_s=60)
    assert final["status"] == "cancelled", final
    assert 0 < final["framesDone"] < final["framesTotal"] == 1200

    chunks = _chunks(e.db, rid)
    assert len(chunks) == 120
    statuses = {ch.status for ch in chunks}
    assert statuses <= {JobStatus.Cancelled, JobStatus.Completed}
    assert JobStatus.Cancelled in statuses
    wait_until(lambda: tmp_render_files(e.storage) == [], 30, "chunk files removed")
    assert c.get(f"/render/{rid}/download", headers=_h(key)).status_code == 404
    row = run(render_row(e.db, rid))
    user = run(user_row(e.db, uid))
    assert row.render_time_ms > 0 and user.render_used_ms == row.render_time_ms
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0
    assert row.output_path is None


def test_failed_chunk_fails_the_render_with_its_reason(
    env: tuple[RenderEnv, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.renders import chunked as actors
    from renderer.errors import UnsupportedMedia

    original = actors._run_chunk

    def broken(inputs: Any, rng: tuple[int, int], *args: Any) -> Any:
        if rng[0] >= 12:
            raise UnsupportedMedia(f"layer 'bg': frames {rng[0]}-{rng[1]} cannot be decoded")
        return original(inputs, rng, *args)

    monkeypatch.setattr(actors, "_run_chunk", broken)
    e, c = env
    uid, key = run(add_user(e.db, "breaker"))
    tid = e.template(uid, frames=36)
    body = render_body(tid, "broken", encoderConfig=LOSSLESS, jobInfo={"fStart": 2, "fEnd": 36})
    rid = c.post("/render", json=body, headers=_h(key)).json()["renderId"]
    final = wait_for(c, rid, key, {"completed", "failed", "cancelled"})
    assert final["status"] == "failed", final
    assert "cannot be decoded" in final["reason"]
    wait_until(
        lambda: all(
            ch.status not in (JobStatus.Pending, JobStatus.Processing) for ch in _chunks(e.db, rid)
        ),
        30,
        "every chunk stopped",
    )
    assert any(ch.status == JobStatus.Failed for ch in _chunks(e.db, rid))
    wait_until(lambda: tmp_render_files(e.storage) == [], 30, "chunk files removed")
    user = run(user_row(e.db, uid))
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0
    assert user.storage_used_bytes == 0


def test_budget_exhausted_in_a_chunk_fails_the_render(env: tuple[RenderEnv, Any]) -> None:
    from api.schemas.renders import RenderRequest
    from jobs.models import User
    from jobs.renders.submission import submit_renders

    e, c = env
    uid, key = run(add_user(e.db, "tight"))
    tid = e.template(uid, frames=150)
    slow = {"bitrate": 200_000, "fpsNum": 240, "res": [320, 180], "preset": 0, "gop": 5}
    spec = RenderRequest.model_validate(render_body(tid, "long", encoderConfig=slow)).to_spec()

    async def submit_with_small_budget() -> str:
        # 100 ms reserved and nothing free, before a worker can claim it: the chunks' charges
        # run out mid-way.
        async with e.db.session() as s:
            user = await s.get(User, uid)
            assert user is not None
            (render,) = await submit_renders(s, e.settings, user, [spec])
            render.reserved_render_ms = 100
            await s.execute(
                sa.update(User)
                .where(User.id == uid)
                .values(render_reserved_ms=100, render_budget_ms=100)
            )
            return str(render.id)

    rid = run(submit_with_small_budget())
    final = wait_for(c, rid, key, {"failed", "completed", "cancelled"})
    if final["status"] == "completed":
        pytest.skip("this machine rendered 1200 frames before the first charge")
    assert final["status"] == "failed", final
    assert final["reason"] == "Insufficient render time budget"
    assert final["failureCode"] == "insufficient_render_budget"
    wait_until(
        lambda: all(
            ch.status not in (JobStatus.Pending, JobStatus.Processing) for ch in _chunks(e.db, rid)
        ),
        30,
        "every chunk stopped",
    )
    wait_until(lambda: tmp_render_files(e.storage) == [], 30, "chunk files removed")
    user = run(user_row(e.db, uid))
    row = run(render_row(e.db, rid))
    # Never more than the budget, whichever chunks charged it.
    assert user.render_used_ms == row.render_time_ms == 100
    assert user.render_reserved_ms == 0 and row.reserved_render_ms == 0
