"""Benchmark the watch-folder daemon: drop-to-claim latency and warm-daemon throughput.

1. Latency: with the daemon running, N drops are renamed into inbox/<preset>/ (paced); the time from
   each rename to its `claimed` audit entry gives p50/p99 (goal: p99 < 1 s).
2. Throughput: M small image jobs through the warm daemon vs. one `python -m sealfuse swap`
   process per job, in the same run, printed as jobs/minute and their ratio.

    .venv/bin/python bench/watch.py [--drops 200] [--jobs 20] [--pace-ms 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from PIL import Image


def _images() -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec and spec.submodule_search_locations, "insightface (engine extra) is needed"
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


def _variant(src: Path, i: int) -> bytes:
    import io

    with Image.open(src) as im:
        im = im.convert("RGB")
        x, y = i % im.width, (i // im.width) % im.height
        r, g, b = im.getpixel((x, y))
        im.putpixel((x, y), ((r + 1 + i // 97) % 256, g, b))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()


def _audit(state: Path) -> list[dict]:
    p = state / "audit.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def _wait(pred, timeout: float) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit("timed out")


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drops", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--pace-ms", type=float, default=20.0)
    args = ap.parse_args()
    hanks = _images() / "Tom_Hanks_54745.png"
    with tempfile.TemporaryDirectory(prefix="sealfuse-bench-watch-") as tmp:
        root = Path(tmp)
        spool, state, run = root / "spool", root / "state", root / "run"
        run.mkdir()
        cfg = root / "watch.toml"
        cfg.write_text(f'[watch]\nstable_seconds = 2\n[engine]\nexecution_providers = ["cpu"]\n'
                       f'execution_threads = 1\n[presets.p]\nsource = "{hanks}"\n')
        (spool / "inbox" / "p").mkdir(parents=True)
        staging = root / "staging"
        staging.mkdir()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        daemon = subprocess.Popen([sys.executable, "-m", "sealfuse", "watch", "--spool", str(spool),
                                   "--config", str(cfg), "--state-dir", str(state), "--tmp-dir", str(run)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(lambda: any(e["event"] == "worker_ready" for e in _audit(state)), 120)
            # 1. drop-to-claim latency
            dropped: dict[str, float] = {}
            for i in range(args.drops):
                name = f"lat{i:04d}.png"
                tmpf = spool / "inbox" / "p" / f".{name}.partial"
                tmpf.write_bytes(_variant(hanks, i))
                os.rename(tmpf, spool / "inbox" / "p" / name)
                dropped[f"inbox/p/{name}"] = time.time()
                time.sleep(args.pace_ms / 1000)
            _wait(lambda: sum(e["event"] == "done" for e in _audit(state)) >= args.drops, 900)
            lat = [(_ts(e["time"]) - dropped[e["drop"][0]]) * 1000 for e in _audit(state)
                   if e["event"] == "claimed" and e["drop"][0] in dropped]
            print(f"drop-to-claim latency over {len(lat)} renamed drops: p50 {pct(lat, 0.5):.1f} ms, "
                  f"p99 {pct(lat, 0.99):.1f} ms, max {max(lat):.1f} ms (goal p99 < 1000 ms)")
            # 2. warm daemon throughput
            base = sum(e["event"] == "done" for e in _audit(state))
            t0 = time.monotonic()
            for i in range(args.jobs):
                name = f"thr{i:03d}.png"
                tmpf = spool / "inbox" / "p" / f".{name}.partial"
                tmpf.write_bytes(_variant(hanks, 100_000 + i))
                os.rename(tmpf, spool / "inbox" / "p" / name)
            _wait(lambda: sum(e["event"] == "done" for e in _audit(state)) >= base + args.jobs, 900)
            warm = time.monotonic() - t0
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
        # one process per job
        t0 = time.monotonic()
        for i in range(args.jobs):
            src = staging / f"c{i}.png"
            src.write_bytes(_variant(hanks, 100_000 + i))
            subprocess.run([sys.executable, "-m", "sealfuse", "swap", "-s", str(hanks), "-t", str(src),
                            "-o", str(staging / f"o{i}.png"), "--execution-providers", "cpu",
                            "--execution-threads", "1"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cold = time.monotonic() - t0
    warm_rate, cold_rate = args.jobs / warm * 60, args.jobs / cold * 60
    print(f"throughput, {args.jobs} small image jobs: warm daemon {warm_rate:.0f} jobs/min, "
          f"one `sealfuse swap` process per job {cold_rate:.0f} jobs/min, ratio {warm_rate / cold_rate:.1f}x")
    print(f"mean wall time per job: daemon {warm / args.jobs * 1000:.0f} ms, "
          f"process {cold / args.jobs * 1000:.0f} ms")


if __name__ == "__main__":
    main()
