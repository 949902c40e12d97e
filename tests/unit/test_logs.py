"""JSON logs: one object per line carrying the bound render id and account."""

from __future__ import annotations

import io
import json
import logging

from jobs.logs import ContextFilter, JsonFormatter, bind


def test_json_lines_carry_bound_fields_and_exceptions() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("velocity.test.logs")
    log.addHandler(handler)
    log.propagate = False
    try:
        with bind(render_id="r-1"), bind(account="a-2"):
            log.warning("render %s: lease\nexpired", "r-1")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("after the block")
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, "one line per event, even with a newline in the message"
    first, second = (json.loads(line) for line in lines)
    assert first["render_id"] == "r-1" and first["account"] == "a-2"
    assert first["level"] == "warning" and first["message"] == "render r-1: lease\nexpired"
    assert "render_id" not in second and "ValueError: boom" in second["exc"]
