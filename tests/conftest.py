"""Shared test fixtures: the generated demo template and the fixtures generator itself.

``fixtures/`` is not a package (``fixtures`` is also a PyPI name), so the generator is loaded
from its file. The demo is generated once per session, small (160x90, 12 frames at 30 fps) to
stay cheap on a 2-core machine; tests that need other sizes call
``fixtures_module.make_demo_template`` themselves.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES_SCRIPT = ROOT / "fixtures" / "make_fixtures.py"

DEMO_WIDTH = 160
DEMO_HEIGHT = 90
DEMO_FPS = 30
DEMO_FRAMES = 12


def load_fixtures_module() -> ModuleType:
    """Import ``fixtures/make_fixtures.py`` as the module ``make_fixtures`` (once)."""
    existing = sys.modules.get("make_fixtures")
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_fixtures"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fixtures_module() -> ModuleType:
    """The fixtures generator (``make_video``, ``make_audio``, ``make_png``, ``make_gif``,
    ``make_tga``, ``make_demo_template``, ``zip_folder``, ``make_hostile_zips``...)."""
    return load_fixtures_module()


@pytest.fixture(scope="session")
def demo_template_dir(
    fixtures_module: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A demo template folder (data.json + media) using every renderable layer type.
    Session-wide and shared: treat it as read-only."""
    folder: Path = fixtures_module.make_demo_template(
        tmp_path_factory.mktemp("demo-template") / "demo",
        width=DEMO_WIDTH,
        height=DEMO_HEIGHT,
        fps=DEMO_FPS,
        frames=DEMO_FRAMES,
    )
    return folder


@pytest.fixture(scope="session")
def demo_zip(
    fixtures_module: ModuleType, demo_template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``demo_template_dir`` zipped flat (data.json at the archive root). Read-only."""
    path: Path = fixtures_module.zip_folder(
        demo_template_dir, tmp_path_factory.mktemp("demo-zip") / "demo.zip"
    )
    return path


@pytest.fixture(scope="session")
def hostile_zips(
    fixtures_module: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, str]]:
    """``name -> (zip path, substring the refusal must contain)`` from ``make_hostile_zips``."""
    made: dict[str, tuple[Path, str]] = fixtures_module.make_hostile_zips(
        tmp_path_factory.mktemp("hostile")
    )
    return made
