"""Render the standard composition four ways and compare wall time, speed and peak memory.

    (a) velocity  Velocity's renderer.render(), software libx264
    (b) floor     the same frames, pre-made in yuv420p, through libx264 alone (PyAV)
    (c) ffmpeg    one ffmpeg command line with -filter_complex
    (d) moviepy   MoviePy 2.x CompositeVideoClip + write_videofile

All four: libx264, CRF 23, preset veryfast, yuv420p, keyframe every composition.GOP frames.
Each runs in its own process; peak RSS is the largest sum of RSS over that process tree
(sampled every 20 ms, so ffmpeg helpers started by MoviePy count). Figures, not assertions.

Usage: python bench/run.py [--only a,b,c,d] [--frames N] [--size WxH]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from approaches import ffmpeg_command, ffmpeg_raw_command, floor_cli_command, scene_to_json
from composition import GOP, OUT_DIR, TOTAL_FRAMES, Scene, build, parse_size
from verify import compare_frames, probe, x264_options

APPROACHES = {
    "a": ("velocity", "(a) Velocity"),
    "b": ("floor", "(b) encode-only floor"),
    "c": ("ffmpeg", "(c) ffmpeg CLI filter_complex"),
    "d": ("moviepy", "(d) MoviePy"),
    # Not one of the four: the floor again, through the ffmpeg CLI's libx264 build, to tell
    # differences between the two x264 builds apart from pipeline costs.
    "e": ("floor_cli", "(e) floor via ffmpeg CLI"),
}
HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    key: str
    label: str
    ok: bool = False
    wall_s: float = 0.0  # the work itself, as the approach timed it
    process_s: float = 0.0  # the whole process, start-up and imports included
    cpu_s: float = 0.0  # user + system CPU of the process tree
    peak_rss_mb: float = 0.0
    load_before: float = 0.0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    output: Path | None = None


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _measure(argv: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``argv`` to completion, sampling its process tree's RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("w") as logf:
        popen = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env)
        proc = psutil.Process(popen.pid)
        peak = 0
        while popen.poll() is None:
            peak = max(peak, _tree_rss(proc))
            time.sleep(0.02)
    process_s = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"rc": popen.returncode, "process_s": process_s, "cpu_s": cpu, "peak": peak}


def _floor_source(scene: Scene) -> Path:
    """The composed frames as raw yuv420p, made once by ffmpeg and cached (not timed). The
    name carries a hash of the command, so a changed composition is composed afresh."""
    digest = hashlib.sha1("\0".join(ffmpeg_raw_command(scene, Path())).encode()).hexdigest()
    raw = scene.media_dir.parent / f"floor_{scene.frames}_{digest[:10]}.yuv"
    if not raw.exists():
        for stale in scene.media_dir.parent.glob(f"floor_{scene.frames}_*.yuv"):
            stale.unlink()
        print(f"pre-composing {scene.frames} frames for the floor -> {raw}", flush=True)
        tmp = raw.with_suffix(".part")
        subprocess.run(ffmpeg_raw_command(scene, tmp), check=True)
        os.replace(tmp, raw)
    return raw


def run_one(key: str, scene: Scene, workdir: Path) -> Result:
    name, label = APPROACHES[key]
    res = Result(key, label, load_before=os.getloadavg()[0])
    out = workdir / f"{name}.mp4"
    out.unlink(missing_ok=True)
    result_json = workdir / f"{name}.json"
    result_json.unlink(missing_ok=True)
    log = workdir / f"{name}.log"
    env = dict(os.environ)
    # The renderer from this checkout, whether or not the package is installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH")) if p)
    if name == "ffmpeg":
        argv = ffmpeg_command(scene, out)
    elif name == "floor_cli":
        argv = floor_cli_command(scene, _floor_source(scene), out)
    else:
        argv = [sys.executable, str(HERE / "approaches.py"), name, scene_to_json(scene),
                str(result_json), str(out)]  # fmt: skip
        if name == "floor":
            argv.append(str(_floor_source(scene)))
        if name == "moviepy":
            # The system ffmpeg (the one (c) uses), not imageio's bundled build.
            env["FFMPEG_BINARY"] = _which("ffmpeg")
    print(f"running {label} ...", flush=True)
    m = _measure(argv, log, env)
    res.process_s, res.cpu_s, res.peak_rss_mb = m["process_s"], m["cpu_s"], m["peak"] / 2**20
    if m["rc"] != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        res.error = f"exit {m['rc']}: " + " | ".join(tail)
        return res
    if name in ("ffmpeg", "floor_cli"):
        res.wall_s = m["process_s"]
    else:
        data = json.loads(result_json.read_text())
        res.wall_s = data.pop("wall_s")
        res.cpu_s = data.pop("cpu_s", res.cpu_s)
        res.extra = data
    res.ok = True
    res.output = out
    return res


def _which(cmd: str) -> str:
    for d in os.environ.get("PATH", "").split(os.pathsep):
        p = Path(d) / cmd
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return cmd


# --- report ---------------------------------------------------------------------------------


def table(results: list[Result], floor: Result | None) -> list[str]:
    """Markdown rows. "CPU × floor" compares CPU seconds, which other load on the machine
    disturbs far less than wall time."""
    rows = ["| approach | wall s | fps | peak RSS MB | × floor | CPU s | CPU × floor | load |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in results:
        if not r.ok:
            rows.append(f"| {r.label} | failed | | | | | | {r.load_before:.1f} |")
            continue
        frames = int(r.extra.get("frames", 0) or 0)
        ratio = f"{r.wall_s / floor.wall_s:.2f}" if floor else "–"
        cpu_ratio = f"{r.cpu_s / floor.cpu_s:.2f}" if floor and floor.cpu_s else "–"
        rows.append(
            f"| {r.label} | {r.wall_s:.2f} | {frames / r.wall_s:.1f} | {r.peak_rss_mb:.0f} | "
            f"{ratio} | {r.cpu_s:.1f} | {cpu_ratio} | {r.load_before:.1f} |"
        )
    return rows


def _floor_note(floor: Result | None) -> list[str]:
    if floor is None or "rss_before_mb" not in floor.extra:
        return []
    held = floor.extra["rss_before_mb"]
    return [f"The floor's peak RSS includes its pre-made frames: {held:.0f} MB were in use "
            "before its clock started."]  # fmt: skip


def environment() -> list[str]:
    import av

    try:
        mp = metadata.version("moviepy")
    except metadata.PackageNotFoundError:
        mp = "not installed"
    ff = subprocess.run(["ffmpeg", "-version"], check=False, capture_output=True, text=True).stdout
    avcodec = ".".join(map(str, av.library_versions["libavcodec"]))
    return [
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs (os.cpu_count), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}",
        f"- PyAV {av.__version__} (libavcodec {avcodec}), "
        f"ffmpeg CLI: {ff.splitlines()[0] if ff else '?'}, MoviePy {mp}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="a,b,c,d", help="comma list of a,b,c,d (and e)")
    parser.add_argument("--frames", type=int, default=TOTAL_FRAMES, help="composition length")
    parser.add_argument("--size", type=parse_size, default=(1920, 1080), help="WxH")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best is kept")
    args = parser.parse_args()
    keys = [k.strip() for k in args.only.split(",") if k.strip()]
    bad = [k for k in keys if k not in APPROACHES]
    if bad:
        parser.error(f"--only: unknown {bad}; choose from a,b,c,d,e")

    scene = build(args.size, args.frames)
    workdir = OUT_DIR / f"{scene.width}x{scene.height}" / f"run_{scene.frames}"
    workdir.mkdir(parents=True, exist_ok=True)
    if "b" in keys:
        _floor_source(scene)  # pre-made outside any timing

    # Rounds interleave the approaches so a burst of other load hurts them alike; the best
    # round of each is kept (the least disturbed by other work on the machine).
    best: dict[str, Result] = {}
    for rnd in range(args.repeat):
        for key in sorted(keys):
            r = run_one(key, scene, workdir)
            r.extra.setdefault("frames", scene.frames)
            status = f"{r.wall_s:.2f} s, CPU {r.cpu_s:.1f} s" if r.ok else r.error
            print(f"  round {rnd + 1}: {r.label}: {status}", flush=True)
            if r.ok and "stages_s" in r.extra:
                stages = ", ".join(f"{k} {v:.2f}" for k, v in r.extra["stages_s"].items())
                print(f"    stages (s): {stages}  [encoder {r.extra.get('encoder')}]", flush=True)
            prev = best.get(key)
            if prev is None or (r.ok and (not prev.ok or r.wall_s < prev.wall_s)):
                best[key] = r
    results = [best[k] for k in sorted(keys)]

    floor = next((r for r in results if r.key == "b" and r.ok), None)
    lines = [
        f"# Benchmark: {scene.width}x{scene.height}, {scene.frames} frames at 30 fps",
        "",
        f"libx264 CRF 23, preset veryfast, yuv420p, keyint {GOP} for every approach. "
        f"Best of {args.repeat} round(s). wall s = the work itself (imports and, for the "
        "floor, frame preparation excluded); peak RSS = largest sum over the process tree; "
        "CPU s = user+system CPU of the timed work; load = 1-minute load average at start.",
        "",
        *table(results, floor),
        "",
        *_floor_note(floor),
        "",
        "## Environment",
        *environment(),
    ]

    checks = ["", "## Outputs (ffprobe, every frame decoded)", ""]
    # The floor's settings are the reference: everyone else is compared with it.
    ordered = sorted(results, key=lambda r: r.key != "b")
    ref_opts: dict[str, str] | None = None
    opt_lines = ["", "## libx264 settings read back from each stream", ""]
    for r in ordered:
        if r.ok and "stages_s" in r.extra:
            stages = ", ".join(f"{k} {v:.2f}" for k, v in r.extra["stages_s"].items())
            lines += ["", f"Velocity stages (s, overlapping threads): {stages}; "
                      f"encoder {r.extra.get('encoder')}"]  # fmt: skip
        if not r.ok or r.output is None:
            checks.append(f"- {r.label}: FAILED — {r.error}")
            continue
        p = probe(r.output)
        good = p["frames"] == scene.frames and p["codec"] == "h264" and p["pix_fmt"] == "yuv420p"
        checks.append(
            f"- {r.label}: {'OK' if good else 'MISMATCH'} — {p['container']}, {p['codec']} "
            f"{p['size']} {p['pix_fmt']}, {p['frames']} frames, {p['duration']:.3f} s, "
            f"audio {p['audio']}, {r.output.stat().st_size / 1e6:.1f} MB"
        )
        core, opts = x264_options(r.output)
        if ref_opts is None:
            ref_opts = opts
            keys = ("crf", "keyint", "keyint_min", "scenecut", "open_gop", "threads",
                    "lookahead_threads", "sliced_threads", "subme", "ref", "rc_lookahead",
                    "bframes")  # fmt: skip
            shown = " ".join(f"{k}={v}" for k, v in opts.items() if k in keys)
            opt_lines.append(f"- {r.label} (reference): x264 core {core}: {shown}")
        else:
            diff = {k: (ref_opts.get(k), v) for k, v in opts.items() if ref_opts.get(k) != v}
            diff.update({k: (v, None) for k, v in ref_opts.items() if k not in opts})
            text = ", ".join(f"{k} {a}→{b}" for k, (a, b) in diff.items()) or "identical"
            opt_lines.append(f"- {r.label}: x264 core {core}: {text}")
    lines += checks + opt_lines

    outputs = {r.label: r.output for r in results if r.ok and r.output is not None}
    if outputs:
        sheet = OUT_DIR / f"compare_{scene.width}x{scene.height}_{scene.frames}.png"
        size = (scene.width, scene.height)
        scores = compare_frames(outputs, _floor_source(scene), size, scene.frames, sheet=sheet)
        lines += ["", "## Same picture? PSNR (dB, RGB) vs the uncompressed ffmpeg composite", ""]
        lines += [f"- {label}: {', '.join(map(str, v))}" for label, v in scores.items()]
        lines += ["", f"Contact sheet: {sheet.relative_to(OUT_DIR.parent.parent)}"]

    text = "\n".join(lines) + "\n"
    print()
    print(text)
    (OUT_DIR / "results.md").write_text(text)
    print(f"written {OUT_DIR / 'results.md'}")


if __name__ == "__main__":
    main()
