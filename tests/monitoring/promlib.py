"""Real Prometheus and node_exporter (Debian's) on 127.0.0.1 and free ports, for the monitoring tests:
node_exporter serves a textfile directory, Prometheus scrapes it every second and loads rule files."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.slurm.slurmlib import free_port

NODE_EXPORTER = "prometheus-node-exporter"
PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
# Collectors the dashboard and the alert rules read, besides the textfile.
COLLECTORS = ("textfile", "meminfo", "filesystem", "time", "timex", "loadavg")


def skip_reason() -> str | None:
    missing = [t for t in (NODE_EXPORTER, PROMETHEUS, PROMTOOL) if shutil.which(t) is None]
    if missing:
        return f"monitoring tests need Debian's prometheus and prometheus-node-exporter ({missing})"
    return None


class PromError(AssertionError):
    """Prometheus answered with an error (a bad expression is HTTP 400)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body.get('errorType')}: {body.get('error')}")
        self.status = status
        self.body = body


class Stack:
    """node_exporter (textfile collector over `textfile_dir`) + Prometheus scraping it."""

    def __init__(self, root: Path, rule_files: Sequence[Path] = ()) -> None:
        self.root = root
        self.textfile_dir = root / "textfile"
        self.node_port = free_port()
        self.prom_port = free_port()
        self.rule_files = list(rule_files)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    def start(self, timeout: float = 60) -> Stack:
        self.textfile_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "tsdb").mkdir(exist_ok=True)
        argv = [shutil.which(NODE_EXPORTER) or NODE_EXPORTER,
                f"--web.listen-address=127.0.0.1:{self.node_port}",
                "--collector.disable-defaults",
                f"--collector.textfile.directory={self.textfile_dir}",
                *(f"--collector.{c}" for c in COLLECTORS)]
        self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                           stderr=open(self.root / "node_exporter.log", "wb")))  # noqa: SIM115
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": "node",
                                "static_configs": [{"targets": [f"127.0.0.1:{self.node_port}"]}]}],
        }
        conf = self.root / "prometheus.yml"
        conf.write_text(json.dumps(config))  # JSON is YAML
        self.procs.append(subprocess.Popen(
            [shutil.which(PROMETHEUS) or PROMETHEUS, f"--config.file={conf}",
             f"--storage.tsdb.path={self.root / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.prom_port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "prometheus.log", "wb")))  # noqa: SIM115
        self.wait(lambda: self.query('up{job="node"} == 1'), timeout,
                  "Prometheus to scrape node_exporter")
        return self

    def stop(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()

    # ------------------------------------------------------------------------------ API
    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise PromError(e.code, json.load(e)) from None
        if body.get("status") != "success":
            raise PromError(200, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (empty when nothing matches)."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [data]

    def query_range(self, expr: str, seconds: int = 60) -> Any:
        end = time.time()
        return self.api("query_range", query=expr, start=str(end - seconds), end=str(end), step="5")

    def value(self, expr: str) -> float | None:
        res = self.query(expr)
        return float(res[0]["value"][1]) if res else None

    def rules(self) -> list[dict[str, Any]]:
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    @staticmethod
    def wait(pred: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(PromError, OSError):
                value = pred()
                if value:
                    return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
