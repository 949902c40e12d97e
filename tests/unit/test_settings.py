"""Settings come from VELOCITY_* variables (and .env), with the SPEC §2 defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.settings import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("VELOCITY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_mode() -> None:
    s = Settings()
    assert s.database_url == "sqlite+aiosqlite:///./var/velocity.db"
    assert s.broker_url is None and s.embedded and s.is_sqlite
    assert s.storage_dir == Path("var/storage")
    assert (s.host, s.port, s.worker_threads) == ("127.0.0.1", 8000, 2)
    assert s.default_storage_quota_mb == 5000
    assert s.max_concurrent_renders == 10
    assert s.encoder == "auto"
    assert s.max_upload_bytes == 2 * 1024**3
    assert s.admin_key is None


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCITY_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    monkeypatch.setenv("VELOCITY_BROKER_URL", "redis://localhost:6379/0")
    monkeypatch.setenv("VELOCITY_PORT", "9001")
    monkeypatch.setenv("VELOCITY_ENCODER", "nvenc")
    s = Settings()
    assert not s.embedded and not s.is_sqlite
    assert s.port == 9001 and s.encoder == "nvenc"


def test_dotenv_is_honoured_and_blank_means_unset(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VELOCITY_ADMIN_KEY=sekret\nVELOCITY_BROKER_URL=\n")
    s = Settings()
    assert s.admin_key == "sekret" and s.broker_url is None


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELOCITY_ENCODER", "quantum")
    with pytest.raises(ValidationError, match="encoder"):
        Settings()
