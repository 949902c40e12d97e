"""Does rendering starve the API? Status-poll latency at a fixed request rate while two
renders run, in the embedded mode (``velocity serve``: API and workers in one service).

For each mode (renderer in worker threads of the API process, or in niced child processes:
``VELOCITY_RENDER_SUBPROCESS``) it starts ``velocity serve`` on loopback with its own SQLite
database and storage, uploads a generated template, starts two renders and then sends
``GET /render/{id}/status`` at ``--rate`` requests per second (open loop: each request is
sent on schedule whether or not the previous one answered) for ``--seconds``. Only answers
received while both renders were processing count. Figures, not assertions.

Usage: python bench/api_latency.py [--rate 100] [--seconds 10] [--modes threads,subprocess]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from served import upload_template, velocity_serve, wait_for

ROOT = Path(__file__).resolve().parents[1]


def _fixtures() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_fixtures", ROOT / "fixtures/make_fixtures.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_fixtures"] = module
    spec.loader.exec_module(module)
    return module


def run_mode(
    mode: str, template_zip: Path, rate: float, seconds: float, frames: int
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"velocity-bench-{mode}-"))
    with velocity_serve(
        work,
        VELOCITY_WORKER_THREADS="2",
        VELOCITY_RENDER_SUBPROCESS="1" if mode == "subprocess" else "0",
    ) as served:
        c, headers, base = served.client, served.headers, served.base_url
        tid = upload_template(served, template_zip, 120)
        body = {
            "templateId": tid,
            "name": "bench",
            "encoderConfig": {"bitrate": 1_000_000, "preset": 5},
        }
        rids = []
        for _ in range(2):
            r = c.post("/render", json=body, headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"POST /render answered {r.status_code}: {r.text}")
            rids.append(r.json()["renderId"])

        def both_processing() -> bool:
            return all(
                c.get(f"/render/{r}/status", headers=headers).json()["status"] == "processing"
                for r in rids
            )

        wait_for(both_processing, 120, "two renders processing")
        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        client = httpx.Client(base_url=base, timeout=30, limits=httpx.Limits(max_connections=200))

        def one(rid: str) -> None:
            nonlocal errors
            t = time.perf_counter()
            try:
                r = client.get(f"/render/{rid}/status", headers=headers)
                dt = time.perf_counter() - t
                ok = r.status_code == 200 and r.json()["status"] == "processing"
            except httpx.HTTPError:
                with lock:
                    errors += 1
                return
            if ok:
                with lock:
                    latencies.append(dt)

        threads = []
        start = time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            th = threading.Thread(target=one, args=(rids[i % 2],), daemon=True)
            th.start()
            threads.append(th)
        for th in threads:
            th.join(60)
        elapsed = time.perf_counter() - start
        client.close()
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

    return {
        "mode": mode,
        "requests": n,
        "answered_while_rendering": len(latencies),
        "errors": errors,
        "achieved_rate": round(n / elapsed, 1),
        "p50_ms": pct(0.50) if latencies else None,
        "p99_ms": pct(0.99) if latencies else None,
        "max_ms": round(1000 * latencies[-1], 1) if latencies else None,
        "mean_ms": round(1000 * statistics.mean(latencies), 1) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--frames", type=int, default=900, help="frames per render")
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--modes", default="threads,subprocess")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    fx = _fixtures()
    tmp = Path(tempfile.mkdtemp(prefix="velocity-bench-template-"))
    folder = fx.make_demo_template(
        tmp / "demo", width=width, height=height, fps=30, frames=args.frames
    )
    template_zip = fx.zip_folder(folder, tmp / "demo.zip")
    results = [
        run_mode(mode, template_zip, args.rate, args.seconds, args.frames)
        for mode in args.modes.split(",")
    ]
    print(
        json.dumps(
            {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "results": results},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
