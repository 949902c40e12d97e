"""``python -m renderer.schema``: regenerate ``renderer/schema/template.schema.json``."""

from __future__ import annotations

from renderer.schema import write_schema

if __name__ == "__main__":
    print(write_schema())
