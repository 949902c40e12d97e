"""``velocity serve`` on loopback for a benchmark: its own SQLite database and storage under
a work folder, one user and its key, and a helper to upload a template and wait for it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from socket import socket

import httpx


def velocity_command() -> list[str]:
    """The installed ``velocity`` script, else the module."""
    script = Path(sys.executable).with_name("velocity")
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


def free_port() -> int:
    with socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], limit: float, what: str) -> None:
    """Poll ``predicate`` (connection errors count as not yet) until true or ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not happen within {limit}s")


@dataclass(frozen=True)
class Served:
    base_url: str
    headers: dict[str, str]
    client: httpx.Client


@contextmanager
def velocity_serve(work: Path, **settings: str) -> Iterator[Served]:
    """Run ``velocity serve`` with ``VELOCITY_*`` ``settings`` over a software encoder and
    unchunked renders; yields a client with the user's key, and stops the server after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VELOCITY_")}
    env.update(
        VELOCITY_DATABASE_URL=f"sqlite+aiosqlite:///{work}/velocity.db",
        VELOCITY_STORAGE_DIR=str(work / "storage"),
        VELOCITY_PORT=str(port),
        VELOCITY_ENCODER="software",
        VELOCITY_CHUNK_FRAMES="0",
        **settings,
    )
    velocity = velocity_command()
    created = subprocess.run(
        [*velocity, "user", "create", "bench"], env=env, capture_output=True, text=True, check=True
    )
    key = created.stdout.strip().splitlines()[-1]
    server = subprocess.Popen(
        [*velocity, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            wait_for(lambda: client.get("/health").status_code in (200, 503), 60, "server start")
            yield Served(base, {"X-API-Key": key}, client)
    finally:
        server.terminate()
        server.wait(60)


def upload_template(served: Served, archive: Path, limit: float = 300) -> str:
    """Upload a template ZIP and wait until it is processed; its id."""
    with archive.open("rb") as fh:
        up = served.client.post(
            "/template/upload", files={"file": ("t.zip", fh)}, headers=served.headers
        )
    tid = str(up.json()["templateId"])
    status = f"/template/{tid}/status"
    wait_for(
        lambda: served.client.get(status, headers=served.headers).json()["status"] == "completed",
        limit,
        "template processing",
    )
    return tid
