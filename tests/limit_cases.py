"""Load ``fixtures/hostile_archives.py`` (the size-limit and deep-probe cases of issue 6).

``fixtures/`` is not a package, so the script is loaded from its file, after
``make_fixtures`` (which it imports) has been registered by ``tests.conftest``.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.conftest import ROOT, load_fixtures_module

SCRIPT = ROOT / "fixtures" / "hostile_archives.py"


def load_limit_cases_module() -> ModuleType:
    """Import ``fixtures/hostile_archives.py`` as ``hostile_archives`` (once)."""
    existing = sys.modules.get("hostile_archives")
    if existing is not None:
        return existing
    load_fixtures_module()
    spec = importlib.util.spec_from_file_location("hostile_archives", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hostile_archives"] = module
    spec.loader.exec_module(module)
    return module
