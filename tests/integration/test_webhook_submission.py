"""``POST /render`` refuses webhook URLs aimed inward with a 400 naming the URL, and
reserves nothing (issue 6, items 5 and 7). The URL table is ``fixtures/hostile_webhooks.py``;
delivery-time checks are in ``tests/unit/test_webhook_targets.py``."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.integration.test_render_support import (
    LiveServer,
    RenderEnv,
    api_key,
    client_for,
    render_body,
    run,
    user_row,
)

pytestmark = pytest.mark.integration


def _table() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "fixtures" / "hostile_webhooks.py"
    spec = importlib.util.spec_from_file_location("hostile_webhooks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TABLE = _table()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RenderEnv, Any]]:
    tmp = tmp_path_factory.mktemp("webhook-env")
    e = RenderEnv(tmp, tmp / "cache", worker=False, webhook_allow_private=False)
    with LiveServer(e.app) as server, client_for(server.url) as client:
        yield e, client


def test_every_inward_url_form_is_a_400_naming_it(env: tuple[RenderEnv, Any]) -> None:
    e, c = env
    uid, key = e.user("ssrf")
    tid = e.template(uid)
    wrong: list[str] = []
    for url, what in TABLE.INWARD:
        response = c.post("/render", json=render_body(tid, webhookUrl=url), headers=api_key(key))
        body = response.json()
        if response.status_code != 400 or url not in body.get("detail", ""):
            wrong.append(f"{url} ({what}): {response.status_code} {body}")
        elif body["code"] not in {"invalid_webhook_url", "invalid_request"}:
            wrong.append(f"{url} ({what}): code {body['code']}")
    assert wrong == []
    user = run(user_row(e.db, uid))
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0


def test_refusal_says_why_and_names_the_batch_item(env: tuple[RenderEnv, Any]) -> None:
    e, c = env
    uid, key = e.user("batcher")
    tid = e.template(uid)
    items = [
        render_body(tid, "ok", webhookUrl="http://93.184.215.14/hook"),
        render_body(tid, "bad", webhookUrl="http://2130706433:8000/admin/users"),
    ]
    response = c.post("/render/batch", json={"items": items}, headers=api_key(key))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_webhook_url"
    assert body["detail"].startswith("items[1]: webhookUrl 'http://2130706433:8000/admin/users'")
    assert "127.0.0.1, a loopback address" in body["detail"]
    user = run(user_row(e.db, uid))
    assert user.render_reserved_ms == 0 and user.storage_reserved_bytes == 0


def test_public_webhook_urls_are_accepted(env: tuple[RenderEnv, Any]) -> None:
    e, c = env
    uid, key = e.user("public")
    tid = e.template(uid)
    for url, what in TABLE.PUBLIC:
        response = c.post("/render", json=render_body(tid, webhookUrl=url), headers=api_key(key))
        assert response.status_code == 200, (url, what, response.text)
