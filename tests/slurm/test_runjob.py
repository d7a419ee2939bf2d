"""`sealfuse run-job` on its own (as a compute node runs it): commits a claimed job once, refuses
bad requests without changing anything, and a second run finds the job committed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sealfuse.appliance.fsutil import write_json_atomic
from sealfuse.appliance.runjob import EXIT_CODES, REQUEST_VERSION, job_dir
from sealfuse.appliance.watch import spool as S
from tests.watch.watchlib import png_variant


def _run(spool: Path, job_id: str, **env: str) -> tuple[int, dict[str, Any]]:
    r = subprocess.run([sys.executable, "-m", "sealfuse", "run-job", "--spool", str(spool), "--job-id", job_id,
                        "--json"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])


def _claimed(tmp_path: Path, hanks: Path) -> tuple[Path, str]:
    spool = tmp_path / "spool"
    for d in ("inbox/tom", "work", "outbox", "failed"):
        (spool / d).mkdir(parents=True)
    drop = png_variant(hanks, spool / "inbox" / "tom" / "x.png", 90)
    record = S.claim(spool, [("target", drop)], kind="preset", preset="tom", options={}, label="l-1",
                     client_ref="ref-1", seen="2026-01-01T00:00:00Z")
    assert record is not None
    job_id = record["job_id"]
    job_dir(spool, job_id).mkdir(parents=True)
    write_json_atomic(job_dir(spool, job_id) / "request.json", {
        "version": REQUEST_VERSION, "job_id": job_id, "source": str(hanks),
        "target": str(spool / "work" / job_id / "in" / "x.png"), "options": {},
        "engine": {"execution_providers": ["cpu"], "execution_threads": 1}})
    return spool, job_id


def test_run_job_commits_once_and_a_second_run_changes_nothing(tmp_path: Path, hanks_png: Path) -> None:
    spool, job_id = _claimed(tmp_path, hanks_png)
    code, out = _run(spool, job_id, SLURM_JOB_ID="4711", SLURMD_NODENAME="gpu07")
    assert (code, out["outcome"]) == (0, "committed"), out
    res = json.loads((spool / "outbox" / job_id / "result.json").read_text())
    assert res["dispatch"] == {"backend": "slurm", "slurm_job_id": "4711", "node": "gpu07"}
    assert res["client_ref"] == "ref-1" and res["label"] == "l-1" and res["drop"] == ["inbox/tom/x.png"]
    assert set(res["inputs"]) == {"target", "source"}
    assert res["output"]["sha256"] == out["output"]["sha256"]
    assert not (spool / "work" / job_id).exists()
    before = {p.name: p.stat().st_mtime_ns for p in (spool / "outbox" / job_id).iterdir()}
    code, out = _run(spool, job_id, SLURM_JOB_ID="4712")
    assert (code, out["outcome"]) == (0, "already_committed")
    assert {p.name: p.stat().st_mtime_ns for p in (spool / "outbox" / job_id).iterdir()} == before
    assert sorted(p.name for p in (spool / "outbox").iterdir()) == [job_id]


@pytest.mark.parametrize("breakage", ["target_outside", "wrong_job", "not_json"])
def test_a_bad_request_is_refused_and_the_claim_stays(tmp_path: Path, hanks_png: Path, breakage: str) -> None:
    spool, job_id = _claimed(tmp_path, hanks_png)
    req = job_dir(spool, job_id) / "request.json"
    doc = json.loads(req.read_text())
    if breakage == "target_outside":
        doc["target"] = str(hanks_png)
        req.write_text(json.dumps(doc))
    elif breakage == "wrong_job":
        doc["job_id"] = "another"
        req.write_text(json.dumps(doc))
    else:
        req.write_text("{not json")
    code, out = _run(spool, job_id)
    assert code == 2 and out["reason"] == "bad_request" and out["ok"] is False
    assert (spool / "work" / job_id / "claim.json").is_file()
    assert not list((spool / "outbox").iterdir()) and not list((spool / "failed").iterdir())


def test_a_malformed_job_id_is_a_usage_error(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "../etc")
    assert code == 2 and out["reason"] == "bad_request"


def test_a_job_nobody_claims_is_nothing_to_do(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    code, out = _run(tmp_path, "20260101T000000-gone-abcdef")
    assert (code, out["outcome"]) == (0, "already_committed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_help_lists_every_exit_code() -> None:
    r = subprocess.run([sys.executable, "-m", "sealfuse", "run-job", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for code in EXIT_CODES:
        assert f"  {code}  " in r.stdout
