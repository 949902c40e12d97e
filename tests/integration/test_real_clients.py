"""The reference's JavaScript examples against a live service: fetch and axios under Node,
and the fetch upload from a page of another origin in headless Chromium (Debian's package,
no browser download); and a TypeScript client generated from ``/openapi.json``. npm
packages are installed into a cache outside the repository.

Node, npm and Chromium come from ``scripts/system-deps.sh``; where one is missing the test
skips locally and fails under ``CI``.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_render_support import LiveServer, RenderEnv

pytestmark = pytest.mark.integration

JS = Path(__file__).parent / "js"
NPM_CACHE = Path(os.environ.get("VELOCITY_TEST_NPM_DIR", Path.home() / ".cache/velocity-tests/npm"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing: run scripts/system-deps.sh")
        pytest.skip(f"{tool} is not installed")
    return path


# axios for the reference's examples; a TypeScript client generator, the compiler and Node's
# type definitions for the generated-TypeScript-client test.
NPM_PACKAGES = ["axios@1", "@hey-api/openapi-ts@0.95.0", "typescript@5.9", "@types/node@20"]


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The npm packages above, installed into a cache directory outside the repository."""
    npm = need("npm")
    modules = NPM_CACHE / "node_modules"
    wanted = ["axios", "@hey-api/openapi-ts", "typescript", "@types/node"]
    if not all((modules / name / "package.json").is_file() for name in wanted):
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [npm, "install", "--prefix", str(NPM_CACHE), *NPM_PACKAGES, "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return modules


@pytest.fixture
def live(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    page_origin = "http://127.0.0.1"  # the page server's port is added below
    env = RenderEnv(
        tmp_path / "svc",
        tmp_path_factory.mktemp("js-cache"),
        worker=True,
        cors_origins="*",
    )
    _uid, key = env.user("js")
    with LiveServer(env.app) as server:
        yield server.url, key, page_origin


def test_reference_fetch_and_axios_examples_run_under_node(
    live: Any, node_modules: Path, demo_zip: Path
) -> None:
    node = need("node")
    url, key, _origin = live
    done = subprocess.run(
        [node, str(JS / "reference_examples.cjs"), url, key, str(demo_zip)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NODE_PATH": str(node_modules)},
        check=False,
    )
    assert done.stdout.strip(), done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, seen
    assert seen["fetchUpload"]["status"] == 200 and seen["fetchUpload"]["templateId"]
    assert seen["fetchTemplateStatus"] == "completed"
    assert seen["fetchRender"]["status"] == 200 and seen["fetchRender"]["renderId"]
    assert seen["fetchRenderStatus"]["status"] == "completed", seen
    download = seen["fetchDownload"]
    assert download["size"] == seen["fetchRenderStatus"]["sizeBytes"] and download["ftyp"] == "ftyp"
    assert download["type"] == "video/mp4"
    assert seen["axiosUpload"]["status"] == 200 and seen["axiosUpload"]["templateId"]
    assert seen["axiosRender"]["status"] == 200 and seen["axiosRender"]["renderId"]
    assert seen["axiosRenderStatus"] in ("pending", "processing", "completed")
    typo = seen["axiosTypo"]
    assert typo["status"] == 400 and "did you mean 'customizationMap'" in typo["data"]["detail"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_reference_fetch_upload_from_a_page_of_another_origin_in_chromium(
    live: Any, demo_zip: Path, tmp_path: Path
) -> None:
    chromium = need("chromium")
    url, key, _origin = live
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(JS / "upload_page.html", site / "index.html")
    shutil.copy(demo_zip, site / "demo.zip")
    handler = functools.partial(_Quiet, directory=str(site))
    pages = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=pages.serve_forever, daemon=True)
    thread.start()
    try:
        page = f"http://127.0.0.1:{pages.server_address[1]}/index.html?api={url}&key={key}"
        done = subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=60000",
                "--dump-dom",
                page,
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        pages.shutdown()
        pages.server_close()
    dom = done.stdout
    assert '<pre id="out">' in dom, done.stderr[-2000:]
    text = dom.split('<pre id="out">', 1)[1].split("</pre>", 1)[0]
    assert text != "pending", "the page never finished"
    seen = json.loads(text.replace("&quot;", '"').replace("&amp;", "&"))
    assert "error" not in seen, seen
    assert seen["upload"]["status"] == 200 and seen["upload"]["templateId"], seen
    size = demo_zip.stat().st_size
    assert seen["range"] == {
        "status": 206,
        "contentRange": f"bytes 0-3/{size}",
        "acceptRanges": "bytes",
        "contentLength": "4",
        "bytes": list(demo_zip.read_bytes()[:4]),
    }


def test_generated_typescript_client_works_unedited(
    live: Any, node_modules: Path, demo_zip: Path, tmp_path: Path
) -> None:
    """@hey-api/openapi-ts generates a client from ``/openapi.json``; it compiles with
    ``tsc --strict`` together with a script that uploads, renders, downloads and reads an
    error, and the script runs under Node."""
    node = need("node")
    url, key, _origin = live
    work = tmp_path / "ts"
    work.mkdir()
    spec = json.loads(fetch_text(f"{url}/openapi.json"))
    (work / "openapi.json").write_text(json.dumps(spec))
    shutil.copy(JS / "generated_ts_client.ts", work / "generated_ts_client.ts")
    bin_dir = node_modules / ".bin"
    steps = [
        [node, str(bin_dir / "openapi-ts"), "-i", "openapi.json", "-o", "gen"],
        [
            node,
            str(bin_dir / "tsc"),
            "--strict",
            "--target",
            "es2022",
            "--module",
            "commonjs",
            "--moduleResolution",
            "node",
            "--lib",
            "es2022,dom",
            "--types",
            "node",
            "--typeRoots",
            str(node_modules / "@types"),
            "--skipLibCheck",
            "--outDir",
            "out",
            "generated_ts_client.ts",
        ],
    ]
    for step in steps:
        done = subprocess.run(
            step, cwd=work, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, (step[1], done.stdout[-3000:], done.stderr[-3000:])
    done = subprocess.run(
        [node, "out/generated_ts_client.js", url, key, str(demo_zip)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.stdout.strip(), done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, seen
    assert seen["upload"]["status"] == 200 and seen["templateStatus"] == "completed", seen
    assert seen["render"]["status"] == 200, seen
    assert seen["renderStatus"]["status"] == "completed", seen
    assert seen["download"] == {
        "status": 200,
        "size": seen["renderStatus"]["sizeBytes"],
        "ftyp": "ftyp",
    }
    assert seen["missing"] == {"status": 404, "code": "not_found"}


def fetch_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())
