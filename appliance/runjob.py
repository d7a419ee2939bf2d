"""`sealfuse run-job`: run one claimed watch-folder job on a compute node (the Slurm backend's
batch step) and commit its result to the shared spool at most once.

The daemon claims the job into SPOOL/work/<id>/ and writes SPOOL/slurm/<id>/request.json; this
command loads the engine, swaps, and publishes outbox/<id>/ through the spool's atomic commit. A
second run of the same job (a requeue, a duplicate) finds the claim taken and stops. An engine
failure is written to SPOOL/slurm/<id>/error-<slurm job id>.json for the daemon to quarantine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from sealfuse.appliance.fsutil import read_json_file
from sealfuse.appliance.watch.errors import JobError
from sealfuse.verifier.errors import exit_code_help

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
REQUEST_VERSION = 1
PROGRESS_INTERVAL = 0.5

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_COMMIT = 3
EXIT_ENGINE = 5
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "committed to outbox/, or nothing to do (another run already committed the job)",
    EXIT_JOB_FAILED: "the engine refused the job; the error is in SPOOL/slurm/<id>/error-<slurm id>.json",
    EXIT_USAGE: "bad arguments, or the job's request or claim is unusable (nothing changed)",
    EXIT_COMMIT: "the result could not be written to the spool (nothing half-written)",
    EXIT_ENGINE: "the engine cannot load (models missing or not matching their pins)",
}


class RunJobError(JobError):
    """`sealfuse run-job` cannot run the job it was given."""

    exit_code = EXIT_USAGE
    reason = "bad_request"


class RequestError(RunJobError):
    """The request file is missing, unreadable, not the expected shape, or points outside the job."""

    reason = "bad_request"


def _epilog() -> str:
    return exit_code_help(EXIT_CODES)


def job_dir(spool: Path, job_id: str) -> Path:
    """SPOOL/slurm/<job id>/: the request, the Slurm logs and error documents of one job."""
    return spool / "slurm" / job_id


def _harden() -> None:
    """No core files (a core would hold frames and embeddings), private files, not dumpable."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.umask(0o077)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE=0


def load_request(spool: Path, job_id: str) -> dict[str, Any]:
    """Read and check SPOOL/slurm/<id>/request.json; inputs must lie in the job's claim folder
    (or be the preset faces named in it)."""
    path = job_dir(spool, job_id) / "request.json"
    try:
        doc = read_json_file(path, 1 << 20)  # a regular file, bounded, strict JSON
    except (OSError, ValueError) as exc:
        raise RequestError(f"cannot read the job request {path}: {exc}", path=str(path)) from None
    if not isinstance(doc, dict) or doc.get("version") != REQUEST_VERSION or doc.get("job_id") != job_id:
        raise RequestError(f"{path} is not a version {REQUEST_VERSION} request for job {job_id}",
                           path=str(path))
    for key in ("source", "target"):
        if not isinstance(doc.get(key), str):
            raise RequestError(f"{path}: {key!r} must be a path", path=str(path), key=key)
    inbox = (spool / "work" / job_id / "in").resolve()
    target = Path(doc["target"]).resolve()
    if target.parent != inbox:
        raise RequestError(f"{path}: the target {target} is not inside work/{job_id}/in/",
                           path=str(path), target=str(target))
    for key in ("options", "engine"):
        if not isinstance(doc.get(key, {}), dict):
            raise RequestError(f"{path}: {key!r} must be an object", path=str(path), key=key)
    return doc


def _digests(claim: dict[str, Any], wdir: Path, request: dict[str, Any]) -> dict[str, str]:
    from sealfuse.appliance.fsutil import sha256_file

    out = {}
    for role, name in claim.get("roles", {}).items():
        p = wdir / "in" / name
        if p.is_file():
            out[role] = sha256_file(p)[0]
    for role in ("source", "reference"):
        if role not in out and request.get(role):
            with contextlib.suppress(OSError):
                out[role] = sha256_file(Path(request[role]))[0]
    return out


def run(spool: Path, job_id: str, *, tmp_dir: Path | None = None) -> dict[str, Any]:
    """Run the job and commit it; the outcome as JSON-ready data (`outcome`: committed,
    already_committed, failed). Raises RunJobError for an unusable request."""
    from sealfuse.appliance.fsutil import rmtree_quiet, write_json_atomic
    from sealfuse.appliance.watch import spool as spoolmod
    from sealfuse.appliance.watch.inbox import utcnow
    from sealfuse.appliance.watch.worker import to_options_kwargs

    slurm_id = os.environ.get("SLURM_JOB_ID")
    node = os.environ.get("SLURMD_NODENAME") or os.uname().nodename
    placement = {"backend": "slurm", "slurm_job_id": slurm_id, "node": node}
    wdir = spool / "work" / job_id
    if not (wdir / "claim.json").is_file():
        return {"ok": True, "outcome": "already_committed", "job_id": job_id, **placement}
    request = load_request(spool, job_id)
    try:
        claim = read_json_file(wdir / "claim.json", 1 << 20)
    except FileNotFoundError:
        return {"ok": True, "outcome": "already_committed", "job_id": job_id, **placement}
    except (OSError, ValueError) as exc:
        raise RequestError(f"cannot read the claim of {job_id}: {exc}") from None
    jdir = job_dir(spool, job_id)
    tdir = Path(tempfile.mkdtemp(prefix=f"sealfuse-run-{job_id}-", dir=tmp_dir))
    started = time.monotonic()
    last_progress = 0.0

    def progress(info: dict[str, Any]) -> None:
        nonlocal last_progress
        now = time.monotonic()
        if now - last_progress >= PROGRESS_INTERVAL:
            last_progress = now
            with contextlib.suppress(OSError):
                write_json_atomic(jdir / "progress.json", {"slurm_job_id": slurm_id, **info}, mode=0o640)

    try:
        from sealfuse.engine import Engine, EngineError, ProvenanceConfig, SwapOptions

        try:
            engine = Engine(SwapOptions(**to_options_kwargs(request.get("engine", {}))),
                            provenance=ProvenanceConfig.from_dict(request.get("provenance")))
        except EngineError as exc:
            doc = {**exc.to_dict(), "stage": "load"}
            _write_error(jdir, slurm_id, doc)
            return {"ok": False, "outcome": "engine_unavailable", "job_id": job_id, "error": doc, **placement}
        target = Path(request["target"])
        out = tdir / "out" / target.name
        out.parent.mkdir(mode=0o700)
        try:
            opts = engine.options.with_(**to_options_kwargs(request.get("options", {})))
            report = engine.swap_file(Path(request["source"]), target, out, opts, progress=progress,
                                      job_id=job_id)
        except EngineError as exc:
            if not (wdir / "claim.json").is_file():
                # Another run committed the job meanwhile (and removed its inputs): not a failure.
                return {"ok": True, "outcome": "already_committed", "job_id": job_id, **placement}
            doc = exc.to_dict()
            _write_error(jdir, slurm_id, doc)
            return {"ok": False, "outcome": "failed", "job_id": job_id, "error": doc, **placement}
        seconds = time.monotonic() - started
        result = {
            "job_id": job_id, "label": claim.get("label"), "client_ref": claim.get("client_ref"),
            "kind": claim.get("kind"), "preset": claim.get("preset"),
            "drop": [f["from"] for f in claim.get("files", [])],
            "inputs": {r: {"sha256": d} for r, d in _digests(claim, wdir, request).items()},
            "output": {"name": target.name}, "options": claim.get("options", {}),
            "seen": claim.get("seen"), "claimed": claim.get("claimed"), "finished": utcnow(),
            "seconds": round(seconds, 3), "dispatch": placement,
            "report": {k: v for k, v in report.items() if k not in ("source", "target", "output")},
        }
        try:
            done = spoolmod.commit_done(spool, job_id, out, result,
                                        retain_inputs=bool(request.get("retain_inputs")), scratch=tdir)
        except JobError as exc:  # OutputMissingError, CommitFailedError
            doc = exc.to_dict()
            _write_error(jdir, slurm_id, doc)
            return {"ok": False, "outcome": "commit_failed", "job_id": job_id, "error": doc, **placement}
        if done is None:
            return {"ok": True, "outcome": "already_committed", "job_id": job_id, **placement}
        return {"ok": True, "outcome": "committed", "job_id": job_id, "seconds": round(seconds, 3),
                "output": done["output"], **placement}
    finally:
        rmtree_quiet(tdir)


def _write_error(jdir: Path, slurm_id: str | None, doc: dict[str, Any]) -> None:
    from sealfuse.appliance.fsutil import write_json_atomic

    with contextlib.suppress(OSError):
        write_json_atomic(jdir / f"error-{slurm_id or 'local'}.json", doc, mode=0o640)


OUTCOME_EXIT = {"committed": EXIT_OK, "already_committed": EXIT_OK, "failed": EXIT_JOB_FAILED,
                "commit_failed": EXIT_COMMIT, "engine_unavailable": EXIT_ENGINE}


@click.command(name="run-job", epilog=_epilog())
@click.option("--spool", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The shared spool (the same path as on the head node).")
@click.option("--job-id", required=True, help="The claimed job to run (work/<job-id>/).")
@click.option("--tmp-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Node-local scratch for the partial output [default: $TMPDIR, else /tmp].")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
def run_job(spool: Path, job_id: str, tmp_dir: Path | None, as_json: bool) -> None:
    """Run one claimed watch-folder job and commit it to SPOOL/outbox/ at most once.

    Started by the watch service's Slurm backend as the batch step of each job (docs/cluster.md);
    it reads SPOOL/slurm/<job-id>/request.json and the claim in SPOOL/work/<job-id>/. A run that
    finds the job already committed (a requeued or duplicated Slurm job) exits 0 and changes nothing.
    """
    if not JOB_ID.match(job_id):
        _fail(RequestError(f"--job-id {job_id!r} is not a job id", job_id=job_id), as_json)
    _harden()
    try:
        outcome = run(spool.absolute(), job_id, tmp_dir=tmp_dir)
    except RunJobError as exc:
        _fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(outcome, sort_keys=True))
    else:
        click.echo(f"{job_id}: {outcome['outcome']}"
                   + (f" ({outcome['error']['reason']}: {outcome['error']['message']})" if "error" in outcome else ""))
    sys.exit(OUTCOME_EXIT[outcome["outcome"]])


def _fail(exc: JobError, as_json: bool) -> None:
    doc = {**exc.to_dict(), "exit_code": exc.exit_code}
    if as_json:
        click.echo(json.dumps(doc, sort_keys=True))
    else:
        click.echo(f"sealfuse run-job: {exc.message}", err=True)
    sys.exit(exc.exit_code)
