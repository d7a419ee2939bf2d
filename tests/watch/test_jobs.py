"""Jobs through a real `sealfuse watch` process: presets, manifests, idempotency, config, metrics."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.watch.watchlib import WatchEnv, png_variant, wait_for


def _metrics(env: WatchEnv) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (env.state / "sealfuse.prom").read_text()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_preset_and_manifest_drops_land_in_outbox_once(watch_env: WatchEnv, tmp_path: Path) -> None:
    env = watch_env
    png_variant(env.hanks, env.inbox / "tom" / "p1.png", 1)
    png_variant(env.hanks, env.inbox / "src.png", 2)
    png_variant(env.hanks, env.inbox / "tgt.png", 3)
    (env.inbox / "m1.job.json").write_text(json.dumps(
        {"version": 1, "source": "src.png", "target": "tgt.png", "label": "order-17",
         "options": {"blend_ratio": 0.9}}))
    (env.inbox / ".hidden.png").write_bytes(b"ignored")
    (env.inbox / "tom" / "x.png.partial").write_bytes(b"ignored")
    proc = env.run_once()
    assert proc.returncode == 0, proc.stdout.decode()[-2000:]
    done = env.done()
    assert set(done) == {"inbox/tom/p1.png", "inbox/src.png", "inbox/tgt.png", "inbox/m1.job.json"}
    res = done["inbox/m1.job.json"]
    assert res["label"] == "order-17" and res["options"] == {"blend_ratio": 0.9}
    out = env.spool / "outbox" / res["job_id"] / "tgt.png"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == res["output"]["sha256"]
    assert stat.S_IMODE(out.stat().st_mode) & 0o027 == 0  # 0640 or stricter
    assert res["report"]["faces"], "the engine's report travels into result.json"
    # processed inputs are deleted, ignored names are left alone
    assert sorted(p.name for p in env.inbox.iterdir()) == [".hidden.png", "tom"]
    assert [p.name for p in (env.inbox / "tom").iterdir()] == ["x.png.partial"]
    assert not list((env.spool / "work").iterdir())
    m = _metrics(env)
    assert m[("sealfuse_jobs_total", (("outcome", "done"), ("reason", "ok")))] == 2
    assert m[("sealfuse_job_duration_seconds_count", (("outcome", "done"),))] == 2
    assert m[("sealfuse_queue_depth", ())] == 0
    verify = subprocess.run([sys.executable, "-m", "sealfuse", "audit", "verify", str(env.state / "audit.jsonl")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    events = [e["event"] for e in env.audit()]
    assert events.count("done") == 2 and events[0] == "started"


def test_retain_inputs_keeps_the_drop_beside_its_result(watch_env: WatchEnv) -> None:
    env = watch_env
    env.write_config({"retain_inputs": True})
    png_variant(env.hanks, env.inbox / "tom" / "keep.png", 4)
    assert env.run_once().returncode == 0
    (res,) = env.done().values()
    assert (env.spool / "outbox" / res["job_id"] / "input" / "keep.png").is_file()


def test_identical_redrop_is_quarantined_as_duplicate_across_restarts(watch_env: WatchEnv) -> None:
    env = watch_env
    png_variant(env.hanks, env.inbox / "tom" / "a.png", 5)
    assert env.run_once().returncode == 0
    (first,) = env.done().values()
    png_variant(env.hanks, env.inbox / "tom" / "a.png", 5)  # same bytes again, new daemon process
    png_variant(env.hanks, env.inbox / "tom" / "b.png", 6)  # different content: runs
    assert env.run_once().returncode == 0
    assert len(env.done()) == 2  # a.png once, b.png once
    err = env.failed()["inbox/tom/a.png"]
    assert err["reason"] == "duplicate"
    assert err["evidence"]["original_job"] == first["job_id"]
    assert not (env.spool / "failed" / err["job_id"] / "input").exists()  # identical media not kept
    dup = env.events("duplicate")
    assert dup and dup[0]["original_job"] == first["job_id"]


def test_still_being_written_file_is_not_claimed_until_stable(watch_env: WatchEnv, tmp_path: Path) -> None:
    env = watch_env
    env.write_config({"stable_seconds": 1.0})
    data = png_variant(env.hanks, tmp_path / "slow.png", 7).read_bytes()
    daemon = env.start()
    env.wait_ready()
    target = env.inbox / "tom" / "slow.png"
    with open(target, "wb") as f:  # a producer that writes in place, slowly, without renaming
        step = len(data) // 8 + 1
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(0.4)
            assert target.exists(), "claimed while still being written"
            assert not env.events("claimed")
    wait_for(lambda: env.done(), 60, "the slowly written drop to be processed")
    daemon.terminate()
    assert daemon.wait(60) == 0
    assert env.reasons() == {}


def test_missing_config_means_defaults_and_invalid_config_is_a_clear_error(watch_env: WatchEnv) -> None:
    env = watch_env
    env.config.unlink()
    env.config = env.root / "absent.toml"
    assert env.run_once().returncode == 0
    assert env.events("started")[0]["config"] is None
    env.config = env.root / "bad.toml"
    env.config.write_text("[watch]\nconcurrency = 0\nbogus = 1\n")
    proc = env.run_once()
    out = proc.stdout.decode()
    assert proc.returncode == 2
    assert "watch.concurrency" in out and "bogus" in out
    env.config.write_text("[watch\n")
    proc = env.run_once()
    assert proc.returncode == 2 and "not valid TOML" in proc.stdout.decode()


def test_job_temporaries_are_private_and_stale_ones_are_swept_on_start(watch_env: WatchEnv) -> None:
    env = watch_env
    from sealfuse.appliance.watch.daemon import Paths

    jobs_tmp = Paths(env.spool, env.state, env.state / "a", env.state / "m", env.tmp).jobs_tmp
    stale = jobs_tmp / "20000101T000000-old-abcdef" / "out"
    stale.mkdir(parents=True)
    (stale / "partial.mp4").write_bytes(b"left by a killed run")
    daemon = env.start(SEALFUSE_TEST_SLOW_SECONDS="2")
    env.wait_ready()
    assert not (jobs_tmp / "20000101T000000-old-abcdef").exists()
    png_variant(env.hanks, env.inbox / "tom" / "t__slow__.png", 11)
    (started,) = wait_for(lambda: env.events("started_job"), 30, "the job to start")
    job_dir = jobs_tmp / started["job"]
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(jobs_tmp.stat().st_mode) == 0o700
    wait_for(lambda: env.done(), 60, "the job to finish")
    assert not job_dir.exists()
    daemon.terminate()
    assert daemon.wait(60) == 0
    assert not jobs_tmp.exists() and env.residue() == []
