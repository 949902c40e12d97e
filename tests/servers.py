"""Real PostgreSQL and Redis servers, started by the test run on loopback in temp dirs.

Session fixtures ``pg_url`` (``postgresql+asyncpg://...``) and ``redis_url`` start the local
binaries once; ``service_env`` gives each test its own database, an empty Redis and its own
storage directory, as the ``VELOCITY_*`` environment of a service process. Without the
binaries the tests skip locally and fail when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0


def unavailable(reason: str) -> None:
    """Skip locally; fail under CI, where every server must be present."""
    if os.environ.get("CI"):
        pytest.fail(f"required test server unavailable: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not accept connections on port {port}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server on loopback; yields the URL of its ``postgres`` database."""
    initdb, postgres, pg_isready = _pg_bin("initdb"), _pg_bin("postgres"), _pg_bin("pg_isready")
    if not (initdb and postgres and pg_isready):
        unavailable("PostgreSQL binaries (initdb, postgres) not found")
    assert initdb and postgres and pg_isready
    # PostgreSQL refuses to run as root; run it as the packaged 'postgres' user when we are.
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and no 'postgres' user to run the server")
        prefix = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="velocity-pg-"))
    data = base / "data"
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    port = free_port()
    subprocess.run(
        [
            *prefix,
            initdb,
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [
            *prefix,
            postgres,
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(base),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc, "postgres")
        deadline = time.monotonic() + START_TIMEOUT_S
        while (
            subprocess.run(
                [pg_isready, "-h", "127.0.0.1", "-p", str(port)], capture_output=True, check=False
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("postgres did not become ready")
            time.sleep(0.1)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server on loopback without persistence."""
    server = shutil.which("redis-server")
    if not server:
        unavailable("redis-server not found")
    assert server
    base = Path(tempfile.mkdtemp(prefix="velocity-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(base, ignore_errors=True)


def create_pg_database(server_url: str) -> str:
    """Create an empty database on the server of ``server_url``; returns its URL."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = server_url.replace("postgresql+asyncpg://", "postgresql://")

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def pg_database(pg_url: str) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return create_pg_database(pg_url)


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    """The Redis URL, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_url


@pytest.fixture
def service_env(tmp_path: Path, pg_database: str, clean_redis: str) -> dict[str, str]:
    """``VELOCITY_*`` environment for service processes of one test (own DB and storage)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VELOCITY_")}
    env.update(
        VELOCITY_DATABASE_URL=pg_database,
        VELOCITY_BROKER_URL=clean_redis,
        VELOCITY_STORAGE_DIR=str(tmp_path / "storage"),
        VELOCITY_ADMIN_KEY="test-admin-key",
        VELOCITY_WORKER_THREADS="2",
        PYTHONUNBUFFERED="1",
    )
    return env


class RedisServer:
    """A Redis server of one test that the test can stop and start again on the same port
    (without persistence: a restart loses every queued message, as in production with
    ``appendonly no``)."""

    def __init__(self, base: Path) -> None:
        server = shutil.which("redis-server")
        if not server:
            unavailable("redis-server not found")
        assert server
        self.binary, self.base, self.port = server, base, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.base)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc, "redis-server")
        return self

    def stop(self) -> None:
        """Kill the server (its data is gone) and wait until it has exited."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(20)
            self.proc = None


class PostgresServer:
    """A PostgreSQL server of one test that the test can stop (fast shutdown: sessions are
    cut) and start again on the same port with its data."""

    def __init__(self, base: Path) -> None:
        initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
        if not (initdb and postgres):
            unavailable("PostgreSQL binaries (initdb, postgres) not found")
        assert initdb and postgres
        self.postgres, self.base, self.port = postgres, base, free_port()
        # PostgreSQL refuses to run as root: run it as 'postgres' directly (not through
        # runuser, which would not pass the shutdown signal on).
        self.user: dict[str, int] = {}
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and no 'postgres' user to run the server")
            self.user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
            os.chown(base, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            [initdb, "-D", str(base / "data"), "-U", "postgres", "--auth=trust"]
            + ["-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            **self.user,  # type: ignore[arg-type]
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        self.proc = subprocess.Popen(
            [self.postgres, "-D", str(self.base / "data"), "-p", str(self.port)]
            + ["-k", str(self.base), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **self.user,  # type: ignore[arg-type]
        )
        _wait_port(self.port, self.proc, "postgres")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _pg_accepts(self.url):
            if time.monotonic() > deadline:
                raise RuntimeError("postgres did not become ready")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT): every session is cut, as when the server goes away."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def _pg_accepts(url: str) -> bool:
    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        except (OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running Redis server the test may restart."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server the test may stop and start."""
    base = Path(tempfile.mkdtemp(prefix="velocity-pg-fault-"))
    server = PostgresServer(base)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
