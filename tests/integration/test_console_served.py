"""The console is served by the API app at ``/`` with its assets under ``/console/``, and
ships as package data; the API's own routes and error bodies are unchanged."""

from __future__ import annotations

import re
import tomllib
from importlib import resources

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import Embedded

pytestmark = pytest.mark.anyio


async def test_index_and_assets_are_served(embedded: Embedded) -> None:
    c = embedded.client
    index = await c.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert index.headers["cache-control"] == "no-cache"
    policy = index.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    # Relative asset URLs (so the console also works under a proxy's path prefix).
    assets = re.findall(r'(?:src|href)="(console/[^"]+)"', index.text)
    assert {"console/app.js", "console/style.css"} <= set(assets)
    for path in assets:
        response = await c.get("/" + path)
        assert response.status_code == 200, path
    js = await c.get("/console/app.js")
    assert "javascript" in js.headers["content-type"]
    for module in re.findall(r'from "\./([\w.]+)"', js.text):
        assert (await c.get(f"/console/{module}")).status_code == 200, module
    assert (await c.get("/console/missing.js")).status_code == 404
    assert (await c.get("/console/../app.py")).status_code == 404


async def test_api_routes_are_unchanged(embedded: Embedded) -> None:
    c = embedded.client
    unknown = await c.get("/no-such-endpoint")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    assert (await c.get("/template/all")).status_code == 401
    paths = (await c.get("/openapi.json")).json()["paths"]
    assert "/" not in paths and not any(p.startswith("/console") for p in paths)
    assert "/render/{render_id}/signed-url" in paths


def test_console_files_ship_as_package_data() -> None:
    static = resources.files("api.console") / "static"
    names = {p.name for p in static.iterdir()}
    assert {"index.html", "app.js", "api.js", "ui.js", "template.js", "style.css"} <= names
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "console/static/*" in config["tool"]["setuptools"]["package-data"]["api"]
