"""The watch service signs every output (C2PA), records the manifest id and output digest in the
audit log, refuses unsigned output when required, and says so when it has no key."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sealfuse.bundle.provenance import init
from sealfuse.verifier.provenance import TRUSTED, read_credentials
from tests.watch.watchlib import WatchEnv, drop_bytes, png_variant, small_mp4

pytest.importorskip("c2pa")


def _net_off() -> list[str]:
    ok = shutil.which("unshare") and subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0
    return ["unshare", "--net"] if ok else []


def _run_once(env: WatchEnv, **extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*_net_off(), *env.argv(once=True)], env=env.env(**extra), cwd=env.root,
                          timeout=240, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture
def pki(tmp_path: Path):  # type: ignore[no-untyped-def]
    return init(tmp_path / "pki", organization="Watch Studio", appliance="watch appliance")


def test_every_watch_output_is_signed_and_audited(watch_env: WatchEnv, pki, tmp_path: Path) -> None:
    env = watch_env
    env.write_config(extra=f'[provenance]\nrequire = true\nkey = "{pki.key}"\nchain = "{pki.chain}"\n')
    png_variant(env.hanks, env.inbox / "tom" / "still.png", 1)
    drop_bytes(small_mp4(env.hanks), env.inbox / "tom" / "clip.mp4")
    png_variant(env.hanks, env.inbox / "alice-face.png", 2)
    png_variant(env.hanks, env.inbox / "bob-shot.png", 3)
    (env.inbox / "m.job.json").write_text(json.dumps(
        {"version": 1, "source": "alice-face.png", "target": "bob-shot.png",
         "options": {"label": "AI-generated", "label_corner": "top-left"}}))
    proc = _run_once(env)
    assert proc.returncode == 0, proc.stdout.decode()[-3000:]
    done = env.done()
    assert set(done) == {"inbox/tom/still.png", "inbox/tom/clip.mp4", "inbox/alice-face.png",
                         "inbox/bob-shot.png", "inbox/m.job.json"}
    audit = {e["job"]: e for e in env.events("done")}
    started = env.events("started")[0]
    assert started["provenance"]["signing"] and started["provenance"]["require"]
    for res in {r["job_id"]: r for r in done.values()}.values():
        out = env.spool / "outbox" / res["job_id"] / res["output"]["name"]
        signed = res["report"]["provenance"]
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        assert signed["signed"] and signed["output_sha256"] == digest == res["output"]["sha256"]
        creds = read_credentials(out, pki.ca_cert)
        assert creds.state == TRUSTED, creds.failures
        assert creds.job_id == res["job_id"] and creds.manifest_id == signed["manifest_id"]
        entry = audit[res["job_id"]]
        assert entry["manifest"] == signed["manifest_id"] and entry["output_sha256"] == digest and entry["signed"]
        text = out.read_bytes()
        for name in (b"alice-face", b"bob-shot", b"still.png", b"clip.mp4", str(env.spool).encode()):
            assert name not in text
    manifest_job = done["inbox/m.job.json"]
    out = env.spool / "outbox" / manifest_job["job_id"] / "bob-shot.png"
    assert read_credentials(out).options["label"] == "AI-generated"


def test_required_signing_without_a_key_fails_jobs_and_says_why(watch_env: WatchEnv, tmp_path: Path) -> None:
    env = watch_env
    env.write_config(extra="[provenance]\nrequire = true\n")
    png_variant(env.hanks, env.inbox / "tom" / "p.png", 4)
    proc = _run_once(env, SEALFUSE_PROVENANCE_KEY="", SEALFUSE_PROVENANCE_CHAIN="")
    assert proc.returncode == 0, proc.stdout.decode()[-3000:]
    assert "outputs are UNSIGNED" in proc.stdout.decode()
    assert env.reasons() == {"inbox/tom/p.png": "unsigned_output_refused"}
    started = env.events("started")[0]["provenance"]
    assert not started["signing"] and started["require"] and "UNSIGNED" in started["message"]
    assert not list((env.spool / "outbox").glob("*/p.png"))


def test_without_a_key_outputs_are_written_unsigned_and_audited_as_such(watch_env: WatchEnv) -> None:
    env = watch_env
    png_variant(env.hanks, env.inbox / "tom" / "p.png", 5)
    proc = _run_once(env, SEALFUSE_PROVENANCE_KEY="", SEALFUSE_PROVENANCE_CHAIN="")
    assert proc.returncode == 0, proc.stdout.decode()[-3000:]
    assert "WARNING: outputs are UNSIGNED" in proc.stdout.decode()
    (res,) = env.done().values()
    entry = env.events("done")[0]
    assert entry["signed"] is False and entry["manifest"] is None
    assert entry["output_sha256"] == res["output"]["sha256"] == res["report"]["provenance"]["output_sha256"]


def test_an_unusable_key_stops_the_start_with_its_reason(watch_env: WatchEnv, pki, tmp_path: Path) -> None:
    env = watch_env
    other = init(tmp_path / "other", organization="Other", appliance="x")
    env.write_config(extra=f'[provenance]\nkey = "{other.key}"\nchain = "{pki.chain}"\n')
    proc = _run_once(env)
    assert proc.returncode != 0
    assert "does not belong to the chain" in proc.stdout.decode()


def test_a_bad_disclosure_label_in_a_job_is_refused_by_the_schema(watch_env: WatchEnv) -> None:
    from sealfuse.appliance.watch.config import JOB_OPTIONS_SCHEMA, validate

    assert validate({"label": "AI-generated"}, JOB_OPTIONS_SCHEMA) == []
    assert validate({"label": "   "}, JOB_OPTIONS_SCHEMA)
    assert validate({"label": "KI \u2013 generiert"}, JOB_OPTIONS_SCHEMA)
    assert validate({"label_corner": "middle"}, JOB_OPTIONS_SCHEMA)
