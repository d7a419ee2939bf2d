"""Hostile spools: one daemon per spool, nothing under the spool followed, failing disks."""

from __future__ import annotations

import signal

from watchlib import WatchEnv, png_variant, wait_for


def test_a_second_daemon_on_the_same_spool_exits_4_and_touches_nothing(watch_env: WatchEnv) -> None:
    env = watch_env
    first = env.start(SEALFUSE_TEST_SLOW_SECONDS="3")
    env.wait_ready()
    png_variant(env.hanks, env.inbox / "tom" / "inflight__slow__.png", 1)
    (started,) = wait_for(lambda: env.events("started_job"), 30, "the first daemon's job to start")
    tmp_before = sorted(p.name for p in env.tmp.rglob("*"))
    second = env.run_once(timeout=60)
    out = second.stdout.decode()
    assert second.returncode == 4, out
    assert "another sealfuse watch daemon is running" in out and str(env.spool) in out
    # The job in flight was neither re-queued nor disturbed, the temporaries are intact.
    assert sorted(p.name for p in env.tmp.rglob("*")) == tmp_before
    assert (env.spool / "work" / started["job"]).is_dir()
    assert len(env.events("started")) == 1 and not env.events("recovered")
    wait_for(lambda: env.done(), 60, "the first daemon's job to finish")
    first.send_signal(signal.SIGTERM)
    assert first.wait(60) == 0
    assert set(env.done()) == {"inbox/tom/inflight__slow__.png"} and env.failed() == {}
    # Once the first has stopped, the lock is free again.
    assert env.run_once(timeout=120).returncode == 0
