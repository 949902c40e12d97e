"""Signing secret persistence and the signature check (no server)."""

from __future__ import annotations

import stat
import time
import uuid
from pathlib import Path

import pytest

from api.errors import Forbidden
from api.signing import SECRET_FILE, download_path, load_signing_secret, sign_download, verify
from jobs.settings import Settings


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(_env_file=None, storage_dir=tmp_path / "storage", **kw)  # type: ignore[call-arg]


def test_generated_secret_is_persisted_private_and_stable(tmp_path: Path) -> None:
    first = load_signing_secret(_settings(tmp_path))
    path = tmp_path / "storage" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64
    # A restart (new settings object) keeps the secret, so issued links stay valid.
    assert load_signing_secret(_settings(tmp_path)) == first
    assert load_signing_secret(_settings(tmp_path / "other")) != first


def test_configured_secret_wins_and_blank_means_unset(tmp_path: Path) -> None:
    configured = load_signing_secret(_settings(tmp_path, signing_secret="s" * 20))
    assert configured == b"s" * 20
    assert not (tmp_path / "storage" / SECRET_FILE).exists()
    assert _settings(tmp_path, signing_secret="  ").signing_secret is None
    with pytest.raises(ValueError):
        _settings(tmp_path, signing_secret="short")


def test_verify_accepts_own_links_only() -> None:
    rid = uuid.uuid4()
    link = sign_download(b"k" * 32, "render", rid, 60)
    sig = link.url.rsplit("signature=", 1)[1]
    path = download_path("render", rid)
    verify(b"k" * 32, path, link.expires, sig)
    with pytest.raises(Forbidden):
        verify(b"j" * 32, path, link.expires, sig)
    with pytest.raises(Forbidden) as expired:
        verify(b"k" * 32, path, link.expires, sig, now=time.time() + 3600)
    assert expired.value.code == "signature_expired"
