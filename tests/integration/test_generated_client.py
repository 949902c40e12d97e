"""A client generated from ``/openapi.json`` by ``openapi-python-client`` works unedited:
upload a template, poll it, render, poll, download the MP4 and the ZIP, and parse errors."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_render_support import LiveServer, RenderEnv

pytestmark = pytest.mark.integration

PACKAGE = "velocity_client"


def generate(spec: dict[str, Any], dest: Path) -> Path:
    """Run the generator on ``spec`` into ``dest``; returns the folder to put on sys.path."""
    dest.mkdir(parents=True, exist_ok=True)
    spec_path = dest / "openapi.json"
    spec_path.write_text(json.dumps(spec))
    bindir = Path(sys.executable).parent
    generator = bindir / "openapi-python-client"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(spec_path),
            "--meta",
            "none",
            "--output-path",
            str(dest / PACKAGE),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Every operation must be generated: a warning means a piece was left out.
    assert "Warning" not in done.stdout and "WARNING" not in done.stdout, done.stdout
    return dest


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], limit_s: float = 120) -> Any:
    deadline = time.monotonic() + limit_s
    last = None
    while time.monotonic() < deadline:
        last = fetch()
        if done(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"condition not reached; last answer {last!r}")


@pytest.fixture
def live(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    e = RenderEnv(tmp_path / "svc", tmp_path_factory.mktemp("gen-cache"), worker=True)
    _uid, key = e.user("generated")
    with LiveServer(e.app) as server:
        yield (e, server.url), key


def test_generated_python_client_uploads_renders_downloads_and_parses_errors(
    live: tuple[Any, str], demo_zip: Path, tmp_path: Path
) -> None:
    (env, url), key = live
    root = generate(env.app.openapi(), tmp_path / "gen")
    sys.path.insert(0, str(root))
    try:
        pkg = importlib.import_module(PACKAGE)
        templates = importlib.import_module(f"{PACKAGE}.api.templates")
        renders = importlib.import_module(f"{PACKAGE}.api.renders")
        models = importlib.import_module(f"{PACKAGE}.models")
        types = importlib.import_module(f"{PACKAGE}.types")
        for name in ("upload_template", "template_status", "download_template", "list_templates"):
            importlib.import_module(f"{templates.__name__}.{name}")
        for name in ("create_render", "render_status", "download_render"):
            importlib.import_module(f"{renders.__name__}.{name}")

        client = pkg.AuthenticatedClient(
            base_url=url, token=key, prefix="", auth_header_name="X-API-Key", timeout=90
        )
        with demo_zip.open("rb") as fh:
            body = models.UploadTemplateBody(
                file=types.File(payload=fh, file_name="demo.zip", mime_type="application/zip")
            )
            uploaded = templates.upload_template.sync(client=client, body=body)
        assert isinstance(uploaded, models.TemplateUploaded), uploaded
        template_id = uploaded.template_id
        job = poll(
            lambda: templates.template_status.sync(template_id, client=client),
            lambda j: j.status in (models.JobStatus.COMPLETED, models.JobStatus.FAILED),
        )
        assert job.status == models.JobStatus.COMPLETED, job

        zipped = templates.download_template.sync(template_id, client=client)
        assert zipped.payload.read() == demo_zip.read_bytes()
        listed = templates.list_templates.sync(client=client)
        assert [t.size_bytes for t in listed] == [demo_zip.stat().st_size]

        request = models.RenderRequest(
            template_id=template_id,
            name="generated",
            encoder_config=models.EncoderConfig(bitrate=200_000, preset=5),
            job_info=models.JobInfo(f_start=0, f_end=4),
            customization_map=[models.CustomizationEntry(layer_id="band", color="#ff0066")],
        )
        created = renders.create_render.sync(client=client, body=request)
        assert isinstance(created, models.RenderCreated), created
        status = poll(
            lambda: renders.render_status.sync(created.render_id, client=client, wait=5),
            lambda s: (
                s.status
                in (models.JobStatus.COMPLETED, models.JobStatus.FAILED, models.JobStatus.CANCELLED)
            ),
        )
        assert status.status == models.JobStatus.COMPLETED, status
        video = renders.download_render.sync(created.render_id, client=client).payload.read()
        assert len(video) == status.size_bytes and video[4:8] == b"ftyp"

        # Errors parse into the ErrorResponse model, with the service's code.
        missing = templates.template_status.sync_detailed(uuid.uuid4(), client=client)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.ErrorResponse)
        assert missing.parsed.code == "not_found"
        bad = renders.create_render.sync_detailed(
            client=client,
            body=models.RenderRequest(
                template_id=template_id,
                name="bad",
                encoder_config=models.EncoderConfig(bitrate=200_000, preset=5),
                job_info=models.JobInfo(f_start=3, f_end=3),
            ),
        )
        assert bad.status_code == 400 and bad.parsed.code == "invalid_frame_range"
        # The generator's default (Authorization: Bearer) is told what to send instead.
        bearer = pkg.AuthenticatedClient(base_url=url, token=key)
        refused = templates.list_templates.sync_detailed(client=bearer)
        assert refused.status_code == 401 and "X-API-Key" in refused.parsed.detail
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
