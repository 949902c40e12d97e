"""The README's examples are the first thing a newcomer copies: they must stay valid."""

from __future__ import annotations

import json
from pathlib import Path

from renderer.encode.config import EncoderConfig
from renderer.template.model import CustomizationEntry, Template

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_template_example_matches_the_schema() -> None:
    block = README.split("example using every layer type:\n\n```json\n", 1)[1].split("```")[0]
    template = Template.model_validate(json.loads(block))
    assert {layer.type for layer in template.layers} == {
        "video",
        "solid",
        "image",
        "text",
        "lottie",
    }


def test_cli_example_files_are_valid() -> None:
    custom_line, encoder_line = [line for line in README.splitlines() if line.startswith("echo '")]
    entries = [CustomizationEntry.model_validate(e) for e in json.loads(custom_line.split("'")[1])]
    assert [e.layer_id for e in entries] == ["headline", "band"]
    config = EncoderConfig.model_validate(json.loads(encoder_line.split("'")[1]))
    assert (config.rc, config.bitrate, config.profile, config.level) == (0, 2_000_000, 100, 41)
