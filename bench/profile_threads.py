"""Where a Velocity render's CPU time goes, thread by thread.

Renders the standard composition once in this process while sampling every thread's CPU time
(psutil, every 50 ms). Python threads are named; threads started inside FFmpeg (x264's frame
and lookahead threads, the H.264 decoder's frame threads) have no Python name and are listed
by when they appeared. Compare their sum with the floor's CPU seconds in results.md.

Usage: python bench/profile_threads.py [--size WxH] [--frames N]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from composition import GOP, TOTAL_FRAMES, build, parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=parse_size, default=(1920, 1080))
    parser.add_argument("--frames", type=int, default=TOTAL_FRAMES)
    args = parser.parse_args()
    scene = build(args.size, args.frames)

    import renderer.encode.encoder  # noqa: F401 - loaded before sampling starts
    from renderer.encode.config import EncoderConfig
    from renderer.render import render
    from renderer.template.loader import load_template

    proc = psutil.Process()
    cpu: dict[int, float] = {}
    names: dict[int, str] = {}
    order: list[int] = []
    done = threading.Event()

    def sample() -> None:
        for t in threading.enumerate():
            if t.native_id is not None:
                names[t.native_id] = t.name
        for th in proc.threads():
            if th.id not in cpu:
                order.append(th.id)
            cpu[th.id] = th.user_time + th.system_time

    def watch() -> None:
        while not done.wait(0.05):
            sample()

    sample()
    base = dict(cpu)
    watcher = threading.Thread(target=watch, name="watcher", daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    report = render(
        load_template(scene.template_dir),
        scene.template_dir.parent / "profile.mp4",
        encoder=EncoderConfig(codec=0, rc=3, crf=23, preset=4, gop=GOP),
        encoder_preference="software",
    )
    wall = time.perf_counter() - t0
    done.set()
    watcher.join()
    sample()

    rows = []
    for tid in order:
        used = cpu[tid] - base.get(tid, 0.0)
        if used >= 0.05 and names.get(tid) != "watcher":
            rows.append((tid, names.get(tid, "native (FFmpeg/x264)"), used))
    total = sum(r[2] for r in rows)
    print(f"wall {wall:.2f} s, CPU {total:.2f} s over {len(rows)} threads (in start order):")
    for tid, name, used in rows:
        print(f"  {used:6.2f} s  {name}  [tid {tid}]")
    stages = ", ".join(f"{k} {v:.2f}" for k, v in report.stages_s.items())
    print(f"report stages (s): {stages}")


if __name__ == "__main__":
    main()
