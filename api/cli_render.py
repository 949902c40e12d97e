"""``velocity render``: render a template folder or ZIP to an MP4 from the command line.

The renderer (numpy, PyAV) is imported inside the handler, so the rest of the CLI and the
API process stay light. Every input problem (template, customisations, encoder config, frame
range) exits with status 2 and one line ``error: <reason>`` on standard error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """An input the user must fix; the message is printed as is."""


def add_render_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``render`` sub-command to an ``argparse`` sub-parser collection; its handler
    is stored as the ``handler`` default (call ``args.handler(args)`` for the exit status)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "render",
        help="render a template folder or ZIP to an MP4",
        description="Render a Velocity template (folder or ZIP) to an MP4 file.",
    )
    _add_arguments(parser)
    parser.set_defaults(handler=run_render)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("template", type=Path, help="template folder, data.json or .zip")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .mp4 path")
    parser.add_argument(
        "--customizations",
        type=Path,
        help="JSON file holding a customizationMap array; relative 'src' paths are resolved "
        "against the file's folder",
    )
    parser.add_argument(
        "--encoder-config", type=Path, help="JSON file holding an EncoderConfig object"
    )
    parser.add_argument(
        "--frames", help="template frame range A:B, half-open [A, B); either side may be empty"
    )
    parser.add_argument(
        "--encoder",
        choices=("auto", "software", "nvenc"),
        default="auto",
        help="auto uses NVENC when it opens, software otherwise (default: auto)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="keep the encoded static spans (no customised layer on screen) in DIR and reuse "
        "them in later renders of the same template and encoder config",
    )
    parser.add_argument(
        "--cache-mb",
        type=int,
        default=2048,
        help="size limit of --cache-dir in MiB; least recently used spans go first (default: 2048)",
    )


def parse_frames(text: str | None) -> tuple[int | None, int | None] | None:
    """``"A:B"`` to ``(A, B)``; ``"A:"`` and ``":B"`` leave a side open.

    Raises:
        _UsageError: not of that form.
    """
    if text is None:
        return None
    parts = text.split(":")
    if len(parts) != 2:
        raise _UsageError(f"--frames {text!r} must look like A:B (e.g. 0:90)")
    try:
        start, end = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise _UsageError(f"--frames {text!r} must be two whole numbers A:B") from None
    return start, end


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _UsageError(f"{what} file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _UsageError(f"{what} file {path} cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise _UsageError(
            f"{what} file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})"
        ) from None


def _load_customizations(path: Path | None) -> list[Any]:
    if path is None:
        return []
    data = _read_json(path, "customizations")
    if not isinstance(data, list):
        raise _UsageError(f"customizations file {path} must hold a JSON array (customizationMap)")
    base = path.resolve().parent
    entries: list[Any] = []
    for raw in data:
        entry = raw
        # Relative replacement media are relative to the JSON file, as a user expects.
        if isinstance(raw, dict) and isinstance(raw.get("src"), str):
            src = Path(raw["src"])
            if not src.is_absolute() and (base / src).is_file():
                entry = {**raw, "src": str(base / src)}
        entries.append(entry)
    return entries


class _ProgressBar:
    """A one-line bar redrawn on a terminal; silent when the stream is not a TTY."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._last = -1.0
        self._start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = width * done // max(total, 1)
        elapsed = now - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        self._stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * done // max(total, 1):3d}% "
            f"{done}/{total} frames {rate:5.1f} fps"
        )
        self._stream.flush()

    def finish(self) -> None:
        if self._enabled and self._last >= 0:
            self._stream.write("\n")
            self._stream.flush()


def run_render(args: argparse.Namespace) -> int:
    """Handle ``velocity render``; returns the process exit status."""
    return _run(args, sys.stdout, sys.stderr)


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    workdirs: list[Path] = []
    bar = _ProgressBar(err)
    try:
        from renderer.errors import (
            EncoderUnavailable,
            InvalidCustomization,
            InvalidEncoderConfig,
            InvalidFrameRange,
            InvalidTemplate,
        )

        invalid = (InvalidTemplate, InvalidCustomization, InvalidEncoderConfig, InvalidFrameRange)
        try:
            report = _render(args, bar, workdirs)
        except (_UsageError, *invalid) as exc:
            bar.finish()
            _error(err, exc)
            return EXIT_INVALID
        except EncoderUnavailable as exc:
            bar.finish()
            _error(err, exc)
            return EXIT_FAILED
        bar.finish()
        out.write(f"{Path(args.output)}\n")
        out.write(_summary(report) + "\n")
        return EXIT_OK
    except KeyboardInterrupt:
        bar.finish()
        err.write("error: interrupted; no output was written\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an I/O failure: still one line, non-zero
        bar.finish()
        _error(err, exc, prefix=f"render failed ({type(exc).__name__}): ")
        return EXIT_FAILED
    finally:
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)


def _encoder_config(args: argparse.Namespace) -> Any:
    from renderer.encode.config import EncoderConfig

    raw_config: Any = {}
    if args.encoder_config is not None:
        raw_config = _read_json(args.encoder_config, "encoder config")
        if not isinstance(raw_config, dict):
            raise _UsageError(
                f"encoder config file {args.encoder_config} must hold a JSON object (EncoderConfig)"
            )
    return EncoderConfig.parse(raw_config)


def _render(args: argparse.Namespace, bar: _ProgressBar, workdirs: list[Path]) -> Any:
    """Load the template and render it as the arguments ask; a ZIP is extracted into a
    temporary folder appended to ``workdirs`` (the caller removes it)."""
    frames = parse_frames(args.frames)
    customizations = _load_customizations(args.customizations)
    config = _encoder_config(args)
    from renderer.render import render
    from renderer.template.loader import load_template

    source = Path(args.template)
    workdir: Path | None = None
    if source.is_file() and source.suffix.lower() == ".zip":
        workdir = Path(tempfile.mkdtemp(prefix="velocity-render-"))
        workdirs.append(workdir)
    loaded = load_template(source, workdir)
    span: tuple[int, int] | None = None
    if frames is not None:
        from renderer.encode.config import resolve_frame_range
        from renderer.errors import InvalidFrameRange

        try:
            span = resolve_frame_range(frames[0], frames[1], loaded.template.frames)
        except InvalidFrameRange as exc:
            raise _UsageError(f"--frames {args.frames}: {exc}") from None
    options: dict[str, Any] = {
        "customizations": customizations,
        "encoder": config,
        "frames": span,
        "encoder_preference": args.encoder,
        "on_progress": bar,
    }
    if args.cache_dir is not None:
        from renderer.segments import SpanCache, render_segmented

        if args.cache_mb < 0:
            raise _UsageError(f"--cache-mb {args.cache_mb} must be 0 or more")
        cache = SpanCache(args.cache_dir, args.cache_mb * 1024 * 1024)
        return render_segmented(loaded, Path(args.output), cache=cache, **options)
    return render(loaded, Path(args.output), **options)


def _error(err: TextIO, exc: BaseException, prefix: str = "") -> None:
    message = " ".join(str(exc).split()) or type(exc).__name__
    err.write(f"error: {prefix}{message}\n")


def _summary(report: Any) -> str:
    stages: dict[str, float] = report.stages_s
    parts = ", ".join(f"{k} {v:.2f}s" for k, v in stages.items())
    fps = report.fps
    rate = fps.numerator / fps.denominator
    cached = getattr(report, "cached_frames", 0)
    return (
        f"{report.frames} frames {report.width}x{report.height} at {rate:g} fps with "
        f"{report.encoder} in {report.wall_s:.2f}s"
        f"{' with audio' if report.has_audio else ''}"
        f"{f', {cached} from the span cache' if cached else ''} ({parts})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m api.cli_render TEMPLATE -o OUT.mp4 ...`` (the same as ``velocity render``)."""
    parser = argparse.ArgumentParser(prog="velocity render", description=__doc__)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return run_render(args)


if __name__ == "__main__":
    sys.exit(main())
