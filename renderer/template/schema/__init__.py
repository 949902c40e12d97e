"""The published JSON Schema of ``data.json`` (``template.schema.json`` beside this file).

The file is generated from ``renderer.template.model``; ``python -m renderer.template.schema``
rewrites it and a
test checks that the committed copy matches the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from renderer.template.model import template_json_schema

SCHEMA_PATH = Path(__file__).with_name("template.schema.json")


def render_schema() -> str:
    """The schema as the exact text committed to ``template.schema.json``."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **template_json_schema(),
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    """Write the generated schema to ``path`` and return it."""
    path.write_text(render_schema(), encoding="utf-8")
    return path
