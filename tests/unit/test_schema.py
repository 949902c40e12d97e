"""The committed JSON Schema of data.json matches the model."""

from __future__ import annotations

import json
from pathlib import Path

from renderer.template.schema import SCHEMA_PATH, render_schema, write_schema


def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), (
        "renderer/template/schema/template.schema.json is stale: "
        "run `python -m renderer.template.schema`"
    )


def test_schema_describes_template_v1() -> None:
    schema = json.loads(render_schema())
    assert set(schema["required"]) == {"width", "height", "frames"}
    assert {"layers", "audio", "fonts", "fps", "background"} <= set(schema["properties"])
    layer_kinds = schema["properties"]["layers"]["items"]["discriminator"]["mapping"]
    assert set(layer_kinds) == {"solid", "image", "video", "text", "lottie"}
    text = schema["$defs"]["TextLayer"]["properties"]
    assert {"minSize", "maxLines", "lineHeight", "letterSpacing", "in"} <= set(text)


def test_write_schema(tmp_path: Path) -> None:
    out = write_schema(tmp_path / "s.json")
    assert out.read_text(encoding="utf-8") == render_schema()
