"""Render jobs in the embedded mode: SQLite, StubBroker and worker threads in the API process,
over real HTTP (uvicorn on loopback)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from api.schemas.renders import RenderRequest
from jobs.models import JobStatus
from jobs.models.render import Render
from tests.conftest import load_fixtures_module
from tests.integration.test_render_support import (
    LiveServer,
    RenderEnv,
    add_asset,
    add_audio,
    add_template,
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
    webhook_sink,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def template_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("render-templates")


class Env(RenderEnv):
    # One-piece renders here; chunked ones are covered by test_render_chunks.py.
    def __init__(self, tmp: Path, cache: Path, *, worker: bool = True) -> None:
        super().__init__(tmp, cache, chunk_frames=0, worker=worker)


@pytest.fixture
def env(tmp_path: Path, template_cache: Path) -> Iterator[tuple[Env, Any]]:
    e = Env(tmp_path, template_cache)
    with LiveServer(e.app) as server, client_for(server.url) as client:
        yield e, client


@pytest.fixture
def idle_env(tmp_path: Path, template_cache: Path) -> Iterator[tuple[Env, Any]]:
    """No worker threads: renders stay pending."""
    e = Env(tmp_path, template_cache, worker=False)
    with LiveServer(e.app) as server, client_for(server.url) as client:
        yield e, client


_h = api_key


def test_render_with_customisations_audio_and_ranged_download(env: tuple[Env, Any]) -> None:
    e, c = env
    uid, key = e.user("alice")
    tid = e.template(uid, frames=30)
    audio_id, _ = run(add_audio(e.db, e.storage, uid))
    photo = run(add_asset(e.db, e.storage, uid, "image"))
    body = render_body(
        tid,
        "Hello Anna",
        audioId=str(audio_id),
        jobInfo={"fStart": 6, "fEnd": 26},
        customizationMap=[
            {"layerId": "headline", "text": "Hi Anna!"},
            {"layerId": "photo", "assetId": str(photo)},
            {"layerId": "band", "color": "#ff006680"},
        ],
    )
    created = c.post("/Render", json=body, headers=_h(key))
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "pending"
    rid = created.json()["renderId"]

    done = wait_for(c, rid, key, {"completed", "failed", "cancelled"})
    assert done["status"] == "completed", done
    assert done["progress"] == 100 and done["framesTotal"] == 20
    assert done["videoDownloadUrl"] == f"/render/{rid}/download"
    assert done["encoderUsed"] == "libx264"
    assert done["renderTimeMilliseconds"] >= 0 and done["sizeBytes"] > 0

    whole = c.get(f"/render/{rid}/download", headers=_h(key))
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert len(whole.content) == done["sizeBytes"]
    part = c.get(f"/render/{rid}/download", headers={**_h(key), "Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{done['sizeBytes']}"
    assert part.content == whole.content[100:200]
    out = e.storage.root / "whole.mp4"
    out.write_bytes(whole.content)
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (64, 36)
        assert sum(1 for _ in container.decode(video=0)) == 20
    with av.open(str(out)) as container:
        assert container.streams.audio, "the audioId track must be mixed in"

    row = run(render_row(e.db, rid))
    user = run(user_row(e.db, uid))
    assert row.render_time_ms == done["renderTimeMilliseconds"]
    assert user.render_used_ms == row.render_time_ms and user.render_reserved_ms == 0
    assert user.storage_reserved_bytes == 0 and user.storage_used_bytes >= row.size_bytes
    assert tmp_render_files(e.storage) == []

    listed = c.get("/render/all", headers=_h(key)).json()
    assert [r["renderId"] for r in listed] == [rid] and listed[0]["isDirectRender"] is True
    assert c.get(f"/render/renders/{rid}", headers=_h(key)).json()["sizeBytes"] == row.size_bytes
    history = c.get("/render/history", params={"status": "completed"}, headers=_h(key)).json()
    assert [r["renderId"] for r in history] == [rid]
    assert c.get("/render/history?status=failed", headers=_h(key)).json() == []
    assert c.get("/render/active", headers=_h(key)).json() == []
    budget = c.get("/render/render-time-budget-status", headers=_h(key)).json()
    assert budget["usedMilliseconds"] == row.render_time_ms
    assert budget["remainingMilliseconds"] == 600_000 - row.render_time_ms


def test_another_accounts_render_is_404_on_every_route(env: tuple[Env, Any]) -> None:
    e, c = env
    uid, key = e.user("owner")
    _, other = e.user("intruder")
    tid = e.template(uid)
    rid = c.post("/render", json=render_body(tid), headers=_h(key)).json()["renderId"]
    wait_for(c, rid, key, {"completed"})

    for method, path in [
        ("GET", f"/render/{rid}/status"),
        ("GET", f"/render/{rid}/status?wait=1"),
        ("GET", f"/render/renders/{rid}"),
        ("GET", f"/render/{rid}/download"),
        ("POST", f"/render/{rid}/cancel"),
        ("DELETE", f"/render/{rid}"),
    ]:
        response = c.request(method, path, headers=_h(other))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] in {"not_found"}
    for path in ("/render/all", "/render/history", "/render/active"):
        assert c.get(path, headers=_h(other)).json() == []
    # The owner's template, audio and assets are not usable by the intruder either.
    assert c.post("/render", json=render_body(tid), headers=_h(other)).status_code == 404
    audio_id, _ = run(add_audio(e.db, e.storage, uid))
    intruder_id = run(user_row_by_key(e, other))
    own_tid = e.template(intruder_id)
    r = c.post("/render", json=render_body(own_tid, audioId=str(audio_id)), headers=_h(other))
    assert r.status_code == 400 and "not found" in r.json()["detail"]
    photo = run(add_asset(e.db, e.storage, uid, "image"))
    r = c.post(
        "/render",
        json=render_body(own_tid, customizationMap=[{"layerId": "photo", "assetId": str(photo)}]),
        headers=_h(other),
    )
    assert r.status_code == 400 and str(photo) in r.json()["detail"]
    assert c.get(f"/render/{rid}/status").status_code == 401
    # The owner still sees it: the refusals changed nothing.
    assert c.get(f"/render/{rid}/status", headers=_h(key)).json()["status"] == "completed"


async def user_row_by_key(e: Env, key: str) -> uuid.UUID:
    from api.auth import authenticate

    async with e.db.session() as s:
        user = await authenticate(s, key)
        assert user is not None
        return user.id


@pytest.mark.parametrize(
    ("change", "code", "needle"),
    [
        ({"encoderConfig": {"preset": 5}}, "invalid_encoder_config", "bitrate' is required"),
        ({"encoderConfig": {"bitrate": 200_000, "codec": 7}}, "invalid_encoder_config", "codec"),
        (
            {"encoderConfig": {"bitrate": 200_000, "gop": 10, "idr": 15}},
            "invalid_encoder_config",
            "multiple",
        ),
        ({"jobInfo": {"fStart": 10, "fEnd": 10}}, "invalid_frame_range", "fStart"),
        ({"jobInfo": {"fEnd": 31}}, "invalid_frame_range", "fEnd 31"),
        (
            {
                "encoderConfig": {"bitrate": 200_000, "fpsNum": 1},
                "jobInfo": {"fStart": 1, "fEnd": 2},
            },
            "invalid_frame_range",
            "jobInfo: frames [1, 2) contain no output frame at 1.000 fps",
        ),
        (
            {"customizationMap": [{"layerId": "nope", "text": "x"}]},
            "invalid_customization",
            "customizationMap[0] (layerId 'nope')",
        ),
        (
            {"customizationMap": [{"layerId": "band", "text": "x"}]},
            "invalid_customization",
            "'text' does not apply",
        ),
        (
            {"customizationMap": [{"layerId": "photo", "src": "/etc/passwd"}]},
            "invalid_customization",
            "'src' is not accepted",
        ),
        (
            {"customizationMap": [{"layerId": "photo", "assetId": "not-a-uuid"}]},
            "invalid_customization",
            "not a UUID",
        ),
        ({"templateInstanceId": str(uuid.uuid4())}, "invalid_request", "exactly one"),
        ({"name": ""}, "invalid_request", "name"),
        ({"webhookUrl": "file:///etc/passwd"}, "invalid_request", "webhookUrl"),
    ],
)
def test_invalid_requests_are_400_naming_the_problem(
    idle_env: tuple[Env, Any], change: dict[str, Any], code: str, needle: str
) -> None:
    e, c = idle_env
    uid, key = e.user("val")
    tid = e.template(uid)
    body = render_body(tid)
    body.update(change)
    response = c.post("/render", json=body, headers=_h(key))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert needle in response.json()["detail"]
    user = run(user_row(e.db, uid))
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0


@pytest.mark.parametrize(
    ("fps", "job", "frames"),
    [((24, 1), (1, 25), 19), ((25, 1), (1, 30), 24), ((30000, 1001), (3, 20), 17)],
)
def test_frames_total_is_what_the_render_will_write(
    idle_env: tuple[Env, Any], fps: tuple[int, int], job: tuple[int, int], frames: int
) -> None:
    """Submission counts output frames with the renderer's own plan (a rate conversion
    used to round a frame more than the render writes)."""
    from renderer.encode.config import EncoderConfig
    from renderer.plan import OutputPlan
    from renderer.template.loader import load_template

    e, c = idle_env
    uid, key = e.user("counter")
    tid = e.template(uid)
    config = {"bitrate": 200_000, "fpsNum": fps[0], "fpsDenum": fps[1]}
    body = render_body(tid, encoderConfig=config, jobInfo={"fStart": job[0], "fEnd": job[1]})
    created = c.post("/render", json=body, headers=_h(key))
    assert created.status_code == 200, created.text
    pending = c.get(f"/render/{created.json()['renderId']}/status", headers=_h(key)).json()
    model = load_template(demo_template(30, e.cache)).template
    plan = OutputPlan.of(model, EncoderConfig.parse(config), job)
    assert pending["status"] == "pending" and pending["framesTotal"] == plan.frames == frames


def test_asset_of_the_wrong_kind_is_refused(idle_env: tuple[Env, Any]) -> None:
    e, c = idle_env
    uid, key = e.user("kinds")
    tid = e.template(uid)
    clip = run(add_asset(e.db, e.storage, uid, "video"))
    body = render_body(tid, customizationMap=[{"layerId": "photo", "assetId": str(clip)}])
    response = c.post("/render", json=body, headers=_h(key))
    assert response.status_code == 400
    assert "needs an image asset" in response.json()["detail"]


def _set_asset_status(e: Env, asset_id: uuid.UUID, status: JobStatus) -> None:
    import sqlalchemy as sa

    from jobs.models import Asset

    async def update() -> None:
        async with e.db.session() as s:
            await s.execute(sa.update(Asset).where(Asset.id == asset_id).values(status=status))

    run(update())


def test_one_asset_rule_for_submission_preview_and_worker(idle_env: tuple[Env, Any]) -> None:
    """Submission and the template preview refuse an unusable asset with the same code and
    message; a render whose asset went away after submission fails with its own reason."""
    from jobs.renders.single import render_job

    e, c = idle_env
    uid, key = e.user("assets")
    stranger, _ = e.user("stranger")
    tid = e.template(uid)
    mine, pending, deleted = (run(add_asset(e.db, e.storage, uid, "image")) for _ in range(3))
    _set_asset_status(e, pending, JobStatus.Pending)
    _set_asset_status(e, deleted, JobStatus.Deleted)
    theirs = run(add_asset(e.db, e.storage, stranger, "image"))
    unknown = uuid.uuid4()
    where = "customizationMap[0] (layerId 'photo')"
    expected = {
        unknown: f"{where}: asset {unknown} not found",
        theirs: f"{where}: asset {theirs} not found",
        deleted: f"{where}: asset {deleted} not found",
        pending: f"{where}: asset {pending} is pending, not completed",
    }
    for asset_id, detail in expected.items():
        entries = [{"layerId": "photo", "assetId": str(asset_id)}]
        submitted = c.post(
            "/render", json=render_body(tid, customizationMap=entries), headers=_h(key)
        )
        previewed = c.post(
            f"/template/{tid}/preview", json={"customizationMap": entries}, headers=_h(key)
        )
        for response in (submitted, previewed):
            assert response.status_code == 400, response.text
            assert response.json() == {"detail": detail, "code": "invalid_customization"}

    entries = [{"layerId": "photo", "assetId": str(mine)}]
    response = c.post("/render", json=render_body(tid, customizationMap=entries), headers=_h(key))
    assert response.status_code == 200, response.text
    rid = response.json()["renderId"]
    _set_asset_status(e, mine, JobStatus.Deleted)
    run(render_job(e.db, e.settings, e.storage, uuid.UUID(rid)))
    row = run(render_row(e.db, rid))
    assert (row.status, row.failure_code) == (JobStatus.Failed, "invalid_customization")
    assert row.reason == f"customizationMap[0]: asset {mine} was deleted before rendering"


def test_no_budget_is_402_and_reserves_nothing(idle_env: tuple[Env, Any]) -> None:
    e, c = idle_env
    uid, key = e.user("broke", budget_ms=500)
    tid = e.template(uid)
    response = c.post("/render", json=render_body(tid), headers=_h(key))
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_render_budget"
    user = run(user_row(e.db, uid))
    assert (user.render_used_ms, user.render_reserved_ms, user.storage_reserved_bytes) == (0, 0, 0)
    assert c.get("/render/active", headers=_h(key)).json() == []


def test_concurrency_limit_is_429_and_cancel_pending_frees_a_slot(
    idle_env: tuple[Env, Any],
) -> None:
    e, c = idle_env
    uid, key = e.user("busy", max_concurrent=2)
    tid = e.template(uid)
    ids = [c.post("/render", json=render_body(tid), headers=_h(key)) for _ in range(2)]
    assert [r.status_code for r in ids] == [200, 200]
    third = c.post("/render", json=render_body(tid), headers=_h(key))
    assert third.status_code == 429
    assert third.json()["detail"].startswith("Maximum concurrent renders reached")
    reserved_before = run(user_row(e.db, uid)).render_reserved_ms

    first = ids[0].json()["renderId"]
    cancelled = c.post(f"/render/{first}/cancel", headers=_h(key))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert c.post(f"/render/{first}/cancel", headers=_h(key)).status_code == 409
    user = run(user_row(e.db, uid))
    assert user.render_reserved_ms < reserved_before and user.render_used_ms == 0
    assert c.post("/render", json=render_body(tid), headers=_h(key)).status_code == 200
    active = c.get("/render/active", headers=_h(key)).json()
    assert len(active) == 2 and {a["status"] for a in active} == {"pending"}
    pending = active[0]["renderId"]
    refused = c.delete(f"/render/{pending}", headers=_h(key))
    assert refused.status_code == 400 and refused.json()["code"] == "render_active"


def test_batch_is_all_or_nothing(idle_env: tuple[Env, Any]) -> None:
    e, c = idle_env
    uid, key = e.user("batcher")
    tid = e.template(uid)
    bad = {
        "items": [
            render_body(tid, "a"),
            render_body(tid, "b", customizationMap=[{"layerId": "ghost", "text": "x"}]),
        ]
    }
    response = c.post("/render/batch", json=bad, headers=_h(key))
    assert response.status_code == 400 and response.json()["detail"].startswith("items[1]: ")
    assert c.get("/render/active", headers=_h(key)).json() == []
    good = {"items": [render_body(tid, f"n{i}") for i in range(3)]}
    response = c.post("/render/batch", json=good, headers=_h(key))
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert len({i["renderId"] for i in items}) == 3
    assert {a["name"] for a in c.get("/render/active", headers=_h(key)).json()} == {
        "n0",
        "n1",
        "n2",
    }
    too_many = {"items": [render_body(tid)] * 101}
    assert c.post("/render/batch", json=too_many, headers=_h(key)).status_code == 400


def test_unknown_lottie_text_key_is_400_at_submission(
    idle_env: tuple[Env, Any], tmp_path: Path
) -> None:
    """lottieText keys are checked against the stored manifest's text layer names when the
    render (or a template instance) is submitted, not when a worker renders it."""
    e, c = idle_env
    uid, key = e.user("lottie")
    source = load_fixtures_module().make_demo_template(
        tmp_path / "lottie-demo", width=64, height=36, fps=30, frames=12, lottie=True
    )
    tid = run(add_template(e.db, e.storage, uid, source))
    ghost = [{"layerId": "burst", "lottieText": {"Ghost": "x"}}]
    response = c.post("/render", json=render_body(tid, customizationMap=ghost), headers=_h(key))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_customization"
    detail = response.json()["detail"]
    assert "customizationMap[0]" in detail and "burst" in detail
    assert "'Ghost' is not a text layer" in detail and "'Title'" in detail
    assert c.get("/render/active", headers=_h(key)).json() == []

    cid = c.post("/campaign", json={"name": "L"}, headers=_h(key)).json()["id"]
    instance = {"templateId": str(tid), "name": "i", "customizationMap": ghost}
    refused = c.post(f"/campaign/{cid}/template-instances", json=instance, headers=_h(key))
    assert refused.status_code == 400 and "'Ghost' is not a text layer" in refused.json()["detail"]

    title = [{"layerId": "burst", "lottieText": {"Title": "NEW"}}]
    accepted = c.post("/render", json=render_body(tid, customizationMap=title), headers=_h(key))
    assert accepted.status_code == 200, accepted.text
    row = run(render_row(e.db, accepted.json()["renderId"]))
    assert row.request["customizationMap"][0]["lottieText"] == {"Title": "NEW"}
    instance["customizationMap"] = title
    made = c.post(f"/campaign/{cid}/template-instances", json=instance, headers=_h(key))
    assert made.status_code == 200, made.text


def _long_body(tid: uuid.UUID, **extra: Any) -> dict[str, Any]:
    # 150 template frames sampled at 240 fps and 320x180: 1200 larger output frames, a few
    # seconds of work from a tiny fixture.
    return render_body(
        tid,
        "long",
        encoderConfig={"bitrate": 200_000, "fpsNum": 240, "res": [320, 180], "preset": 0},
        **extra,
    )


def test_cancel_processing_render_stops_it_and_charges_time(env: tuple[Env, Any]) -> None:
    e, c = env
    uid, key = e.user("canceller")
    tid = e.template(uid, frames=150)
    rid = c.post("/render", json=_long_body(tid), headers=_h(key)).json()["renderId"]
    wait_until(
        lambda: c.get(f"/render/{rid}/status", headers=_h(key)).json()["framesDone"] > 0,
        60,
        "render started producing frames",
    )
    response = c.post(f"/render/{rid}/cancel", headers=_h(key))
    assert response.status_code == 200 and response.json()["status"] in {"cancelling", "cancelled"}
    final = wait_for(c, rid, key, {"cancelled", "completed", "failed"}, limit_s=30)
    assert final["status"] == "cancelled", final
    assert final["framesDone"] < final["framesTotal"]
    assert c.get(f"/render/{rid}/download", headers=_h(key)).status_code == 404
    assert c.post(f"/render/{rid}/cancel", headers=_h(key)).status_code == 409
    row = run(render_row(e.db, rid))
    user = run(user_row(e.db, uid))
    assert row.render_time_ms > 0 and user.render_used_ms == row.render_time_ms
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0
    assert row.output_path is None
    assert tmp_render_files(e.storage) == []
    assert not list((e.storage.root / "renders").rglob("*.mp4"))


def test_budget_exhausted_mid_render_fails_with_reason(env: tuple[Env, Any]) -> None:
    import sqlalchemy as sa

    from jobs.models import User
    from jobs.renders.submission import submit_renders

    e, c = env
    uid, key = e.user("tight")
    tid = e.template(uid, frames=150)
    body = _long_body(tid)
    spec = RenderRequest.model_validate(body).to_spec()

    async def submit_with_small_budget() -> str:
        # Shrink the reservation to 100 ms and leave no free budget, in the submitting
        # transaction (before a worker can claim it): the render must run out mid-way.
        async with e.db.session() as s:
            user = await s.get(User, uid)
            assert user is not None
            (render,) = await submit_renders(s, e.settings, user, [spec])
            cut = render.reserved_render_ms - 100
            render.reserved_render_ms = 100
            await s.execute(
                sa.update(User)
                .where(User.id == uid)
                .values(render_reserved_ms=100, render_budget_ms=100)
            )
            assert cut > 0
            return str(render.id)

    rid = run(submit_with_small_budget())
    final = wait_for(c, rid, key, {"failed", "completed", "cancelled"})
    if final["status"] == "completed":
        pytest.skip("this machine rendered 1200 frames before the first charge")
    assert final["status"] == "failed", final
    assert final["reason"] == "Insufficient render time budget"
    assert final["failureCode"] == "insufficient_render_budget"
    assert final["framesDone"] < final["framesTotal"]
    user = run(user_row(e.db, uid))
    assert user.render_used_ms == 100 and user.render_reserved_ms == 0
    assert run(render_row(e.db, rid)).render_time_ms == 100
    assert tmp_render_files(e.storage) == []


def test_delete_render_frees_storage_and_file(env: tuple[Env, Any]) -> None:
    e, c = env
    uid, key = e.user("deleter")
    tid = e.template(uid)
    used_before = run(user_row(e.db, uid)).storage_used_bytes
    rid = c.post("/render", json=render_body(tid), headers=_h(key)).json()["renderId"]
    done = wait_for(c, rid, key, {"completed", "failed"})
    assert done["status"] == "completed"
    row = run(render_row(e.db, rid))
    path = e.storage.abs(row.output_path or "")
    assert path.is_file()
    assert run(user_row(e.db, uid)).storage_used_bytes == used_before + row.size_bytes
    response = c.delete(f"/render/{rid}", headers=_h(key))
    assert response.status_code == 200
    assert not path.exists()
    assert run(user_row(e.db, uid)).storage_used_bytes == used_before
    assert c.get(f"/render/{rid}/status", headers=_h(key)).status_code == 404
    assert c.delete(f"/render/{rid}", headers=_h(key)).status_code == 404
    assert run(user_row(e.db, uid)).render_used_ms == row.render_time_ms  # not refunded


def test_webhook_is_signed_and_retried(env: tuple[Env, Any]) -> None:
    e, c = env
    uid, key = e.user("hooked")
    tid = e.template(uid)
    with webhook_sink(fail_first=1) as sink:
        body = render_body(tid, webhookUrl=sink.url)
        rid = c.post("/render", json=body, headers=_h(key)).json()["renderId"]
        wait_for(c, rid, key, {"completed"})
        wait_until(lambda: len(sink.received) == 1, 60, "webhook delivery after a retry")
    assert sink.attempts == 2
    headers, raw = sink.received[0]
    # The account's own view hands out the secret an integrator verifies with.
    secret = c.get("/account", headers=_h(key)).json()["webhookSecret"]
    assert secret == run(user_row(e.db, uid)).webhook_secret
    assert sink.verify(secret, headers, raw)
    assert not sink.verify(secret + "x", headers, raw)
    payload = json.loads(raw)
    assert payload["renderId"] == rid and payload["status"] == "completed"
    assert (
        payload["event"] == "render.completed" and headers["x-velocity-event"] == payload["event"]
    )
    wait_until(
        lambda: run(render_row(e.db, rid)).webhook_delivered_at is not None, 10, "delivery noted"
    )


def test_webhook_secret_rotation(idle_env: tuple[Env, Any]) -> None:
    e, c = idle_env
    uid, key = e.user("rotator")
    other_uid, other_key = e.user("bystander")
    before = c.get("/account", headers=_h(key)).json()
    assert before["name"] == "rotator" and before["id"] == str(uid)
    rotated = c.post("/account/webhook-secret", headers=_h(key)).json()
    assert rotated["webhookSecret"] != before["webhookSecret"]
    assert run(user_row(e.db, uid)).webhook_secret == rotated["webhookSecret"]
    # Only the caller's own secret changes.
    assert (
        run(user_row(e.db, other_uid)).webhook_secret
        == (c.get("/account", headers=_h(other_key)).json()["webhookSecret"])
    )
    assert c.get("/account").status_code == 401


def test_campaign_mode_merges_defaults_and_requires_linked_audio(env: tuple[Env, Any]) -> None:
    e, c = env
    uid, key = e.user("marketer")
    _, other = e.user("stranger")
    tid = e.template(uid)
    campaign = c.post("/campaign", json={"name": "Spring"}, headers=_h(key)).json()
    cid = campaign["id"]
    bad = c.post(
        f"/campaign/{cid}/template-instances",
        json={"templateId": str(tid), "name": "x", "customizationMap": [{"layerId": "zz"}]},
        headers=_h(key),
    )
    assert bad.status_code == 400 and "zz" in bad.json()["detail"]
    instance = c.post(
        f"/campaign/{cid}/template-instances",
        json={
            "templateId": str(tid),
            "name": "Promo",
            "customizationMap": [{"layerId": "headline", "text": "Default"}],
        },
        headers=_h(key),
    )
    assert instance.status_code == 200, instance.text
    iid = instance.json()["id"]
    audio_id, group_id = run(add_audio(e.db, e.storage, uid))
    body = {
        "templateInstanceId": iid,
        "name": "CampaignVideo",
        "audioId": str(audio_id),
        "encoderConfig": {"bitrate": 200_000, "preset": 5},
        "customizationMap": [{"layerId": "headline", "text": "Mine"}],
    }
    unlinked = c.post("/render", json=body, headers=_h(key))
    assert unlinked.status_code == 400 and "not linked" in unlinked.json()["detail"]
    # Linking is per account.
    assert c.post(f"/campaign/{cid}/audio-groups/{group_id}", headers=_h(other)).status_code == 404
    assert c.post(f"/campaign/{cid}/audio-groups/{group_id}", headers=_h(key)).status_code == 200
    detail = c.get(f"/campaign/{cid}", headers=_h(key)).json()
    assert detail["audioGroupIds"] == [str(group_id)]
    assert [i["id"] for i in detail["templateInstances"]] == [iid]
    created = c.post("/render", json=body, headers=_h(key))
    assert created.status_code == 200, created.text
    rid = created.json()["renderId"]
    done = wait_for(c, rid, key, {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["campaignId"] == cid and done["templateInstanceId"] == iid
    assert done["templateInstanceName"] == "Promo" and done["isDirectRender"] is False
    row = run(render_row(e.db, rid))
    texts = [m.get("text") for m in row.request["customizationMap"]]
    assert texts == ["Default", "Mine"]  # defaults first: the render's own entry wins

    for method, path in [
        ("GET", f"/campaign/{cid}"),
        ("GET", f"/campaign/{cid}/template-instances"),
        ("DELETE", f"/campaign/{cid}"),
        ("DELETE", f"/campaign/{cid}/audio-groups/{group_id}"),
    ]:
        assert c.request(method, path, headers=_h(other)).status_code == 404, path
    assert c.get("/campaign/all", headers=_h(other)).json() == []
    assert c.post("/render", json=body, headers=_h(other)).status_code == 404
    assert c.delete(f"/campaign/{cid}/audio-groups/{group_id}", headers=_h(key)).status_code == 200
    assert c.delete(f"/campaign/{cid}", headers=_h(key)).status_code == 200
    assert c.get(f"/campaign/{cid}", headers=_h(key)).status_code == 404
    # The render outlives its campaign and keeps its names.
    kept = c.get(f"/render/renders/{rid}", headers=_h(key)).json()
    assert kept["templateInstanceName"] == "Promo" and kept["campaignId"] is None


def test_expired_lease_is_rendered_again_once(env: tuple[Env, Any]) -> None:
    """A render left processing by a dead worker goes back to pending when its lease
    expires (the sweeper) and completes once."""
    e, c = env
    uid, key = e.user("survivor")
    tid = e.template(uid)

    async def strand() -> str:
        from datetime import timedelta

        from jobs.models import utcnow

        async with e.db.session() as s:
            # Claimed by a worker that then died: no message queued, the lease running out.
            render = Render(
                id=uuid.uuid4(),
                user_id=uid,
                template_id=tid,
                template_name="demo",
                name="stranded",
                status=JobStatus.Processing,
                request={
                    "customizationMap": [],
                    "encoderConfig": {"bitrate": 200_000, "preset": 5},
                    "jobInfo": {"fStart": 0, "fEnd": 30},
                },
                frames_total=30,
                lease_owner="dead-worker",
                lease_expires_at=utcnow() - timedelta(seconds=1),
                attempts=1,
                created_at=utcnow(),
            )
            s.add(render)
        return str(render.id)

    rid = run(strand())
    stale = e.storage.root / "tmp" / f"render-{rid}-1.mp4"
    stale.write_bytes(b"partial")
    done = wait_for(c, rid, key, {"completed", "failed"}, limit_s=60)
    assert done["status"] == "completed", done
    row = run(render_row(e.db, rid))
    assert row.attempts == 2 and row.lease_owner is None
    assert not stale.exists()
    outputs = list((e.storage.root / "renders").rglob("*.mp4"))
    assert outputs == [e.storage.abs(row.output_path or "")]


def test_redelivered_finished_render_is_a_no_op(env: tuple[Env, Any]) -> None:
    """The broker may deliver a render's message again after it completed (a worker acked
    late, a sweeper re-queued it): running the actor again changes nothing."""
    from jobs.renders.actors import render as render_actor

    e, c = env
    uid, key = e.user("redelivered")
    tid = e.template(uid)
    created = c.post("/render", json=render_body(tid), headers=_h(key))
    assert created.status_code == 200, created.text
    rid = created.json()["renderId"]
    assert wait_for(c, rid, key, {"completed", "failed", "cancelled"})["status"] == "completed"

    def state() -> tuple[Any, ...]:
        row = run(render_row(e.db, rid))
        user = run(user_row(e.db, uid))
        path = e.storage.abs(row.output_path or "")
        stat = path.stat()
        return (
            (row.status, row.attempts, row.started_at, row.completed_at, row.lease_owner),
            (row.output_path, row.size_bytes, row.render_time_ms, row.frames_done),
            (user.render_used_ms, user.render_reserved_ms),
            (user.storage_used_bytes, user.storage_reserved_bytes),
            (stat.st_ino, stat.st_mtime_ns, path.read_bytes()),
            sorted((e.storage.root / "renders").rglob("*.mp4")),
        )

    before = state()
    assert before[0][:2] == (JobStatus.Completed, 1)
    render_actor.fn(rid)  # what a worker runs for the re-delivered message, synchronously
    assert state() == before
    assert tmp_render_files(e.storage) == []


def test_lease_expired_too_often_fails(idle_env: tuple[Env, Any]) -> None:
    from datetime import timedelta

    from jobs.models import utcnow
    from jobs.renders.base import MAX_ATTEMPTS
    from jobs.renders.sweeper import recover_renders

    e, c = idle_env
    uid, key = e.user("unlucky")
    tid = e.template(uid)
    rid = c.post("/render", json=render_body(tid), headers=_h(key)).json()["renderId"]

    async def expire() -> None:
        async with e.db.session() as s:
            row = await s.get(Render, uuid.UUID(rid))
            assert row is not None
            row.status = JobStatus.Processing
            row.lease_owner = "dead"
            row.lease_expires_at = utcnow() - timedelta(seconds=5)
            row.attempts = MAX_ATTEMPTS

    run(expire())
    counts = run(recover_renders(e.db, e.svc.broker, storage=e.storage, requeue_pending=False))
    assert counts["failed"] == 1
    status = c.get(f"/render/{rid}/status", headers=_h(key)).json()
    assert status["status"] == "failed" and status["failureCode"] == "worker_lost"
    user = run(user_row(e.db, uid))
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0


def test_template_audio_and_asset_delete_refused_while_a_render_is_active(
    idle_env: tuple[Env, Any],
) -> None:
    e, c = idle_env
    uid, key = e.user("librarian")
    tid = e.template(uid)
    audio_id, group_id = run(add_audio(e.db, e.storage, uid))
    photo = run(add_asset(e.db, e.storage, uid, "image"))
    spare = run(add_asset(e.db, e.storage, uid, "image"))
    body = render_body(
        tid,
        audioId=str(audio_id),
        customizationMap=[{"layerId": "photo", "assetId": str(photo)}],
    )
    rid = c.post("/render", json=body, headers=_h(key)).json()["renderId"]

    # An asset no active render names can go at once.
    assert c.delete(f"/asset/{spare}", headers=_h(key)).status_code == 200
    for path, code in [
        (f"/template/{tid}", "template_in_use"),
        (f"/audio/{audio_id}", "audio_in_use"),
        (f"/audio-asset-group/{group_id}", "audio_in_use"),
        (f"/asset/{photo}", "asset_in_use"),
    ]:
        response = c.delete(path, headers=_h(key))
        assert response.status_code == 400, (path, response.text)
        assert response.json()["code"] == code

    assert c.post(f"/render/{rid}/cancel", headers=_h(key)).json()["status"] == "cancelled"
    assert c.delete(f"/asset/{photo}", headers=_h(key)).status_code == 200
    assert c.delete(f"/audio/{audio_id}", headers=_h(key)).status_code == 200
    assert c.delete(f"/template/{tid}", headers=_h(key)).status_code == 200
    # The finished render keeps its template's name after the template is gone.
    status = c.get(f"/render/{rid}/status", headers=_h(key)).json()
    assert status["templateName"] == "demo" and status["status"] == "cancelled"
