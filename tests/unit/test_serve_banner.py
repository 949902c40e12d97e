"""What `velocity serve` prints last, and the demo key it keeps for later starts."""

from __future__ import annotations

import stat
from pathlib import Path

from api import cli
from jobs.db import run_migrations
from jobs.settings import Settings


def test_banner_ends_with_console_url_and_key() -> None:
    base = cli._public_base("0.0.0.0", 8123)
    assert base == "http://127.0.0.1:8123"
    lines = cli._start_banner(base, "vel_abc", created=True).rstrip("\n").splitlines()
    assert lines[-2:] == ["Console: http://127.0.0.1:8123/", "API key: vel_abc"]
    lines = cli._start_banner(base, None, created=False).rstrip("\n").splitlines()
    assert lines[-2] == "Console: http://127.0.0.1:8123/"
    assert "velocity key create demo" in lines[-1]


def test_demo_key_is_kept_private_and_only_while_valid(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'v.db'}",
        storage_dir=tmp_path / "storage",
    )
    run_migrations(settings.database_url)
    assert cli._remembered_demo_key(settings) is None
    _user, key = cli._with_db(settings, lambda db: cli._create_user(db, "demo", 10, 1000))
    cli._remember_demo_key(settings, key)
    path = settings.storage_dir / cli.DEMO_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cli._remembered_demo_key(settings) == key

    async def revoke(db: object) -> bool:
        from jobs.store import accounts

        async with db.session() as s:  # type: ignore[attr-defined]
            return await accounts.revoke_api_key(s, key[:12])

    assert cli._with_db(settings, revoke)
    assert cli._remembered_demo_key(settings) is None
