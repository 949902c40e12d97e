"""One-way imports, checked mechanically: api -> jobs -> renderer.

renderer imports nothing from api or jobs; jobs nothing from api; api never imports numpy or
PyAV at module level (the API process stays light; the CLI's render command imports the
renderer lazily inside the function).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "renderer": {"api", "jobs", "fastapi", "sqlalchemy", "dramatiq", "redis", "httpx"},
    "jobs": {"api", "fastapi"},
    "api": {"numpy", "av"},
}


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_import_direction(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    offenders = []
    for path in files:
        # api may import the heavy stack lazily inside functions (the CLI's render command).
        imported = _imports(path, top_level_only=package == "api")
        bad = imported & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("import os\nfrom jobs.models import Render\n")
    assert "jobs" in _imports(bad, top_level_only=False)
