"""Recovery at start: finish or undo what a killed daemon (or a failed disk) left in the spool.

Every staged folder and every work/<id>/ ends in exactly one of: published (outbox/ or failed/),
re-queued, or failed. A job whose recovery itself fails is quarantined with `recovery_failed`, so
the same error can never stop the next start again.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from sealfuse.appliance.fsutil import rmtree_quiet, write_json_atomic
from sealfuse.appliance.watch import errors, spool
from sealfuse.appliance.watch.spool import STAGING, TOKEN, Job


@dataclass
class Recovered:
    """What recovery decided for one job: `done`, `failed` (already committed), `requeue`
    (`job` runs again) or `fail` (`job` is to be failed with `error`)."""

    job_id: str
    outcome: str
    job: Job | None = None
    error: errors.JobError | None = None
    reason: str | None = None


def recover(root: Path, presets: dict[str, object], *, retain_inputs: bool) -> list[Recovered]:
    """Walk failed/ and outbox/ staging folders, then work/; return the per-job decisions."""
    out: list[Recovered] = []
    committing = _tokens(root)
    for staging in sorted((root / "failed").glob(".*.tmp")):
        match = STAGING.match(staging.name)
        if match is None:
            rmtree_quiet(staging)
            continue
        job_id, tag = match["job"], match["tag"]
        if tag is not None and committing.get(job_id) != ("failed", tag):
            rmtree_quiet(staging)  # staged, but the claim was never taken by this commit
            continue
        try:
            doc = spool.finish_quarantine(root, staging)
        except (OSError, ValueError) as exc:
            out.append(_broken(root, job_id, exc))
            continue
        if doc is not None and tag is None:
            out.append(Recovered(job_id, "failed", reason=doc.get("reason")))
    for staging in sorted((root / "outbox").glob(".*.tmp")):
        match = STAGING.match(staging.name)
        if match is not None and match["tag"] is not None and committing.get(match["job"]) == ("done", match["tag"]):
            try:
                os.rename(staging, root / "outbox" / match["job"])
            except OSError:
                rmtree_quiet(staging)
            continue
        rmtree_quiet(staging)
    for wdir in sorted((root / "work").iterdir()):
        try:
            decision = _recover_work(root, wdir, presets, retain_inputs=retain_inputs)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            decision = _broken(root, wdir.name, exc)
        if decision is not None:
            out.append(decision)
    return out


def _tokens(root: Path) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for wdir in (root / "work").iterdir():
        try:
            names = os.listdir(wdir)
        except OSError:
            continue
        for name in names:
            match = TOKEN.match(name)
            if match:
                found[wdir.name] = (match["outcome"], match["tag"])
    return found


def _recover_work(root: Path, wdir: Path, presets: dict[str, object], *,
                  retain_inputs: bool) -> Recovered | None:
    job_id = wdir.name
    names = os.listdir(wdir)
    token = next((TOKEN.match(n) for n in names if TOKEN.match(n)), None)
    if token is not None:
        outcome = token["outcome"]
        if (root / ("outbox" if outcome == "done" else "failed") / job_id).is_dir():
            if outcome == "done":
                spool.finish_done(root, job_id, retain_inputs=retain_inputs)
            else:
                rmtree_quiet(wdir)
            return Recovered(job_id, outcome)
        os.rename(wdir / token.string, wdir / "claim.json")  # the commit never published: run again
    if not (wdir / "claim.json").is_file():
        rmtree_quiet(wdir)  # killed between mkdir and the claim record: nothing was moved
        return None
    record = json.loads((wdir / "claim.json").read_text())
    if (root / "outbox" / job_id).is_dir():  # committed by an older layout
        spool.finish_done(root, job_id, retain_inputs=retain_inputs)
        return Recovered(job_id, "done")
    if (root / "failed" / job_id).is_dir():
        rmtree_quiet(wdir)
        return Recovered(job_id, "failed")
    missing = spool.complete_claim(root, record, wdir)
    job = spool.job_from_claim(record, wdir, presets)
    if missing:
        return Recovered(job_id, "fail", job, errors.ClaimIncompleteError(
            "claimed files vanished during a restart", missing=missing))
    return Recovered(job_id, "requeue", job)


def _broken(root: Path, job_id: str, exc: Exception) -> Recovered:
    """Recovery of this job failed: move whatever is left aside into failed/<id>/ (renames only)."""
    err = errors.RecoveryFailedError(f"the job could not be recovered after a restart: {exc}",
                                     error=str(exc))
    final = root / "failed" / job_id
    for leftover in (root / "work" / job_id, *(root / "failed").glob(f".{job_id}.*tmp"),
                     *(root / "outbox").glob(f".{job_id}.*tmp")):
        if not os.path.lexists(leftover):
            continue
        if not os.path.lexists(final):
            try:
                os.rename(leftover, final)
                continue
            except OSError:
                pass
        rmtree_quiet(leftover)
    if final.is_dir() and not (final / "error.json").exists():
        doc = spool.error_document(job_id, err, [], seen=None, claimed=None, digests={}, client_ref=None)
        with contextlib.suppress(OSError):
            write_json_atomic(final / "error.json", doc, mode=0o640)
    return Recovered(job_id, "broken", error=err, reason=err.reason)
