"""``python -m renderer.template.schema``: regenerate
``renderer/template/schema/template.schema.json``."""

from __future__ import annotations

from renderer.template.schema import write_schema

if __name__ == "__main__":
    print(write_schema())
