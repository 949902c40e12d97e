"""``velocity serve`` ends its output with the URL and, on first start, the demo key; a
restart says how to make a key."""

from __future__ import annotations

from pathlib import Path

from api.cli import _start_banner
from jobs.settings import Settings


def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, host="127.0.0.1", port=8123, storage_dir=tmp_path)  # type: ignore[call-arg]


def test_first_start_ends_with_the_url_and_the_key(tmp_path: Path) -> None:
    lines = _start_banner(settings(tmp_path), "vel_demo_key_0123456789").splitlines()
    assert lines[-2] == "Velocity is running at http://127.0.0.1:8123"
    assert lines[-1] == "API key: vel_demo_key_0123456789"
    assert any("/docs" in line for line in lines)


def test_restart_says_how_to_make_a_key(tmp_path: Path) -> None:
    lines = _start_banner(settings(tmp_path), None).splitlines()
    assert lines[-1] == "Velocity is running at http://127.0.0.1:8123"
    assert "key create demo" in lines[-2]
    assert not any(line.startswith("API key:") for line in lines)
