"""Helpers for the watch-folder tests: a spool, a config, and `python -m sealfuse watch` as a real process."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "tests" / "watch" / "watch_harness.py"  # `sealfuse watch` with the hook worker
STATE_FILES = {"state.sqlite", "audit.jsonl", "sealfuse.prom"}


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def png_variant(src: Path, dst: Path, i: int) -> Path:
    """A copy of a real photo with one pixel changed, so every job has its own content digest."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        x, y = i % im.width, (i // im.width) % im.height
        r, g, b = im.getpixel((x, y))
        im.putpixel((x, y), ((r + 1 + i // 7) % 256, g, b))
        tmp = dst.with_name("." + dst.name)
        im.save(tmp, format="PNG")
    os.rename(tmp, dst)
    return dst


def drop(src: Path, dst: Path) -> Path:
    """Producer protocol: write under a dotfile name, then rename into place."""
    tmp = dst.with_name("." + dst.name + ".partial")
    tmp.write_bytes(src.read_bytes() if isinstance(src, Path) else src)
    os.rename(tmp, dst)
    return dst


def drop_bytes(data: bytes, dst: Path) -> Path:
    tmp = dst.with_name("." + dst.name + ".partial")
    tmp.write_bytes(data)
    os.rename(tmp, dst)
    return dst


class WatchEnv:
    def __init__(self, root: Path, hanks: Path) -> None:
        self.root = root
        self.spool = root / "spool"
        self.state = root / "state"
        self.tmp = root / "run"
        self.config = root / "watch.toml"
        self.hanks = hanks
        self.inbox = self.spool / "inbox"
        self.tmp.mkdir(parents=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.write_config()

    def write_config(self, watch: dict[str, Any] | None = None, extra: str = "") -> None:
        settings = {"stable_seconds": 0.5, "scan_interval": 0.2, "shutdown_grace_seconds": 10,
                    "job_timeout_seconds": 120, "max_rss_mb": 6144, **(watch or {})}
        lines = ["[watch]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        lines += ["[engine]", 'execution_providers = ["cpu"]', "execution_threads = 1",
                  "[presets.tom]", f'source = "{self.hanks}"', extra]
        self.config.write_text("\n".join(lines) + "\n")
        (self.inbox / "tom").mkdir(parents=True, exist_ok=True)

    def argv(self, once: bool = False) -> list[str]:
        a = [sys.executable, str(HARNESS), "--spool", str(self.spool), "--config",
             str(self.config), "--state-dir", str(self.state), "--tmp-dir", str(self.tmp)]
        return a + (["--once"] if once else [])

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}, **extra)
        return env

    def start(self, once: bool = False, **env: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(self.argv(once), env=self.env(**env), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def run_once(self, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.argv(once=True), env=self.env(**env), cwd=REPO, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    # -- observation ------------------------------------------------------------------------
    def audit(self) -> list[dict[str, Any]]:
        path = self.state / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.audit() if e["event"] == event]

    def wait_ready(self, timeout: float = 90) -> None:
        wait_for(lambda: self.events("worker_ready"), timeout, "the worker to load the models")

    def done(self) -> dict[str, dict[str, Any]]:
        """drop path (relative to spool) -> result.json, for every finished job."""
        out = {}
        for d in (self.spool / "outbox").iterdir():
            if d.name.startswith("."):
                continue
            res = json.loads((d / "result.json").read_text())
            for drop_rel in res["drop"]:
                out[drop_rel] = res
        return out

    def failed(self) -> dict[str, dict[str, Any]]:
        """drop path (relative to spool) -> error.json, for every quarantined job."""
        out = {}
        for d in (self.spool / "failed").iterdir():
            if d.name.startswith("."):
                continue
            err = json.loads((d / "error.json").read_text())
            for i in err["inputs"]:
                out[i["drop"]] = err
        return out

    def reasons(self) -> dict[str, str]:
        return {k: v["reason"] for k, v in self.failed().items()}

    def residue(self) -> list[str]:
        """Files that should not exist once the daemon has drained and stopped."""
        bad = []
        for dirpath, dirnames, filenames in os.walk(self.spool / "inbox"):
            for n in filenames + [d for d in dirnames if Path(dirpath) != self.spool / "inbox"]:
                bad.append(os.path.join(dirpath, n))
        bad += [str(p) for p in (self.spool / "work").iterdir()]
        bad += [str(p) for p in (self.spool / "outbox").iterdir() if p.name.startswith(".")]
        bad += [str(p) for p in (self.spool / "failed").iterdir() if p.name.startswith(".")]
        for d in (self.spool / "outbox").iterdir():
            if d.name.startswith("."):
                continue
            allowed = {"result.json", "input", json.loads((d / "result.json").read_text())["output"]["name"]}
            bad += [str(p) for p in d.iterdir() if p.name not in allowed]
        bad += [str(p) for p in self.state.iterdir() if p.name not in STATE_FILES]
        for dirpath, _dirs, filenames in os.walk(self.tmp):
            bad += [os.path.join(dirpath, n) for n in filenames]
        return bad

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()


def small_mp4(frame_png: Path, frames: int = 12) -> bytes:
    import av
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(frame_png).convert("RGB").resize((128, 128)))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        for _ in range(frames):
            for pkt in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return buf.getvalue()


WATCH_DOC = REPO / "docs" / "watch-folder.md"


def documented_reasons() -> set[str]:
    """The reasons listed in docs/watch-folder.md's "Quarantine reasons" table."""
    text = WATCH_DOC.read_text()
    section = text.split("## Quarantine reasons", 1)[1].split("\n## ", 1)[0]
    found: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| reason"):
            first = line.split("|")[1]
            found |= set(re.findall(r"`([a-z_]+)`", first))
    return found
