"""Real parts end to end: jobs through `sealfuse watch`, its textfile served by node_exporter, scraped
by Prometheus on 127.0.0.1, queried back through /api/v1/query; every dashboard panel expression
and every alert rule evaluated by that Prometheus."""

from __future__ import annotations

import math
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, write_to_textfile

from sealfuse.appliance import metrics as M
from tests.monitoring import dashboard as D
from tests.monitoring.promlib import PromError, Stack
from tests.monitoring.test_rules import ALERTS
from tests.watch.watchlib import REPO, WatchEnv, drop_bytes, png_variant, wait_for

DONE, FAILED = 3, 1


@pytest.fixture(scope="module")
def jobs_ran(prom: Stack, tmp_path_factory: pytest.TempPathFactory, hanks_png: Path
             ) -> Iterator[WatchEnv]:
    """A daemon that ran 3 good jobs and 1 bad drop, still serving, its textfile in node_exporter's dir."""
    env = WatchEnv(tmp_path_factory.mktemp("watch"), hanks_png)
    argv = env.argv() + ["--metrics-file", str(prom.textfile_dir / "sealfuse.prom")]
    proc = subprocess.Popen(argv, env=env.env(), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    env.procs.append(proc)
    try:
        env.wait_ready()
        # Monitoring runs before work arrives: Prometheus has scraped the zero-valued series.
        prom.wait(lambda: prom.value('sealfuse_jobs_total{outcome="failed",reason="empty_file"}') == 0,
                  60, "the daemon's first textfile in Prometheus")
        for i in range(DONE):
            png_variant(env.hanks, env.inbox / "tom" / f"m{i}.png", 40 + i)
        drop_bytes(b"", env.inbox / "tom" / "empty.png")
        wait_for(lambda: len(env.done()) == DONE and len(env.failed()) == FAILED, 180, "the jobs")
        yield env
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        env.stop_all()


def _v(prom: Stack, expr: str) -> float | None:
    return prom.value(expr)


def test_job_metrics_come_back_through_the_prometheus_api(prom: Stack, jobs_ran: WatchEnv) -> None:
    prom.wait(lambda: _v(prom, 'sum(sealfuse_jobs_total{outcome="done"})') == DONE, 60,
              "the finished jobs in Prometheus")
    assert _v(prom, 'sealfuse_jobs_total{outcome="done",reason="ok"}') == DONE
    assert _v(prom, 'sealfuse_jobs_total{outcome="failed",reason="empty_file"}') == FAILED
    assert _v(prom, 'sealfuse_job_duration_seconds_count{outcome="done"}') == DONE
    assert _v(prom, "sealfuse_up") == 1
    assert _v(prom, 'sum(sealfuse_queue_jobs{state=~"pending|queued|running"})') == 0
    p50 = _v(prom, 'histogram_quantile(0.5, sealfuse_job_duration_seconds_bucket{outcome="done"})')
    assert p50 is not None and 0 < p50 < 120
    (build,) = prom.query("sealfuse_build_info")
    assert build["metric"]["backend"] == "local"
    # the labels Prometheus attached: this is the node_exporter target on loopback
    assert build["metric"]["instance"] == f"127.0.0.1:{prom.node_port}"


def test_p50_and_p99_are_recovered_from_the_job_duration_histogram(prom: Stack) -> None:
    """A known distribution (log-uniform 0.2 s .. 2000 s) through the real buckets and Prometheus's
    histogram_quantile: p50 and p99 come back within 15 %."""
    reg = CollectorRegistry()
    h = Histogram("sealfuse_job_duration_seconds", "Wall time of a job from start to its commit",
                  ["outcome"], buckets=M.JOB_DURATION_BUCKETS, registry=reg)
    n = 2000
    samples = sorted(0.2 * (10_000 ** ((i + 0.5) / n)) for i in range(n))
    for s in samples:
        h.labels("synthetic").observe(s)
    path = prom.textfile_dir / "synthetic.prom"
    write_to_textfile(str(path), reg)
    try:
        prom.wait(lambda: prom.query('sealfuse_job_duration_seconds_count{outcome="synthetic"}'), 30,
                  "the synthetic histogram")
        for q in (0.5, 0.99):
            exact = samples[int(q * n)]
            est = _v(prom, f'histogram_quantile({q}, sealfuse_job_duration_seconds_bucket{{outcome="synthetic"}})')
            assert est is not None and abs(est - exact) / exact < 0.15, (q, est, exact)
    finally:
        path.unlink()


def test_every_dashboard_expression_is_valid_and_the_job_panels_show_data(
        prom: Stack, jobs_ran: WatchEnv) -> None:
    prom.wait(lambda: _v(prom, 'sum(sealfuse_jobs_total{outcome="done"})') == DONE, 60, "the jobs")
    empty = []
    for title, ref, expr in D.expressions(D.load()):
        try:
            result = prom.query(expr)
        except PromError as e:
            pytest.fail(f"panel {title!r} target {ref}: Prometheus rejects {expr!r}: {e}")
        if not result:
            empty.append(title)
    # Without a GPU, and with the local backend and no restarts, these panels are empty; every
    # other panel shows data from the jobs above and from node_exporter.
    allowed_empty = {"GPU utilisation", "GPU framebuffer memory", "Video encoder / decoder",
                     "Slurm jobs by state", "Worker restarts and Slurm resubmissions"}
    if M._init_nvml() is not None:
        allowed_empty -= {"GPU utilisation", "GPU framebuffer memory"}
    assert set(empty) <= allowed_empty, f"panels without data: {sorted(set(empty) - allowed_empty)}"


def test_a_bad_expression_is_a_400_so_the_panel_check_can_fail(prom: Stack) -> None:
    with pytest.raises(PromError) as e:
        prom.query("sum by (le (rate(sealfuse_job_duration_seconds_bucket[1m]))")
    assert e.value.status == 400


def test_every_alert_rule_loads_and_evaluates_in_prometheus(prom: Stack) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        rules = prom.rules()
        done = [r for r in rules if r.get("lastEvaluation", "").startswith("0001") is False
                and r.get("health") != "unknown"]
        return rules if len(done) == len(rules) else None

    rules = prom.wait(evaluated, 30, "every rule to be evaluated")
    assert {r["name"] for r in rules} == ALERTS
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad
    assert all(math.isfinite(r.get("evaluationTime", 0)) for r in rules)
