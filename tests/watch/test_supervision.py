"""A crashing, hanging or memory-hungry job fails alone; the daemon and the next job live on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.watch.watchlib import WatchEnv, png_variant, wait_for


def _restarts(env: WatchEnv) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families((env.state / "sealfuse.prom").read_text()):
        for s in fam.samples:
            if s.name == "sealfuse_worker_restarts_total":
                out[s.labels["reason"]] = s.value
    return out


def test_native_abort_in_the_worker_fails_only_that_job(watch_env: WatchEnv) -> None:
    env = watch_env
    png_variant(env.hanks, env.inbox / "tom" / "boom__abort__.png", 1)
    png_variant(env.hanks, env.inbox / "tom" / "fine.png", 2)
    proc = env.run_once()
    assert proc.returncode == 0, proc.stdout.decode()[-2000:]
    assert set(env.done()) == {"inbox/tom/fine.png"}
    err = env.failed()["inbox/tom/boom__abort__.png"]
    assert err["reason"] == "worker_crashed" and err["evidence"]["signal"] == "SIGABRT"
    assert (env.spool / "failed" / err["job_id"] / "input" / "boom__abort__.png").is_file()
    assert _restarts(env) == {"crash": 1.0}
    assert not list(Path(env.root).rglob("core*")), "RLIMIT_CORE=0: no core file"
    assert env.residue() == []


def test_job_past_its_timeout_is_killed_and_failed(watch_env: WatchEnv) -> None:
    env = watch_env
    env.write_config({"job_timeout_seconds": 2})
    png_variant(env.hanks, env.inbox / "tom" / "stuck__hang__.png", 3)
    png_variant(env.hanks, env.inbox / "tom" / "after.png", 4)
    assert env.run_once().returncode == 0
    assert env.reasons() == {"inbox/tom/stuck__hang__.png": "timeout"}
    assert set(env.done()) == {"inbox/tom/after.png"}
    assert _restarts(env) == {"timeout": 1.0}
    assert env.residue() == []


def test_rss_guard_kills_a_job_over_the_memory_limit(watch_env: WatchEnv) -> None:
    env = watch_env
    env.write_config({"max_rss_mb": 900, "rss_poll_seconds": 0.1})
    png_variant(env.hanks, env.inbox / "tom" / "greedy__hog__.png", 5)
    png_variant(env.hanks, env.inbox / "tom" / "modest.png", 6)
    assert env.run_once().returncode == 0
    err = env.failed()["inbox/tom/greedy__hog__.png"]
    assert err["reason"] == "memory_limit" and err["evidence"]["rss_bytes"] > 900 * 1024 * 1024
    assert set(env.done()) == {"inbox/tom/modest.png"}
    assert _restarts(env) == {"memory_limit": 1.0}


def test_sigterm_finishes_the_running_job_within_the_grace_period(watch_env: WatchEnv) -> None:
    env = watch_env
    daemon = env.start(SEALFUSE_TEST_SLOW_SECONDS="2")
    env.wait_ready()
    png_variant(env.hanks, env.inbox / "tom" / "patient__slow__.png", 7)
    wait_for(lambda: env.events("started_job"), 30, "the job to start")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    assert set(env.done()) == {"inbox/tom/patient__slow__.png"}
    assert env.residue() == []


def test_sigterm_past_the_grace_period_puts_the_job_back_into_the_inbox(watch_env: WatchEnv) -> None:
    env = watch_env
    env.write_config({"shutdown_grace_seconds": 1})
    daemon = env.start()
    env.wait_ready()
    png_variant(env.hanks, env.inbox / "tom" / "long__hang__.png", 8)
    wait_for(lambda: env.events("started_job"), 30, "the job to start")
    worker = psutil.Process(daemon.pid).children()[0]
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    assert (env.inbox / "tom" / "long__hang__.png").is_file()
    assert not list((env.spool / "work").iterdir()) and env.done() == {} and env.failed() == {}
    assert env.events("requeued")[0]["drop"] == ["inbox/tom/long__hang__.png"]
    wait_for(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 10, "worker exit")
    # Handed back, not remembered as pending: the next run takes it again (and is not a duplicate).
    (env.inbox / "tom" / "long__hang__.png").rename(env.inbox / "tom" / "long.png")
    assert env.run_once().returncode == 0
    assert set(env.done()) == {"inbox/tom/long.png"}


def _recv_all(sock: socket.socket, seconds: float) -> list[str]:
    msgs, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msgs.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return msgs


def test_sd_notify_ready_status_and_watchdog_stop_when_the_loop_hangs(watch_env: WatchEnv) -> None:
    env = watch_env
    name = f"@sealfuse-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    daemon = env.start(NOTIFY_SOCKET=name, WATCHDOG_USEC="400000", SEALFUSE_TEST_SLOW_SECONDS="3")
    try:
        msgs: list[str] = []
        wait_for(lambda: msgs.extend(_recv_all(sock, 0.2)) or any("READY=1" in m for m in msgs), 90,
                 "READY=1")
        ready = next(m for m in msgs if "READY=1" in m)
        assert "STATUS=ready; queue 0; running none" in ready
        png_variant(env.hanks, env.inbox / "tom" / "n__slow__.png", 9)
        (started,) = wait_for(lambda: env.events("started_job"), 30, "the job to start")
        msgs = _recv_all(sock, 1.0)
        assert sum(m == "WATCHDOG=1" for m in msgs) >= 3  # every 0.2 s (half of 0.4 s)
        # STATUS names the running job by its id (the job sleeps 3 s before its swap).
        assert any(m.startswith("STATUS=ready; queue 0; running ") and started["job"] in m for m in msgs), msgs
        daemon.send_signal(signal.SIGSTOP)  # the main loop hangs: pings must stop
        try:
            time.sleep(0.3)
            assert [m for m in _recv_all(sock, 1.5) if m == "WATCHDOG=1"] == []
        finally:
            daemon.send_signal(signal.SIGCONT)
        assert "WATCHDOG=1" in _recv_all(sock, 1.0)
        wait_for(lambda: env.done(), 60, "the slow job to finish")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        assert "STOPPING=1" in _recv_all(sock, 0.5)
    finally:
        sock.close()


def test_a_worker_that_cannot_load_its_models_exits_5_naming_the_reason(watch_env: WatchEnv,
                                                                        tmp_path: Path) -> None:
    env = watch_env
    text = env.config.read_text().replace(
        "execution_threads = 1", 'execution_threads = 1\nface_swapper_model = "inswapper_128"')
    env.config.write_text(text)
    empty = tmp_path / "models"
    empty.mkdir()
    proc = subprocess.run(env.argv(once=True) + ["--models-dir", str(empty)], env=env.env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert "model_missing" in proc.stderr and str(empty) in proc.stderr
