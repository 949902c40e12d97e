"""``velocity render`` as a process: exit codes, one-line errors, output and summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_render import _template

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli_render", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tpl_dir(tmp_path: Path) -> Path:
    return _template(tmp_path / "tpl")


def test_success_prints_path_and_summary(tpl_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    enc = tmp_path / "enc.json"
    enc.write_text(json.dumps({"res": [32, 18], "fpsNum": 5, "preset": 5}))
    res = _run(
        tpl_dir, "-o", out, "--frames", "2:8", "--encoder-config", enc, "--encoder", "software"
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == str(out) and out.is_file()
    assert "3 frames 32x18 at 5 fps with libx264" in lines[1]
    assert res.stderr == ""  # no progress bar when stderr is not a terminal


def test_zip_template_and_customisations(tpl_dir: Path, tmp_path: Path) -> None:
    import shutil

    archive = Path(shutil.make_archive(str(tmp_path / "tpl"), "zip", tpl_dir))
    custom = tmp_path / "c.json"
    custom.write_text(json.dumps([{"layerId": "title", "text": "Bye"}]))
    out = tmp_path / "z.mp4"
    res = _run(archive, "-o", out, "--customizations", custom, "--frames", "0:2")
    assert res.returncode == 0, res.stderr
    assert out.is_file()


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing_template", "not found"),
        ("bad_customization", "no layer 'nope'"),
        ("customization_not_array", "JSON array"),
        ("bad_json", "not valid JSON"),
        ("bad_encoder", "encoderConfig.profile"),
        ("bad_frames", "--frames 8:2: the start frame (8) must be less than the end frame"),
        ("frames_syntax", "--frames"),
        ("bad_data_json", "data.json"),
    ],
)
def test_invalid_inputs_exit_2_with_one_line(
    case: str, needle: str, tpl_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "o.mp4"
    args: list[str | Path] = [tpl_dir, "-o", out]
    file = tmp_path / "in.json"
    if case == "missing_template":
        args[0] = tmp_path / "nowhere"
    elif case == "bad_customization":
        file.write_text(json.dumps([{"layerId": "nope", "text": "x"}]))
        args += ["--customizations", file]
    elif case == "customization_not_array":
        file.write_text(json.dumps({"layerId": "title"}))
        args += ["--customizations", file]
    elif case == "bad_json":
        file.write_text("[{")
        args += ["--customizations", file]
    elif case == "bad_encoder":
        file.write_text(json.dumps({"profile": 3}))
        args += ["--encoder-config", file]
    elif case == "bad_frames":
        args += ["--frames", "8:2"]
    elif case == "frames_syntax":
        args += ["--frames", "abc"]
    elif case == "bad_data_json":
        (tpl_dir / "data.json").write_text('{"version": 1, "width": 3}')
    res = _run(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not out.exists()


def test_progress_bar_draws_only_on_a_terminal() -> None:
    import io

    from api.cli_render import _ProgressBar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = _ProgressBar(stream)
        for done in range(1, 11):
            bar(done, 10)
        bar.finish()
    assert pipe.getvalue() == ""
    assert "10/10 frames" in tty.getvalue() and "100%" in tty.getvalue()
    assert tty.getvalue().startswith("\r[") and tty.getvalue().endswith("\n")


def test_cache_dir_reuses_static_spans(tpl_dir: Path, tmp_path: Path) -> None:
    enc = tmp_path / "enc.json"
    enc.write_text(json.dumps({"gop": 5, "preset": 5, "bitrate": 200_000}))
    cache = tmp_path / "spans"
    summaries = []
    for name in ("Ann", "Bob"):
        custom = tmp_path / f"{name}.json"
        custom.write_text(json.dumps([{"layerId": "title", "text": name}]))
        out = tmp_path / f"{name}.mp4"
        res = _run(tpl_dir, "-o", out, "--customizations", custom, "--encoder-config", enc,
                   "--encoder", "software", "--cache-dir", cache)  # fmt: skip
        assert res.returncode == 0, res.stderr
        summaries.append(res.stdout.splitlines()[1])
    # The title shows from frame 5: the first GOP is static, rendered once, then reused.
    assert "from the span cache" not in summaries[0]
    assert "10 frames" in summaries[1] and "5 from the span cache" in summaries[1]
