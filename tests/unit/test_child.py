"""Render work in a niced child process: result, progress, stop requests and errors cross
the process boundary."""

from __future__ import annotations

import errno
import os
import time
from typing import Any

import pytest

from jobs.actors.child import run_in_child
from jobs.renders.attempt import Control
from renderer.errors import InvalidTemplate, RenderCancelled


def where_and_how_nice(total: int, control: Any) -> tuple[int, int]:
    for i in range(total):
        control.on_progress(i + 1, total)
    return os.getpid(), os.nice(0)


def until_stopped(control: Any) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        control.on_progress(1, 2)
        if control.should_cancel():
            raise RenderCancelled("stopped")
        time.sleep(0.01)
    raise AssertionError("never asked to stop")


def fails(kind: str, control: Any) -> None:
    if kind == "disk":
        raise OSError(errno.ENOSPC, "No space left on device")
    raise InvalidTemplate("layer 'x' is broken")


def test_work_runs_in_a_niced_child_and_reports_progress() -> None:
    control = Control()
    pid, nice = run_in_child(where_and_how_nice, (5,), control, 5)
    assert pid != os.getpid()
    assert nice == min(19, os.nice(0) + 5)
    assert (control.frames_done, control.frames_total) == (5, 5)


def test_stop_requests_reach_the_child() -> None:
    control = Control()
    control.cancel_requested = True
    with pytest.raises(RenderCancelled):
        run_in_child(until_stopped, (), control, 0)


@pytest.mark.parametrize("kind", ["disk", "template"])
def test_errors_come_back_with_their_type(kind: str) -> None:
    with pytest.raises(OSError if kind == "disk" else InvalidTemplate) as caught:
        run_in_child(fails, (kind,), Control(), 0)
    if kind == "disk":
        assert caught.value.errno == errno.ENOSPC
    else:
        assert caught.value.code == "invalid_template"


def test_every_error_a_render_can_raise_survives_the_trip_back() -> None:
    """A render runs in a child process; an error that does not unpickle would reach the
    worker as a RuntimeError and end the render as internal_error."""
    import pickle

    from jobs.failures import JobFailure
    from renderer import errors

    samples: list[BaseException] = [
        errors.OutputTooLarge("too big", limit=10, written=11),
        JobFailure("template_deleted", "The template was deleted"),
        JobFailure("chunk_mismatch", "The render's chunks were encoded differently"),
    ]
    for name in dir(errors):
        cls = getattr(errors, name)
        is_error = isinstance(cls, type) and issubclass(cls, errors.RendererError)
        if is_error and cls is not errors.OutputTooLarge:
            samples.append(cls(f"{name} reason"))
    for exc in samples:
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
        assert vars(back) == vars(exc)
    failure = pickle.loads(pickle.dumps(samples[1]))
    assert isinstance(failure, JobFailure)
    assert (failure.code, failure.reason) == ("template_deleted", "The template was deleted")
