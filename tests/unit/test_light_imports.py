"""The template package, the output plan and the encoder config are importable without the
media stack: the API process imports them to validate templates and requests, and must not
pay for (or depend on) numpy and PyAV."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "av")


def _light_modules() -> list[str]:
    template = ROOT / "renderer" / "template"
    names = []
    for path in sorted(template.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # a command, not a module the API imports
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [*names, "renderer.plan", "renderer.encode.config"]


def test_light_modules_import_neither_numpy_nor_pyav() -> None:
    modules = _light_modules()
    assert "renderer.template.manifest" in modules and "renderer.template.loader" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported {result.stdout.strip()}"
