"""What real clients rely on, over real HTTP (uvicorn on loopback, embedded mode): strict
request bodies that name typos, bounded numbers, the JSON body limit, batch admission, HEAD,
trailing slashes, case-insensitive status filters, CORS, the Bearer hint, offline docs and
the OpenAPI document's promises."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_render_support import (
    LiveServer,
    RenderEnv,
    add_audio,
    api_key,
    client_for,
    render_body,
)

pytestmark = pytest.mark.integration

ADMIN = "test-admin-key"
ORIGIN = "http://app.example"


class Env(RenderEnv):
    pass


@pytest.fixture(scope="module")
def template_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http-templates")


@pytest.fixture(scope="module")
def idle(
    tmp_path_factory: pytest.TempPathFactory, template_cache: Path
) -> Iterator[tuple[Env, Any]]:
    """One service for the module (each test uses its own account): no worker threads
    (renders stay pending); CORS for ``ORIGIN``; admin API on."""
    tmp = tmp_path_factory.mktemp("http-contract")
    e = Env(tmp, template_cache, worker=False, cors_origins=ORIGIN, admin_key=ADMIN)
    with LiveServer(e.app) as server, client_for(server.url) as client:
        yield e, client


@pytest.mark.parametrize(
    ("change", "named", "suggested"),
    [
        (
            {"customisationMap": [{"layerId": "headline", "text": "x"}]},
            "customisationMap",
            "customizationMap",
        ),
        ({"jobinfo": {"fStart": 0, "fEnd": 5}}, "jobinfo", "jobInfo"),
        ({"template_id": "x"}, "template_id", "templateId"),
        ({"encoderConfig": {"bitrate": 200_000, "bitrat": 1}}, "bitrat", "bitrate"),
        ({"encoderConfig": {"bitrate": 200_000, "fps_num": 30}}, "fps_num", "fpsNum"),
        ({"customizationMap": [{"layerId": "headline", "txt": "x"}]}, "txt", "text"),
        ({"jobInfo": {"fstart": 0}}, "fstart", "fStart"),
    ],
)
def test_unknown_render_fields_are_400_naming_the_field_and_the_likely_one(
    idle: tuple[Env, Any], change: dict[str, Any], named: str, suggested: str
) -> None:
    e, c = idle
    uid, key = e.user(f"typo-{named}")
    tid = e.template(uid, frames=6)
    body = render_body(tid)
    if "template_id" in change:
        body.pop("templateId")
    body.update(change)
    for path, payload in (("/render", body), ("/render/batch", {"items": [body]})):
        r = c.post(path, json=payload, headers=api_key(key))
        assert r.status_code == 400, (path, r.text)
        detail = r.json()["detail"]
        assert f"'{named}'" in detail and f"did you mean '{suggested}'" in detail, detail
    assert c.get("/render/active", headers=api_key(key)).json() == []


def test_unknown_fields_are_refused_on_every_json_endpoint(idle: tuple[Env, Any]) -> None:
    e, c = idle
    uid, key = e.user("strict")
    tid = e.template(uid, frames=6)
    campaign = c.post("/campaign", json={"name": "c"}, headers=api_key(key)).json()["id"]
    cases = [
        ("/campaign", {"nmae": "x"}, "name", api_key(key)),
        ("/audio-asset-group", {"name": "g", "colour": 1}, None, api_key(key)),
        (
            f"/campaign/{campaign}/template-instances",
            {"templateId": str(tid), "name": "i", "customisationMap": []},
            "customizationMap",
            api_key(key),
        ),
        (f"/template/{tid}/preview", {"frames": 1}, "frame", api_key(key)),
        ("/admin/users", {"name": "bob", "quotaMb": 5}, "quotaMB", {"X-Admin-Key": ADMIN}),
    ]
    for path, body, hint, headers in cases:
        r = c.post(path, json=body, headers=headers)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["code"] in ("invalid_request", "invalid_customization"), r.text
        detail = r.json()["detail"]
        bad = next(k for k in body if k not in ("name", "templateId"))
        assert f"'{bad}'" in detail, detail
        if hint:
            assert f"did you mean '{hint}'" in detail, detail
    # Multipart uploads: the form's text fields are checked the same way.
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data.json", "{}")
    r = c.post(
        "/template/upload",
        headers=api_key(key),
        files={"file": ("t.zip", archive.getvalue(), "application/zip")},
        data={"nmae": "promo"},
    )
    assert r.status_code == 400 and "'nmae' (did you mean 'name'?)" in r.json()["detail"]
    tmp = e.storage.root / "tmp"
    assert not tmp.exists() or not list(tmp.iterdir())
    r = c.patch(f"/admin/users/{uid}", json={"maxConcurrent": 3}, headers={"X-Admin-Key": ADMIN})
    assert r.status_code == 400 and "did you mean 'maxConcurrentRenders'" in r.json()["detail"]


def test_numbers_are_bounded_and_named_never_500(idle: tuple[Env, Any]) -> None:
    e, c = idle
    uid, key = e.user("numbers")
    tid = e.template(uid, frames=6)
    huge = str(2**70)
    for path in ("/audio/list", "/render/all", "/render/history", "/template/history"):
        r = c.get(path, params={"skip": huge}, headers=api_key(key))
        assert r.status_code == 400 and "'skip'" in r.json()["detail"], (path, r.text)
    admin = {"X-Admin-Key": ADMIN}
    for field in ("quotaMB", "renderBudgetMs", "maxConcurrentRenders"):
        r = c.patch(f"/admin/users/{uid}", json={field: 10**30}, headers=admin)
        assert r.status_code == 400 and f"'{field}'" in r.json()["detail"], r.text
        r = c.post("/admin/users", json={"name": f"n{field}", field: 10**30}, headers=admin)
        assert r.status_code == 400 and f"'{field}'" in r.json()["detail"], r.text
    # Raw JSON a client library would never produce, as an attacker sends it.
    head = '{"templateId": "' + str(tid) + '", '
    enc = '"encoderConfig": {"bitrate": 200000'
    raw_bodies = {
        "fpsNum": head + '"name": "n", ' + enc + ', "fpsNum": 1e999}}',
        "res": head + '"name": "n", ' + enc + ', "res": [' + "9" * 5000 + ", 64]}}",
        "fEnd": head + '"name": "n", ' + enc + '}, "jobInfo": {"fEnd": ' + huge + "}}",
        "name": head + '"name": "' + "n" * 300 + '", ' + enc + "}}",
    }
    for field, raw in raw_bodies.items():
        r = c.post(
            "/render",
            content=raw,
            headers={**api_key(key), "Content-Type": "application/json"},
        )
        assert r.status_code == 400, (field, r.text)
        assert field in r.json()["detail"], (field, r.text)
    assert c.get("/health").status_code == 200


def test_json_bodies_over_the_limit_are_413_without_reading_them(idle: tuple[Env, Any]) -> None:
    e, c = idle
    _uid, key = e.user("big")
    limit = e.settings.max_json_body_bytes
    padding = "x" * (limit + 10)
    r = c.post("/render", json={"name": padding}, headers=api_key(key))
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large", r.text

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(64):  # 4 MiB in all, with no Content-Length
            yield b"x" * 65536
        yield b'"}'

    r = c.post(
        "/campaign",
        content=chunks(),
        headers={**api_key(key), "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and set(r.json()) == {"detail", "code"}
    # The limit is on JSON; the same size under it still parses and validates.
    r = c.post("/campaign", json={"name": "x" * 100_000}, headers=api_key(key))
    assert r.status_code == 400 and "'name'" in r.json()["detail"]


def test_batch_is_admitted_whole_and_queues_beyond_the_limit(idle: tuple[Env, Any]) -> None:
    e, c = idle
    uid, key = e.user("batch", max_concurrent=3)
    tid = e.template(uid, frames=6)
    batch = {"items": [render_body(tid, f"b{i}") for i in range(5)]}
    r = c.post("/render/batch", json=batch, headers=api_key(key))
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 5
    assert len(c.get("/render/active", headers=api_key(key)).json()) == 5
    refused = c.post("/render", json=render_body(tid), headers=api_key(key))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"].isdigit()
    detail = refused.json()["detail"]
    assert "5 renders" in detail and "limit is 3" in detail, detail
    again = c.post("/render/batch", json=batch, headers=api_key(key))
    assert again.status_code == 429 and "Retry-After" in again.headers


def test_head_slashes_status_case_group_and_bearer(idle: tuple[Env, Any]) -> None:
    e, c = idle
    uid, key = e.user("http")
    audio_id, _ = __import__("asyncio").run(add_audio(e.db, e.storage, uid))
    url = f"/audio/{audio_id}/download"
    got = c.get(url, headers=api_key(key))
    head = c.head(url, headers=api_key(key))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
    assert head.headers["accept-ranges"] == "bytes"
    part = c.head(url, headers={**api_key(key), "Range": "bytes=0-9"})
    assert part.status_code == 206 and part.headers["content-range"].startswith("bytes 0-9/")
    assert c.head("/template/all", headers=api_key(key)).status_code == 200

    slash = c.get("/audio/list/", headers=api_key(key))
    assert slash.status_code == 200, slash.text
    items = slash.json()
    assert items and items[0]["groupId"] == items[0]["audioAssetGroupId"]
    for path in ("/render/history", "/template/history", "/audio/history"):
        for value in ("Completed", "FAILED", "completed"):
            r = c.get(path, params={"status": value}, headers=api_key(key))
            assert r.status_code == 200, (path, value, r.text)
    r = c.get("/render/history", params={"status": "Done"}, headers=api_key(key))
    assert r.status_code == 400 and "'status'" in r.json()["detail"]

    r = c.get("/template/all", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]


def test_cors_preflight_and_exposed_headers(idle: tuple[Env, Any]) -> None:
    e, c = idle
    uid, key = e.user("cors")
    audio_id, _ = __import__("asyncio").run(add_audio(e.db, e.storage, uid))
    for path, method in (
        ("/template/upload", "POST"),
        ("/render", "POST"),
        (f"/audio/{audio_id}/download", "GET"),
        (f"/render/{uuid.uuid4()}", "DELETE"),
    ):
        r = c.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "x-api-key, range, content-type",
            },
        )
        assert r.status_code == 200, (path, r.text)
        assert r.headers["access-control-allow-origin"] == ORIGIN
        allowed = r.headers["access-control-allow-headers"].lower()
        assert "x-api-key" in allowed and "range" in allowed
    r = c.get(
        f"/audio/{audio_id}/download",
        headers={**api_key(key), "Origin": ORIGIN, "Range": "bytes=0-3"},
    )
    assert r.status_code == 206 and r.headers["access-control-allow-origin"] == ORIGIN
    exposed = r.headers["access-control-expose-headers"].lower()
    assert {"content-range", "content-length", "accept-ranges"} <= set(
        h.strip() for h in exposed.split(",")
    )
    other = c.options(
        "/render",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default(tmp_path: Path, template_cache: Path) -> None:
    e = Env(tmp_path, template_cache, worker=False)
    with LiveServer(e.app) as server, client_for(server.url) as c:
        r = c.get("/health", headers={"Origin": ORIGIN})
        assert "access-control-allow-origin" not in r.headers


def test_docs_are_served_without_a_cdn(idle: tuple[Env, Any]) -> None:
    _e, c = idle
    for page in ("/docs", "/redoc"):
        html = c.get(page).text
        assert "cdn." not in html and "unpkg" not in html, page
        assets = [part.split('"')[0] for part in html.split('src="')[1:]]
        assets += [part.split('"')[0] for part in html.split('href="')[1:]]
        local = [a for a in assets if a.startswith("/")]
        assert local, html
        for asset in local:
            assert c.get(asset).status_code == 200, asset


def test_openapi_document_promises(idle: tuple[Env, Any]) -> None:
    _e, c = idle
    doc = c.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name in (
        "RenderRequest",
        "EncoderConfig",
        "CustomizationEntry",
        "JobInfo",
        "JobStatus",
        "RenderJobDto",
        "RenderDto",
        "TemplateDto",
        "TemplateJobDto",
        "AudioDto",
        "AudioJobDto",
        "StorageStatusDto",
        "RenderTimeBudgetStatusDto",
        "ErrorResponse",
    ):
        assert name in schemas, name
    assert schemas["RenderRequest"]["additionalProperties"] is False
    assert schemas["EncoderConfig"]["properties"]["preset"]["maximum"] == 5
    assert "pending" in schemas["JobStatus"]["enum"]
    assert doc["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": doc["components"]["securitySchemes"]["ApiKeyAuth"]["description"],
    }
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (method, path)
            if op.get("security"):
                assert "401" in op["responses"], (method, path)
            if "requestBody" in op:
                assert "413" in op["responses"] and "400" in op["responses"], (method, path)
        if path.endswith("/download"):
            assert "head" in item, path
            content = item["get"]["responses"]["200"]["content"]
            assert "application/octet-stream" in content and "application/json" not in content
            assert all(v["schema"]["format"] == "binary" for v in content.values())
            assert "206" in item["get"]["responses"] and "416" in item["get"]["responses"]
    assert "429" in doc["paths"]["/render/batch"]["post"]["responses"]
    assert "402" in doc["paths"]["/render"]["post"]["responses"]


def test_quota_refusal_quotes_the_uploads_real_size(idle: tuple[Env, Any]) -> None:
    e, c = idle
    _uid, key = e.user("tiny", quota_mb=1)
    payload = b"\0" * 3_500_000
    r = c.post(
        "/template/upload",
        headers=api_key(key),
        files={"file": ("big.zip", payload, "application/zip")},
    )
    assert r.status_code == 400 and r.json()["code"] == "storage_quota_exceeded", r.text
    # The size comes from Content-Length, not from the bytes read before the refusal.
    assert "needs 3.5 MB" in r.json()["detail"], r.text
