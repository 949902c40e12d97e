"""Hostile Lottie templates against the embedded service (SQLite + in-process workers): refused
at upload with the asset named; a file that crashes the engine fails its preview with a
reason and the API process goes on serving; cancel stops a render whose Lottie frame never
ends."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from renderer.media import lottie_doc, sandbox
from renderer.media.sandbox import SandboxLimits
from tests.integration.conftest import Embedded
from tests.integration.test_library_embedded import h, upload
from tests.integration.test_render_support import (
    LiveServer,
    RenderEnv,
    add_template,
    api_key,
    client_for,
    render_body,
    run,
    wait_for,
    wait_until,
)

pytestmark = [pytest.mark.integration]

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "hostile_lottie.py"


@pytest.fixture(scope="module")
def hostile() -> ModuleType:
    existing = sys.modules.get("hostile_lottie")
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location("hostile_lottie", FIXTURE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hostile_lottie"] = module
    spec.loader.exec_module(module)
    return module


def _template_folder(folder: Path, doc: dict[str, Any]) -> Path:
    (folder / "lottie").mkdir(parents=True, exist_ok=True)
    (folder / "lottie/intro.json").write_text(json.dumps(doc))
    data = {
        "version": 1,
        "name": "sticker",
        "width": 64,
        "height": 64,
        "fps": 10,
        "frames": 10,
        "layers": [{"id": "sticker", "type": "lottie", "src": "lottie/intro.json"}],
    }
    (folder / "data.json").write_text(json.dumps(data))
    return folder


def _zip(folder: Path, fixtures_module: ModuleType) -> Path:
    return fixtures_module.zip_folder(folder, folder.with_suffix(".zip"))  # type: ignore[no-any-return]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("self_referencing_precomp", "lottie/intro.json: precomp asset 'comp_0' contains itself"),
        ("cyclic_precomps", "in a cycle: 'comp_a' -> 'comp_b' -> 'comp_a'"),
        ("embedded_path_escape", "image asset 'img_0' is marked embedded"),
    ],
)
async def test_hostile_lottie_templates_are_refused_at_upload(
    embedded: Embedded,
    *,
    hostile: ModuleType,
    fixtures_module: ModuleType,
    tmp_path: Path,
    name: str,
    reason: str,
) -> None:
    key = await embedded.user()
    bad = _zip(_template_folder(tmp_path / name, getattr(hostile, name)()), fixtures_module)
    tid = (await upload(embedded.client, key, bad)).json()["templateId"]
    await embedded.drain()
    status = (await embedded.client.get(f"/template/{tid}/status", headers=h(key))).json()
    assert status["status"] == "failed" and status["code"] == "unsupported_media"
    assert reason in status["reason"]
    assert embedded.storage_files("template_files") == []


@pytest.mark.anyio
async def test_an_engine_crash_fails_the_upload_and_the_preview_not_the_api(
    embedded: Embedded,
    hostile: ModuleType,
    fixtures_module: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = embedded.client
    key = await embedded.user()
    good = _zip(_template_folder(tmp_path / "good", hostile.plain()), fixtures_module)
    tid = (await upload(c, key, good)).json()["templateId"]
    await embedded.drain()
    assert (await c.get(f"/template/{tid}/status", headers=h(key))).json()["status"] == "completed"
    stored = next(p for p in embedded.storage_files("template_files") if p.name == "intro.json")

    # Velocity's precomp check switched off: the cyclic file reaches ThorVG and segfaults it.
    monkeypatch.setattr(lottie_doc, "_check_precomps", lambda *_: None)
    before = sandbox.current_limits()
    sandbox.configure(SandboxLimits(frame_timeout_s=120.0))  # a crash, not a timeout
    try:
        bad = _zip(_template_folder(tmp_path / "bad", hostile.cyclic_precomps()), fixtures_module)
        bad_id = (await upload(c, key, bad)).json()["templateId"]
        await embedded.drain()
        status = (await c.get(f"/template/{bad_id}/status", headers=h(key))).json()
        assert status["status"] == "failed" and status["code"] == "lottie_crashed"
        assert status["reason"].startswith("lottie/intro.json: the animation crashed the Lottie")

        # The same file put in place of an accepted one: the preview draws it in the sandbox.
        stored.write_text(json.dumps(hostile.cyclic_precomps()))
        r = await c.get(f"/template/{tid}/preview?frame=0", headers=h(key))
        assert r.status_code == 400 and r.json()["code"] == "lottie_crashed"
        assert "layer 'sticker' (lottie/intro.json)" in r.json()["detail"]
    finally:
        sandbox.configure(before)

    stored.write_text(json.dumps(hostile.plain()))
    r = await c.get(f"/template/{tid}/preview?frame=0", headers=h(key))
    assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
    assert (await c.get("/health")).json()["ok"] is True


def test_cancel_stops_a_render_inside_an_endless_lottie_frame(
    tmp_path: Path, hostile: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = RenderEnv(tmp_path, tmp_path / "cache")
    uid, key = env.user("lottie")
    tid = run(
        add_template(env.db, env.storage, uid, _template_folder(tmp_path / "t", hostile.plain()))
    )
    stored = next(p for p in env.storage.root.rglob("intro.json"))
    # Expressions kept: the frame spins for ever; only cancel (or the far deadline) ends it.
    monkeypatch.setattr(lottie_doc, "_strip_expressions", lambda *_: 0)
    stored.write_text(json.dumps(hostile.infinite_expression()))
    before = sandbox.current_limits()
    sandbox.configure(SandboxLimits(frame_timeout_s=300.0, cpu_s=300.0))
    try:
        with LiveServer(env.app) as server, client_for(server.url) as c:
            rid = c.post("/render", json=render_body(tid), headers=api_key(key)).json()["renderId"]
            wait_until(
                lambda: (
                    c.get(f"/render/{rid}/status", headers=api_key(key)).json()["status"]
                    == "processing"
                ),
                60,
                "render started",
            )
            assert c.post(f"/render/{rid}/cancel", headers=api_key(key)).status_code == 200
            final = wait_for(c, rid, key, {"cancelled", "completed", "failed"}, limit_s=60)
            assert final["status"] == "cancelled", final
    finally:
        sandbox.configure(before)
