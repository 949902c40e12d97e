"""Hostile uploads against the embedded service (issue 6): each case of
fixtures/hostile_archives.py ends as a failed job with its specific code and reason, the
quota ledger is exact (nothing reserved or used after a refusal; exactly the stored bytes
after a success), nothing stays on disk, and the service goes on serving."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Embedded
from tests.limit_cases import load_limit_cases_module

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ENDPOINTS = {"template": "/template/upload", "audio": "/audio/upload", "asset": "/asset/upload"}
ID_FIELD = {"template": "templateId", "audio": "audioId", "asset": "assetId"}
STATUS = {
    "template": "/template/{}/status",
    "audio": "/audio/{}/status",
    "asset": "/asset/{}/status",
}
STORED = ("templates", "template_files", "audio", "assets")


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    module: ModuleType = load_limit_cases_module()
    made: dict[str, Any] = module.make_limit_cases(tmp_path_factory.mktemp("limits"))
    return made


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def _upload(c: httpx.AsyncClient, key: str, kind: str, path: Path) -> str:
    with path.open("rb") as fh:
        r = await c.post(
            ENDPOINTS[kind],
            headers=h(key),
            files={"file": (path.name, fh, "application/octet-stream")},
        )
    assert r.status_code == 200, r.text
    return str(r.json()[ID_FIELD[kind]])


async def _ledger(svc: Embedded, key: str) -> tuple[int, int]:
    """(used, reserved) bytes of the key's account, straight from the users row."""
    from api.auth import authenticate

    async with svc.service.db.session() as s:
        user = await authenticate(s, key)
        assert user is not None
        return user.storage_used_bytes, user.storage_reserved_bytes


def _stored(svc: Embedded) -> list[Path]:
    return [p for kind in STORED for p in svc.storage_files(kind)] + svc.tmp_files()


async def test_every_hostile_upload_fails_with_its_reason_and_leaves_nothing(
    embedded: Embedded, cases: dict[str, Any], demo_zip: Path
) -> None:
    c = embedded.client
    key = await embedded.user()
    # over_quota fits this account's 100 MB quota; the next test gives it a small one.
    hostile = {name: case for name, case in cases.items() if name != "over_quota"}
    ids = {name: await _upload(c, key, case.kind, case.path) for name, case in hostile.items()}
    await embedded.drain()
    for name, case in hostile.items():
        status = (await c.get(STATUS[case.kind].format(ids[name]), headers=h(key))).json()
        assert status["status"] == "failed", (name, status)
        assert (status["code"], name) == (case.code, name), status["reason"]
        assert case.reason in status["reason"], (name, status["reason"])
        assert "unexpected" not in status["reason"], (name, status["reason"])
    assert await _ledger(embedded, key) == (0, 0)
    assert _stored(embedded) == []

    # Still serving: a good template goes through, and the ledger holds exactly its bytes.
    health = await c.get("/health")
    assert health.status_code == 200 and health.json()["ok"] is True
    tid = await _upload(c, key, "template", demo_zip)
    await embedded.drain()
    status = (await c.get(f"/template/{tid}/status", headers=h(key))).json()
    assert status["status"] == "completed", status
    on_disk = sum(p.stat().st_size for p in _stored(embedded))
    assert await _ledger(embedded, key) == (on_disk, 0)


async def test_archive_over_the_quota_is_refused_before_extraction(
    embedded: Embedded, cases: dict[str, Any]
) -> None:
    """4 MB extracted from a ~115 KB ZIP (ratio under the bomb limit) on a 1 MB account:
    refused from the declared sizes, so nothing is written; the ledger returns to zero."""
    case = cases["over_quota"]
    key = await embedded.user(quota_bytes=1024 * 1024)
    tid = await _upload(embedded.client, key, "template", case.path)
    await embedded.drain()
    status = (await embedded.client.get(f"/template/{tid}/status", headers=h(key))).json()
    assert (status["status"], status["code"]) == ("failed", "storage_quota_exceeded")
    assert case.reason in status["reason"]
    assert await _ledger(embedded, key) == (0, 0)
    assert _stored(embedded) == []


async def test_stored_template_past_the_new_limits_is_refused_at_render_not_500(
    embedded: Embedded, demo_zip: Path
) -> None:
    """A template stored before a limit existed (its definition edited in place here) is a
    400 naming the problem when rendered, not a 500."""
    import uuid

    import sqlalchemy as sa

    from jobs.models.library import Template
    from tests.integration.test_render_support import render_body

    c = embedded.client
    key = await embedded.user()
    tid = await _upload(c, key, "template", demo_zip)
    await embedded.drain()
    async with embedded.service.db.session() as s:
        row = await s.get(Template, uuid.UUID(tid))
        assert row is not None and row.definition is not None
        definition = dict(row.definition)
        definition["layers"] = [
            {**definition["layers"][0], "box": {"x": 0, "y": 0, "w": 16384, "h": 16384}},
            *definition["layers"][1:],
        ]
        await s.execute(
            sa.update(Template).where(Template.id == row.id).values(definition=definition)
        )
    r = await c.post("/render", json=render_body(tid), headers=h(key))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_template"
    assert "box is 16384x16384" in r.json()["detail"]


async def test_render_res_that_scales_boxes_past_the_limits_is_refused_at_submission(
    embedded: Embedded, tmp_path: Path
) -> None:
    """Nine full-canvas layers are nothing at 64x36 but 75 megapixels a frame at 4K."""
    import json
    import zipfile

    from tests.integration.test_render_support import render_body

    layers = [{"id": f"l{i}", "type": "solid", "color": "#123456"} for i in range(9)]
    data = {"width": 64, "height": 36, "fps": 30, "frames": 3, "layers": layers}
    archive = tmp_path / "stack.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data.json", json.dumps(data))
    c = embedded.client
    key = await embedded.user()
    tid = await _upload(c, key, "template", archive)
    await embedded.drain()
    assert (await c.get(f"/template/{tid}/status", headers=h(key))).json()["status"] == "completed"
    body = render_body(tid)
    body["encoderConfig"]["res"] = [3840, 2160]
    r = await c.post("/render", json=body, headers=h(key))
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_encoder_config"
    assert "encoderConfig.res" in r.json()["detail"] and "the limit per frame" in r.json()["detail"]
    # At the template's own size it is accepted.
    assert (await c.post("/render", json=render_body(tid), headers=h(key))).status_code == 200
