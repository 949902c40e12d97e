"""Signed download links: one real render (tiny) shared by the module, served by uvicorn."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.signing import sign_download
from tests.integration.test_render_support import (
    LiveServer,
    RenderEnv,
    add_audio,
    api_key,
    client_for,
    render_body,
    run,
    wait_for,
)

pytestmark = pytest.mark.integration


class World:
    def __init__(self, env: RenderEnv, client: Any) -> None:
        self.env, self.c = env, client
        self.uid, self.key = env.user("owner")
        self.tid = env.template(self.uid, frames=6)
        self.audio_id, _ = run(add_audio(env.db, env.storage, self.uid))
        created = client.post("/render", json=render_body(self.tid), headers=api_key(self.key))
        assert created.status_code == 200, created.text
        self.rid = created.json()["renderId"]
        done = wait_for(client, self.rid, self.key, {"completed", "failed", "cancelled"})
        assert done["status"] == "completed", done
        self.mp4 = client.get(f"/render/{self.rid}/download", headers=api_key(self.key)).content
        assert len(self.mp4) == done["sizeBytes"]

    @property
    def secret(self) -> bytes:
        secret: bytes = self.env.app.state.signing_secret
        return secret

    def signed(self, kind: str, object_id: Any, **params: Any) -> dict[str, Any]:
        response = self.c.post(
            f"/{kind}/{object_id}/signed-url", params=params, headers=api_key(self.key)
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp("signed")
    env = RenderEnv(tmp, tmp / "cache")
    with LiveServer(env.app) as server, client_for(server.url) as client:
        yield World(env, client)


def test_signed_render_link_streams_ranges_and_head_without_a_key(world: World) -> None:
    before = time.time()
    body = world.signed("render", world.rid, ttl=120)
    assert body["url"].startswith(f"/render/{world.rid}/download?expires=")
    assert before + 119 <= body["expires"] <= time.time() + 121
    assert body["expiresAt"].endswith("Z")
    url = body["url"]

    whole = world.c.get(url)
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.content == world.mp4
    part = world.c.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 10-19/{len(world.mp4)}"
    assert part.content == world.mp4[10:20]
    head = world.c.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(world.mp4))
    # The id's case and the path's case do not matter: the signature covers the object.
    assert (
        world.c.get(url.replace("/render/", "/Render/"), headers={"Range": "bytes=0-3"}).status_code
        == 206
    )
    # Without key and signature the download still needs the key.
    assert world.c.get(f"/render/{world.rid}/download").status_code == 401


def test_bad_signatures_are_403_before_any_lookup(world: World) -> None:
    url = world.signed("render", world.rid)["url"]
    path, _, query = url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    sig = params["signature"]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    cases = {
        "tampered": {"expires": params["expires"], "signature": flipped},
        "longer expiry": {"expires": str(int(params["expires"]) + 1), "signature": sig},
        "no signature": {"expires": params["expires"]},
        "no expiry": {"signature": sig},
        "not hex": {"expires": params["expires"], "signature": "é" * 64},
    }
    for name, query_params in cases.items():
        response = world.c.get(path, params=query_params)
        assert response.status_code == 403, (name, response.text)
        assert response.json()["code"] == "invalid_signature", name
    # A signature for one render does not open another (same owner).
    other = f"/render/{uuid.uuid4()}/download"
    response = world.c.get(other, params={"expires": params["expires"], "signature": sig})
    assert response.status_code == 403
    # A signed template link does not open the render of the same id space.
    tsig = world.signed("template", world.tid)["url"].partition("?")[2]
    assert world.c.get(f"/render/{world.rid}/download?{tsig}").status_code == 403


def test_expired_link_is_403(world: World) -> None:
    old = sign_download(world.secret, "render", uuid.UUID(world.rid), 60, now=time.time() - 120)
    response = world.c.get(old.url)
    assert response.status_code == 403
    assert response.json()["code"] == "signature_expired"


def test_unknown_or_foreign_ids_are_404(world: World) -> None:
    unknown = uuid.uuid4()
    for kind in ("render", "template", "audio"):
        response = world.c.post(f"/{kind}/{unknown}/signed-url", headers=api_key(world.key))
        assert response.status_code == 404, (kind, response.text)
        # A well-signed link to something that does not exist (or no longer does).
        link = sign_download(world.secret, kind, unknown, 60)
        assert world.c.get(link.url).status_code == 404, kind
    _, other_key = world.env.user("stranger")
    response = world.c.post(f"/render/{world.rid}/signed-url", headers=api_key(other_key))
    assert response.status_code == 404
    assert world.c.post(f"/render/{world.rid}/signed-url").status_code == 401
    for ttl in (0, 8 * 24 * 3600, "soon"):
        response = world.c.post(
            f"/render/{world.rid}/signed-url", params={"ttl": ttl}, headers=api_key(world.key)
        )
        assert response.status_code == 400, ttl


def test_template_and_audio_links(world: World) -> None:
    audio = world.c.get(world.signed("audio", world.audio_id)["url"])
    keyed = world.c.get(f"/audio/{world.audio_id}/download", headers=api_key(world.key))
    assert audio.status_code == 200 and audio.content == keyed.content
    assert audio.content[:4] == b"RIFF"
    # The template row of this test has no ZIP on disk: the signature is accepted and the
    # missing file answers 404, as the keyed download does.
    template_url = world.signed("template", world.tid)["url"]
    keyed_t = world.c.get(f"/template/{world.tid}/download", headers=api_key(world.key))
    assert world.c.get(template_url).status_code == keyed_t.status_code == 404
