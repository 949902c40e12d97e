"""The span cache through the service (embedded mode): later renders of a template reuse the
encoded frames no customised layer touches, and decode exactly as an uncached render."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.integration.test_render_support import (
    LiveServer,
    RenderEnv,
    add_template,
    api_key,
    client_for,
    render_body,
    run,
    user_row,
    wait_for,
)

pytestmark = pytest.mark.integration

FRAMES = 40


def _template(root: Path) -> Path:
    """10 fps, 4 s: a box sliding the whole time, a name card in the first 0.8 s."""
    root.mkdir(parents=True, exist_ok=True)
    data = {
        "version": 1,
        "width": 64,
        "height": 36,
        "fps": 10,
        "frames": FRAMES,
        "background": "#204060",
        "layers": [
            {
                "id": "bg",
                "type": "solid",
                "color": "#ff0000",
                "box": {"x": 0, "y": 20, "w": 8, "h": 8},
                "transform": {"position": [{"t": 0, "v": [4, 24]}, {"t": 39, "v": [60, 24]}]},
            },
            {
                "id": "name",
                "type": "solid",
                "color": "#ffffff",
                "box": {"x": 4, "y": 4, "w": 12, "h": 12},
                "out": 8,
            },
        ],
    }
    (root / "data.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[RenderEnv, Any]]:
    e = RenderEnv(tmp_path, tmp_path / "templates")
    with LiveServer(e.app) as server, client_for(server.url) as client:
        yield e, client


def _decode(data: bytes, tmp: Path) -> list[np.ndarray]:
    path = tmp / "decode.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def test_later_renders_reuse_static_spans(env: tuple[RenderEnv, Any], tmp_path: Path) -> None:
    e, c = env
    uid, key = e.user("cached")
    tid = run(add_template(e.db, e.storage, uid, _template(tmp_path / "tpl")))
    gop = {"bitrate": 200_000, "preset": 5, "gop": 5}

    def render(color: str, **extra: Any) -> tuple[dict[str, Any], bytes]:
        body = render_body(
            tid,
            f"n{color[1:]}",
            encoderConfig=gop,
            customizationMap=[{"layerId": "name", "color": color}],
            **extra,
        )
        created = c.post("/render", json=body, headers=api_key(key))
        assert created.status_code == 200, created.text
        done = wait_for(c, created.json()["renderId"], key, {"completed", "failed", "cancelled"})
        assert done["status"] == "completed", done
        download = c.get(done["videoDownloadUrl"], headers=api_key(key))
        assert download.status_code == 200
        return done, download.content

    first, a = render("#000000")
    assert first["cachedFrames"] == 0 and first["framesTotal"] == FRAMES
    cache_dir = e.settings.storage_dir / "segment-cache"
    assert list(cache_dir.glob("*/*.json")), "the static span was not cached"

    second, b = render("#00ff00")
    # GOPs [0, 5) and [5, 10) hold the name card; [10, 40) comes from the cache.
    assert second["cachedFrames"] == 30

    third, c_bytes = render("#00ff00", cache=False)
    assert third["cachedFrames"] == 0
    fb, fc, fa = _decode(b, tmp_path), _decode(c_bytes, tmp_path), _decode(a, tmp_path)
    assert len(fb) == len(fc) == FRAMES
    for index, (x, y) in enumerate(zip(fb, fc, strict=True)):
        assert np.array_equal(x, y), f"frame {index}: cached and uncached renders differ"
    assert not np.array_equal(fa[0], fb[0])  # the customised frames did change

    # The cache is the operator's storage: the account is charged its renders alone.
    user = run(user_row(e.db, uid))
    assert user.storage_used_bytes == len(a) + len(b) + len(c_bytes)
    assert user.storage_reserved_bytes == 0
