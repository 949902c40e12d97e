"""Library endpoints in the embedded mode (SQLite + StubBroker worker threads in-process):
auth, routing, validation, template/audio/asset uploads and processing, quotas, tenant
isolation, deletes, admin and start-up recovery."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ADMIN_KEY, Embedded

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def upload(
    client: httpx.AsyncClient,
    key: str,
    path: Path,
    url: str = "/template/upload",
    *,
    filename: str | None = None,
    fields: dict[str, str] | None = None,
) -> httpx.Response:
    with path.open("rb") as fh:
        return await client.post(
            url,
            headers=h(key),
            files={"file": (filename or path.name, fh, "application/octet-stream")},
            data=fields or {},
        )


async def storage_used(client: httpx.AsyncClient, key: str) -> int:
    r = await client.get("/template/storage-status", headers=h(key))
    assert r.status_code == 200
    return int(r.json()["usedBytes"])


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, fixtures_module: ModuleType) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        "wav": fixtures_module.make_audio(d / "music.wav", 0.5),
        "png": fixtures_module.make_png(d / "photo.png", 32, 24),
        "mp4": fixtures_module.make_video(d / "clip.mp4", 64, 36, 6, 30),
    }


async def test_health_is_public_and_reports_dependencies(embedded: Embedded) -> None:
    r = await embedded.client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True and body["database"] is True and body["storage"] is True
    assert "encoders" in body


async def test_auth_missing_invalid_and_revoked_keys_are_401(embedded: Embedded) -> None:
    c = embedded.client
    r = await c.get("/template/all")
    assert r.status_code == 401 and r.json()["code"] == "missing_api_key"
    r = await c.get("/template/all", headers=h("vel_notarealkeyatall_0123456789"))
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    key = await embedded.user()
    assert (await c.get("/template/all", headers=h(key))).status_code == 200
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert (await c.get("/template/all", headers=h(wrong))).status_code == 401
    r = await c.delete(f"/admin/keys/{key[:12]}", headers={"X-Admin-Key": ADMIN_KEY})
    assert r.status_code == 200
    r = await c.get("/template/all", headers=h(key))
    assert r.status_code == 401 and set(r.json()) == {"detail", "code"}


async def test_routes_match_case_insensitively(embedded: Embedded) -> None:
    key = await embedded.user()
    for path in ("/Template/All", "/TEMPLATE/storage-status", "/Audio/List", "/Template/active"):
        r = await embedded.client.get(path, headers=h(key))
        assert r.status_code == 200, (path, r.text)
    missing = uuid.uuid4()
    r = await embedded.client.get(f"/Template/{str(missing).upper()}/Status", headers=h(key))
    assert r.status_code == 404 and r.json()["code"] == "not_found"


async def test_validation_errors_are_400_with_detail_and_code(embedded: Embedded) -> None:
    key = await embedded.user()
    c = embedded.client
    r = await c.get("/template/history?take=1000", headers=h(key))
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_request" and "take" in r.json()["detail"]
    r = await c.get("/template/not-a-uuid/status", headers=h(key))
    assert r.status_code == 400 and "template_id" in r.json()["detail"]
    r = await c.get("/template/history?status=weird", headers=h(key))
    assert r.status_code == 400 and "status" in r.json()["detail"]
    r = await c.post("/audio-asset-group", headers=h(key), json={})
    assert r.status_code == 400 and "name" in r.json()["detail"]
    r = await c.post("/template/upload", headers=h(key), json={"file": "x"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    r = await c.post(
        "/audio-asset-group",
        headers={**h(key), "Content-Type": "application/json"},
        content=b'{"name": oops}',
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    assert r.json()["detail"].startswith("request body is not valid JSON at character 9")
    r = await c.post(
        "/audio-asset-group",
        headers={**h(key), "Content-Type": "application/x-www-form-urlencoded"},
        content=b'{"name": "g"}',
    )
    assert r.status_code == 400 and "Content-Type: application/json" in r.json()["detail"]


async def test_file_in_the_wrong_form_field_is_named(embedded: Embedded, demo_zip: Path) -> None:
    key = await embedded.user()
    with demo_zip.open("rb") as fh:
        r = await embedded.client.post(
            "/template/upload", headers=h(key), files={"zip": ("demo.zip", fh, "application/zip")}
        )
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    assert "'file'" in r.json()["detail"] and "'zip'" in r.json()["detail"]
    assert embedded.tmp_files() == []


async def test_template_upload_is_processed_into_a_manifest(
    embedded: Embedded, demo_zip: Path
) -> None:
    key = await embedded.user()
    c = embedded.client
    r = await upload(c, key, demo_zip)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "uploaded"
    tid = r.json()["templateId"]
    await embedded.drain()

    status = (await c.get(f"/template/{tid}/status", headers=h(key))).json()
    assert status["status"] == "completed" and status["stage"] == "done"
    assert status["reason"] is None and status["completedAt"].endswith("Z")

    detail = (await c.get(f"/template/{tid}", headers=h(key))).json()
    manifest = detail["manifest"]
    assert (manifest["width"], manifest["height"], manifest["frames"]) == (160, 90, 12)
    assert {layer["id"] for layer in manifest["layers"]} >= {"bg", "band"}
    # sizeBytes is the file's size (as the reference says); storageBytes what it occupies.
    assert detail["sizeBytes"] == demo_zip.stat().st_size
    assert detail["storageBytes"] > demo_zip.stat().st_size

    listed = (await c.get("/template/all", headers=h(key))).json()
    assert [t["id"] for t in listed] == [tid]
    history = (await c.get("/template/history?status=completed", headers=h(key))).json()
    assert [j["templateId"] for j in history] == [tid]
    assert (await c.get("/template/active", headers=h(key))).json() == []
    assert await storage_used(c, key) == detail["storageBytes"]

    download = await c.get(f"/template/{tid}/download", headers=h(key))
    assert download.status_code == 200 and download.content == demo_zip.read_bytes()
    part = await c.get(f"/template/{tid}/download", headers={**h(key), "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == demo_zip.read_bytes()[10:20]
    assert embedded.tmp_files() == []


async def test_preview_renders_a_png(embedded: Embedded, demo_zip: Path) -> None:
    key = await embedded.user()
    tid = (await upload(embedded.client, key, demo_zip)).json()["templateId"]
    await embedded.drain()
    r = await embedded.client.get(f"/template/{tid}/preview?frame=3", headers=h(key))
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    r = await embedded.client.post(
        f"/template/{tid}/preview",
        headers=h(key),
        json={"frame": 0, "customizationMap": [{"layerId": "nope", "text": "x"}]},
    )
    # A renderer refusal and a store refusal both reach the client as 400 with their code,
    # through the one error handler (no route body converts them).
    assert r.status_code == 400 and "nope" in r.json()["detail"]
    assert r.json()["code"] == "invalid_customization"
    r = await embedded.client.post(
        f"/template/{tid}/preview",
        headers=h(key),
        json={"customizationMap": [{"layerId": "bg", "src": "/etc/passwd"}]},
    )
    assert r.status_code == 400 and "src" in r.json()["detail"]
    assert r.json()["code"] == "invalid_customization"
    r = await embedded.client.get(f"/template/{tid}/preview?frame=999", headers=h(key))
    assert r.status_code == 400 and r.json()["code"] == "invalid_frame_range"


@pytest.mark.parametrize(
    "name", ["traversal", "symlink", "missing_file", "fake_png", "declared_size", "schema_error"]
)
async def test_hostile_template_fails_with_reason_and_keeps_nothing(
    embedded: Embedded, hostile_zips: dict[str, tuple[Path, str]], name: str
) -> None:
    path, expected = hostile_zips[name]
    key = await embedded.user()
    r = await upload(embedded.client, key, path)
    assert r.status_code == 200, r.text
    tid = r.json()["templateId"]
    await embedded.drain()
    status = (await embedded.client.get(f"/template/{tid}/status", headers=h(key))).json()
    assert status["status"] == "failed"
    assert expected in status["reason"]
    history = (await embedded.client.get("/template/history?status=failed", headers=h(key))).json()
    assert [j["templateId"] for j in history] == [tid]
    assert await storage_used(embedded.client, key) == 0
    assert embedded.storage_files("templates") == []
    assert embedded.storage_files("template_files") == []
    assert embedded.tmp_files() == []


async def test_unexpected_crash_still_ends_failed_with_reason(
    embedded: Embedded, demo_zip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import renderer.template.manifest

    def explode(_loaded: Any) -> dict[str, Any]:
        raise ZeroDivisionError("decoder blew up")

    monkeypatch.setattr(renderer.template.manifest, "build_manifest", explode)
    key = await embedded.user()
    tid = (await upload(embedded.client, key, demo_zip)).json()["templateId"]
    await embedded.drain()
    status = (await embedded.client.get(f"/template/{tid}/status", headers=h(key))).json()
    assert status["status"] == "failed" and status["code"] == "internal_error"
    assert "ZeroDivisionError" in status["reason"] and "analyzing" in status["reason"]
    assert "decoder blew up" not in status["reason"]
    assert await storage_used(embedded.client, key) == 0


async def test_non_zip_upload_is_refused_at_once(embedded: Embedded, tmp_path: Path) -> None:
    key = await embedded.user()
    bogus = tmp_path / "t.zip"
    bogus.write_bytes(b"this is not a zip" * 100)
    r = await upload(embedded.client, key, bogus)
    assert r.status_code == 400 and r.json()["code"] == "invalid_file_format"
    assert embedded.tmp_files() == [] and embedded.storage_files("templates") == []


async def test_upload_past_the_size_limit_is_413(embedded_factory: Any, demo_zip: Path) -> None:
    async with embedded_factory(max_upload_bytes=4096) as svc:
        key = await svc.user()
        r = await upload(svc.client, key, demo_zip)
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
        assert await storage_used(svc.client, key) == 0
        assert svc.tmp_files() == [] and svc.storage_files("templates") == []


async def test_upload_over_quota_is_refused_and_stores_nothing(
    embedded: Embedded, demo_zip: Path
) -> None:
    key = await embedded.user(quota_bytes=10_000)
    before = (await embedded.client.get("/template/storage-status", headers=h(key))).json()
    r = await upload(embedded.client, key, demo_zip)
    assert r.status_code == 400
    assert r.json()["code"] == "storage_quota_exceeded"
    after = (await embedded.client.get("/template/storage-status", headers=h(key))).json()
    assert after == before
    assert embedded.tmp_files() == [] and embedded.storage_files("templates") == []
    assert (await embedded.client.get("/template/active", headers=h(key))).json() == []


async def test_extracted_size_over_quota_fails_the_job(embedded: Embedded, demo_zip: Path) -> None:
    key = await embedded.user(quota_bytes=demo_zip.stat().st_size + 1000)
    tid = (await upload(embedded.client, key, demo_zip)).json()["templateId"]
    await embedded.drain()
    status = (await embedded.client.get(f"/template/{tid}/status", headers=h(key))).json()
    assert status["status"] == "failed" and status["code"] == "storage_quota_exceeded"
    assert await storage_used(embedded.client, key) == 0
    assert embedded.storage_files("template_files") == []


async def test_delete_template_frees_storage_and_files(embedded: Embedded, demo_zip: Path) -> None:
    key = await embedded.user()
    c = embedded.client
    tid = (await upload(c, key, demo_zip)).json()["templateId"]
    await embedded.drain()
    assert await storage_used(c, key) > 0
    r = await c.delete(f"/template/{tid}", headers=h(key))
    assert r.status_code == 200
    assert await storage_used(c, key) == 0
    assert embedded.storage_files("templates") == []
    assert embedded.storage_files("template_files") == []
    assert (await c.get(f"/template/{tid}/status", headers=h(key))).status_code == 404
    assert (await c.delete(f"/template/{tid}", headers=h(key))).status_code == 404


async def test_audio_in_groups_is_validated_listed_and_downloadable(
    embedded: Embedded, media: dict[str, Path]
) -> None:
    key = await embedded.user()
    c = embedded.client
    group = (await c.post("/audio-asset-group", headers=h(key), json={"name": "Music"})).json()
    assert group["name"] == "Music" and group["createdAt"].endswith("Z")
    r = await upload(c, key, media["wav"], f"/audio-asset-group/{group['id']}/audio")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "processing"
    audio_id = r.json()["audioId"]
    other = await upload(c, key, media["wav"], "/audio/upload", fields={"groupId": group["id"]})
    defaulted = await upload(c, key, media["wav"], "/audio/upload", filename="jingle.wav")
    assert other.status_code == 200 and defaulted.status_code == 200
    await embedded.drain()

    status = (await c.get(f"/audio/{audio_id}/status", headers=h(key))).json()
    assert status["status"] == "completed" and status["audioGroupId"] == group["id"]
    detail = (await c.get(f"/audio/{audio_id}", headers=h(key))).json()
    assert detail["audioAssetGroupId"] == group["id"] and detail["originalFormat"] == "wav"
    assert detail["sizeBytes"] == media["wav"].stat().st_size
    assert detail["durationSeconds"] == pytest.approx(0.5, abs=0.05)

    listing = (await c.get("/audio/list?search=JINGLE", headers=h(key))).json()
    assert [a["name"] for a in listing] == ["jingle.wav"] and listing[0]["groupName"] == "Default"
    shown = (await c.get(f"/audio-asset-group/{group['id']}", headers=h(key))).json()
    assert len(shown["audios"]) == 2
    history = (await c.get("/audio/history?status=completed", headers=h(key))).json()
    assert len(history) == 3

    whole = await c.get(f"/audio/{audio_id}/download", headers=h(key))
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
    assert whole.content == media["wav"].read_bytes()
    tail = await c.get(f"/audio/{audio_id}/download", headers={**h(key), "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == media["wav"].read_bytes()[-10:]

    used = await storage_used(c, key)
    assert used == 3 * media["wav"].stat().st_size
    assert (await c.delete(f"/audio/{audio_id}", headers=h(key))).status_code == 200
    assert await storage_used(c, key) == used - media["wav"].stat().st_size
    assert (await c.delete(f"/audio-asset-group/{group['id']}", headers=h(key))).status_code == 200
    assert await storage_used(c, key) == media["wav"].stat().st_size
    assert len(embedded.storage_files("audio")) == 1


async def test_bad_audio_fails_with_reason(embedded: Embedded, tmp_path: Path) -> None:
    key = await embedded.user()
    bogus = tmp_path / "broken.mp3"
    bogus.write_bytes(b"\x00\x01garbage" * 500)
    r = await upload(embedded.client, key, bogus, "/audio/upload")
    assert r.status_code == 200
    audio_id = r.json()["audioId"]
    await embedded.drain()
    status = (await embedded.client.get(f"/audio/{audio_id}/status", headers=h(key))).json()
    assert status["status"] == "failed" and status["reason"]
    assert "broken.mp3" in status["reason"]
    assert await storage_used(embedded.client, key) == 0
    assert embedded.storage_files("audio") == []
    r = await upload(embedded.client, key, bogus, "/audio/upload", filename="notes.txt")
    assert r.status_code == 400 and r.json()["code"] == "unsupported_media"


async def test_assets_are_probed_for_kind(
    embedded: Embedded, media: dict[str, Path], tmp_path: Path
) -> None:
    key = await embedded.user()
    c = embedded.client
    image = (await upload(c, key, media["png"], "/asset/upload")).json()["assetId"]
    video = (await upload(c, key, media["mp4"], "/asset/upload")).json()["assetId"]
    bogus_path = tmp_path / "x.png"
    bogus_path.write_bytes(b"nope" * 50)
    bogus = (await upload(c, key, bogus_path, "/asset/upload")).json()["assetId"]
    await embedded.drain()
    img = (await c.get(f"/asset/{image}/status", headers=h(key))).json()
    vid = (await c.get(f"/asset/{video}/status", headers=h(key))).json()
    bad = (await c.get(f"/asset/{bogus}/status", headers=h(key))).json()
    assert (img["status"], img["kind"]) == ("completed", "image")
    assert (vid["status"], vid["kind"]) == ("completed", "video")
    assert bad["status"] == "failed" and "x.png" in bad["reason"]
    expected = media["png"].stat().st_size + media["mp4"].stat().st_size
    assert await storage_used(c, key) == expected
    assert (await c.delete(f"/asset/{image}", headers=h(key))).status_code == 200
    assert await storage_used(c, key) == media["mp4"].stat().st_size


async def test_other_accounts_ids_answer_404_everywhere(
    embedded: Embedded, demo_zip: Path, media: dict[str, Path]
) -> None:
    owner, intruder = await embedded.user(), await embedded.user()
    c = embedded.client
    tid = (await upload(c, owner, demo_zip)).json()["templateId"]
    gid = (await c.post("/audio-asset-group", headers=h(owner), json={"name": "g"})).json()["id"]
    aid = (await upload(c, owner, media["wav"], f"/audio-asset-group/{gid}/audio")).json()[
        "audioId"
    ]
    asset = (await upload(c, owner, media["png"], "/asset/upload")).json()["assetId"]
    await embedded.drain()

    probes = [
        ("GET", f"/template/{tid}/status"),
        ("GET", f"/template/{tid}"),
        ("GET", f"/template/{tid}/download"),
        ("GET", f"/template/{tid}/preview?frame=0"),
        ("POST", f"/template/{tid}/preview"),
        ("DELETE", f"/template/{tid}"),
        ("GET", f"/audio/{aid}"),
        ("GET", f"/audio/{aid}/status"),
        ("GET", f"/audio/{aid}/download"),
        ("DELETE", f"/audio/{aid}"),
        ("GET", f"/audio-asset-group/{gid}"),
        ("DELETE", f"/audio-asset-group/{gid}"),
        ("GET", f"/asset/{asset}/status"),
        ("DELETE", f"/asset/{asset}"),
    ]
    for method, url in probes:
        kwargs: dict[str, Any] = {"json": {}} if method == "POST" else {}
        r = await c.request(method, url, headers=h(intruder), **kwargs)
        assert r.status_code == 404, (method, url, r.status_code, r.text)
    r = await upload(c, intruder, media["wav"], f"/audio-asset-group/{gid}/audio")
    assert r.status_code == 404
    r = await upload(c, intruder, media["wav"], "/audio/upload", fields={"groupId": gid})
    assert r.status_code == 404
    for url in (
        "/template/all",
        "/template/history",
        "/audio/list",
        "/audio/history",
        "/audio-asset-group",
    ):
        assert (await c.get(url, headers=h(intruder))).json() == [], url
    # The owner still has everything.
    assert (await c.get(f"/template/{tid}", headers=h(owner))).status_code == 200
    assert (await c.get(f"/audio/{aid}", headers=h(owner))).status_code == 200


async def test_admin_manages_users_keys_and_quotas(embedded: Embedded) -> None:
    c = embedded.client
    admin = {"X-Admin-Key": ADMIN_KEY}
    assert (await c.get("/admin/users")).status_code == 401
    assert (await c.get("/admin/users", headers={"X-Admin-Key": "nope"})).status_code == 401
    r = await c.post("/admin/users", headers=admin, json={"name": "alice", "quotaMB": 7})
    assert r.status_code == 200, r.text
    alice = r.json()
    assert alice["quotaMB"] == 7 and alice["apiKey"].startswith("vel_")
    r = await c.post("/admin/users", headers=admin, json={"name": "alice"})
    assert r.status_code == 409 and r.json()["code"] == "user_exists", r.text
    status = (await c.get("/template/storage-status", headers=h(alice["apiKey"]))).json()
    assert status["quotaMB"] == 7
    r = await c.patch(
        f"/admin/users/{alice['id']}",
        headers=admin,
        json={"quotaMB": 9, "renderBudgetMs": 1234, "maxConcurrentRenders": 3},
    )
    assert r.status_code == 200
    assert (r.json()["quotaMB"], r.json()["renderBudgetMs"]) == (9, 1234)
    status = (await c.get("/template/storage-status", headers=h(alice["apiKey"]))).json()
    assert status["quotaMB"] == 9
    second = (await c.post(f"/admin/users/{alice['id']}/keys", headers=admin)).json()
    assert (await c.get("/template/all", headers=h(second["apiKey"]))).status_code == 200
    users = (await c.get("/admin/users", headers=admin)).json()
    assert [u["name"] for u in users] == ["alice"]
    stats = (await c.get("/admin/stats", headers=admin)).json()
    assert stats["users"] == 1 and stats["activeApiKeys"] == 2
    assert {"templates", "audio", "assets", "renders"} <= set(stats)
    unknown = uuid.uuid4()
    assert (
        await c.patch(f"/admin/users/{unknown}", headers=admin, json={"quotaMB": 1})
    ).status_code == 404


async def test_admin_api_is_disabled_without_admin_key(embedded_factory: Any) -> None:
    async with embedded_factory(admin_key=None) as svc:
        r = await svc.client.get("/admin/users", headers={"X-Admin-Key": "anything"})
        assert r.status_code == 403 and r.json()["code"] == "admin_disabled"


async def test_startup_recovery_runs_jobs_that_were_never_sent(
    settings_factory: Any, demo_zip: Path
) -> None:
    """A template committed without its message (crash before send) is processed when the
    service starts."""
    import shutil

    from api.app import build_service, create_app
    from api.auth import issue_key
    from jobs.db import run_migrations
    from jobs.library import store as library
    from jobs.models import new_id
    from jobs.quota import reserve_storage
    from jobs.store import accounts

    settings = settings_factory()
    run_migrations(settings.database_url)
    service = build_service(settings)
    async with service.db.session() as s:
        user = await accounts.create_user(s, "crashy", storage_quota_mb=50, render_budget_ms=1)
        key = (await issue_key(s, user.id)).key
        template_id = new_id()
        rel = service.storage.new_path("templates", user.id, template_id, ".zip")
        shutil.copy(demo_zip, service.storage.abs(rel))
        assert await reserve_storage(s, user.id, demo_zip.stat().st_size)
        await library.create_template(
            s,
            template_id=template_id,
            user_id=user.id,
            name="t",
            original_filename="t.zip",
            zip_path=rel,
            zip_bytes=demo_zip.stat().st_size,
        )
    app = create_app(service=service, run_worker=True, recover=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://v") as c:
            await Embedded(c, settings, service).drain()
            r = await c.get(f"/template/{template_id}/status", headers=h(key))
            assert r.json()["status"] == "completed"


async def test_openapi_documents_examples_and_error_responses(embedded: Embedded) -> None:
    spec = (await embedded.client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]

    def response_schema(path: str, method: str) -> dict[str, Any]:
        content = spec["paths"][path][method]["responses"]["200"]["content"]
        ref = content["application/json"]["schema"]["$ref"]
        return dict(schemas[ref.rsplit("/", 1)[-1]])

    upload = response_schema("/template/upload", "post")
    assert upload["examples"] == [
        {"status": "uploaded", "templateId": "123e4567-e89b-12d3-a456-426614174000"}
    ]
    storage = response_schema("/template/storage-status", "get")
    assert storage["examples"][0]["quotaMB"] == 5000
    assert set(storage["examples"][0]) == set(storage["properties"])
    assert response_schema("/audio/{audio_id}/status", "get")["examples"][1]["status"] == "failed"
    # Render DTOs carry the reference's example bodies (FastAPI drops null-valued keys from
    # examples, so those are subsets of the properties).
    created = response_schema("/render", "post")
    assert created["examples"] == [
        {"renderId": "123e4567-e89b-12d3-a456-426614174000", "status": "pending"}
    ]
    status = response_schema("/render/{render_id}/status", "get")
    assert {"renderId", "status", "progress", "encoderUsed"} <= set(status["examples"][0])
    assert set(status["examples"][0]) <= set(status["properties"])
    budget = response_schema("/render/render-time-budget-status", "get")
    assert set(budget["examples"][0]) == set(budget["properties"])
    body_ref = spec["paths"]["/render"]["post"]["requestBody"]["content"]["application/json"]
    request = schemas[body_ref["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert request["examples"][0]["encoderConfig"] == {"bitrate": 5000000, "codec": 0, "preset": 2}

    mine = ("/template", "/audio", "/audio-asset-group", "/asset", "/admin")
    checked = 0
    for path, operations in spec["paths"].items():
        if not path.startswith(mine):
            continue
        for method, op in operations.items():
            codes = set(op["responses"])
            assert "401" in codes and "default" in codes, (method, path, codes)
            assert "422" not in codes, (method, path)  # validation answers 400 here
            if "{" in path or op.get("parameters") or "requestBody" in op:
                assert "400" in codes or path == "/admin/keys/{prefix}", (method, path, codes)
            for code in codes - {"200", "206", "304"}:
                ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorResponse"), (method, path, code)
            assert op.get("summary"), (method, path)
            checked += 1
    assert checked >= 30
    assert set(spec["paths"]["/health"]["get"]["responses"]) == {"200", "503"}
