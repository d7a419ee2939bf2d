"""The spool's crash-safe moves: claim, commit (done or failed, at most once), quarantine, requeue.

Layout: inbox/ (drops), work/<id>/ (claim.json + in/), outbox/<id>/, failed/<id>/, status/.
A claimed job is committed by `commit_done` or `commit_failed`, which may run in another process
(`sealfuse run-job` on a compute node): each stages its folder under a dot name, then takes the
job by renaming work/<id>/claim.json to commit-<outcome>-<tag>.json (the first rename wins; a
second commit finds no claim.json and stops), then renames the staged folder into place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sealfuse.appliance.fsutil import (
    copy_durable,
    fsync_dir,
    lexists_under,
    open_file_at,
    parent_fd,
    remove_tree_at,
    rename_under,
    rmtree_quiet,
    safe_name,
    sha256_file,
    write_atomic_at,
    write_json_atomic,
)
from sealfuse.appliance.watch import errors
from sealfuse.appliance.watch.inbox import MANIFEST_SUFFIX, utcnow

_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
STAGING = re.compile(r"^\.(?P<job>[A-Za-z0-9_-]+?)(?:\.(?P<tag>[0-9a-f]{8}))?\.tmp$")
TOKEN = re.compile(r"^commit-(?P<outcome>done|failed)-(?P<tag>[0-9a-f]{8})\.json$")


@dataclass
class Paths:
    """Where the daemon keeps things: the spool, its state, audit log, metrics and temporaries."""

    spool: Path
    state: Path
    audit: Path
    metrics: Path
    tmp_root: Path

    @property
    def inbox(self) -> Path:
        """Producers' drops."""
        return self.spool / "inbox"

    @property
    def work(self) -> Path:
        """Claimed jobs."""
        return self.spool / "work"

    @property
    def outbox(self) -> Path:
        """Results."""
        return self.spool / "outbox"

    @property
    def failed(self) -> Path:
        """Quarantine."""
        return self.spool / "failed"

    @property
    def status(self) -> Path:
        """Per-job status files for the console."""
        return self.spool / "status"

    @property
    def jobs_tmp(self) -> Path:
        """Per-job temporaries of this spool (0700), under the tmp root (tmpfs)."""
        tag = hashlib.sha256(str(self.spool.resolve()).encode()).hexdigest()[:12]
        return self.tmp_root / f"sealfuse-watch-{tag}"


@dataclass
class Job:
    """A claimed job: its claim record, work dir, inputs by role and, once hashed, digests and key."""

    job_id: str
    kind: str  # "manifest" | "preset"
    wdir: Path
    claim: dict[str, Any]
    inputs: dict[str, Path]  # role -> path inside work/<id>/in (preset source: config path)
    options: dict[str, Any]
    key: str = ""
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def client_ref(self) -> str | None:
        """The producer's reference from the manifest, or None."""
        return self.claim.get("client_ref")


def new_job_id(hint: str) -> str:
    """`<UTC time>-<sanitised hint>-<6 hex>`: sortable, unique, only [A-Za-z0-9_-]."""
    stem = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in hint)[:40] or "job"
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{stem}-{secrets.token_hex(3)}"


def job_from_claim(claim: dict[str, Any], wdir: Path, presets: dict[str, Any]) -> Job:
    """Rebuild a Job from its claim record (the preset's source face comes from the config)."""
    inputs = {role: wdir / "in" / name for role, name in claim["roles"].items()}
    if claim.get("preset"):
        preset = presets.get(claim["preset"])
        if preset is not None:
            inputs.setdefault("source", preset.source)
            if preset.reference is not None:
                inputs.setdefault("reference", preset.reference)
    return Job(claim["job_id"], claim["kind"], wdir, claim, inputs, dict(claim.get("options", {})))


def _tag() -> str:
    return secrets.token_hex(4)


def _take(wdir: Path, outcome: str, tag: str) -> bool:
    """The commit point: rename claim.json to the outcome's token. False: someone else committed."""
    try:
        os.rename(wdir / "claim.json", wdir / f"commit-{outcome}-{tag}.json")
    except FileNotFoundError:
        return False
    return True


def _give_back(wdir: Path, outcome: str, tag: str) -> None:
    with contextlib.suppress(OSError):
        os.rename(wdir / f"commit-{outcome}-{tag}.json", wdir / "claim.json")


def _commit_error(what: str, exc: OSError, job_id: str) -> errors.CommitFailedError:
    name = os.strerror(exc.errno) if exc.errno else str(exc)
    code = {28: "ENOSPC", 122: "EDQUOT", 30: "EROFS", 5: "EIO", 18: "EXDEV"}.get(exc.errno or 0)
    return errors.CommitFailedError(f"{what} failed: {name}", job=job_id, errno=code or exc.errno,
                                    error=str(exc))


def commit_done(spool: Path, job_id: str, produced: Path, result: dict[str, Any], *,
                retain_inputs: bool = False, scratch: Path | None = None) -> dict[str, Any] | None:
    """Publish outbox/<job_id>/ (the output and result.json) at most once. `scratch` (the job's
    temp dir holding `produced`) is removed once the output is staged, before it is published.

    Returns the result document (with `output` filled in), or None when the job was already
    committed (by another process). Raises OutputMissingError (the produced file is unusable) or
    CommitFailedError (a write or move failed; nothing is left half-written).
    """
    wdir = spool / "work" / job_id
    outbox = spool / "outbox"
    if not (wdir / "claim.json").is_file():
        return None
    tag = _tag()
    staging = outbox / f".{job_id}.{tag}.tmp"
    name = Path(result["output"]["name"])
    try:
        fd = os.open(produced, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        os.close(fd)
    except OSError as exc:
        raise errors.OutputMissingError(f"the worker reported success but its output is unusable: {exc}",
                                        error=str(exc)) from None
    try:
        staging.mkdir(mode=0o750)
        os.chmod(staging, 0o750)  # the unit's UMask=0077 would leave 0700: producers read results
        copy_durable(produced, staging / name, mode=0o640)
        digest, size = sha256_file(staging / name)
        result = {**result, "output": {"name": str(name), "sha256": digest, "size": size}}
        write_json_atomic(staging / "result.json", result, mode=0o640)
        fsync_dir(staging)
    except OSError as exc:
        rmtree_quiet(staging)
        raise _commit_error("writing the result", exc, job_id) from None
    if scratch is not None:
        rmtree_quiet(scratch)
    if not _take(wdir, "done", tag):
        rmtree_quiet(staging)
        return None
    try:
        os.rename(staging, outbox / job_id)
        fsync_dir(outbox)
    except OSError as exc:
        _give_back(wdir, "done", tag)
        rmtree_quiet(staging)
        raise _commit_error("publishing the result", exc, job_id) from None
    finish_done(spool, job_id, retain_inputs=retain_inputs)
    return result


def finish_done(spool: Path, job_id: str, *, retain_inputs: bool) -> None:
    """After outbox/<id>/ exists: keep the inputs beside it (retain_inputs) or drop them, then
    remove work/<id>/. Failures here never undo the result."""
    wdir = spool / "work" / job_id
    if retain_inputs and (wdir / "in").is_dir():
        dst = spool / "outbox" / job_id / "input"
        with contextlib.suppress(OSError):
            dst.mkdir(exist_ok=True, mode=0o750)
            os.chmod(dst, 0o750)
            for child in (wdir / "in").iterdir():
                os.rename(child, dst / child.name)
            fsync_dir(dst)
    rmtree_quiet(wdir)


def error_document(job_id: str, err: errors.JobError, inputs: list[dict[str, Any]], *, seen: str | None,
                   claimed: str | None, digests: dict[str, str], client_ref: str | None) -> dict[str, Any]:
    """failed/<id>/error.json: the error, where each input came from, timestamps, client_ref."""
    used: set[str] = set()
    for item in inputs:  # unique names inside input/
        base, n = item["name"], 1
        while item["name"] in used:
            n += 1
            item["name"] = f"{n}-{base}"
        used.add(item["name"])
    doc = err.to_dict()
    return {"job_id": job_id, "reason": doc["reason"], "message": doc["message"], "error": doc["error"],
            "exit_code": doc["exit_code"], "evidence": doc["evidence"], "inputs": inputs,
            "digests": digests, "client_ref": client_ref,
            "timestamps": {"seen": seen, "claimed": claimed, "failed": utcnow()}}


def commit_failed(spool: Path, job: Job, err: errors.JobError, *, keep_media: bool = True) -> bool:
    """Quarantine a claimed job into failed/<id>/ (error.json and its inputs) at most once.

    Returns False when the job was already committed. Raises CommitFailedError when even the
    quarantine cannot be written (the claim then stays in work/ for the next start)."""
    wdir = job.wdir
    if not (wdir / "claim.json").is_file():
        return False
    inputs = [{"from": os.path.relpath(wdir / "in" / f["name"], spool), "name": safe_name(f["name"]),
               "drop": f["from"], "discard": not keep_media} for f in job.claim["files"]]
    doc = error_document(job.job_id, err, inputs, seen=job.claim.get("seen"), claimed=job.claim.get("claimed"),
                         digests=job.digests, client_ref=job.client_ref)
    tag = _tag()
    staging = spool / "failed" / f".{job.job_id}.{tag}.tmp"
    try:
        staging.mkdir(mode=0o750)
        os.chmod(staging, 0o750)  # the unit's UMask=0077 would leave 0700: producers read it
        write_json_atomic(staging / "error.json", doc, mode=0o640)  # first: recovery reads it
    except OSError as exc:
        rmtree_quiet(staging)
        raise _commit_error("writing error.json", exc, job.job_id) from None
    if not _take(wdir, "failed", tag):
        rmtree_quiet(staging)
        return False
    try:
        finish_quarantine(spool, staging)
    except OSError as exc:
        raise _commit_error("moving the job into failed/", exc, job.job_id) from None
    rmtree_quiet(wdir)
    return True


def quarantine_drop(spool: Path, paths: list[Path], err: errors.JobError, *, seen: str,
                    client_ref: str | None = None) -> str:
    """Move a refused drop (never opened beyond lstat/header reads) into failed/<new id>/."""
    job_id = new_job_id(safe_name(paths[0].name).split(".")[0])
    inputs = [{"from": _rel(spool, p), "name": safe_name(p.name), "drop": _rel(spool, p), "discard": False}
              for p in paths]
    doc = error_document(job_id, err, inputs, seen=seen, claimed=None, digests={}, client_ref=client_ref)
    staging = spool / "failed" / f".{job_id}.tmp"
    try:
        staging.mkdir(mode=0o750, exist_ok=True)
        os.chmod(staging, 0o750)
        write_json_atomic(staging / "error.json", doc, mode=0o640)
        finish_quarantine(spool, staging)
    except OSError as exc:
        rmtree_quiet(staging)
        raise _commit_error("quarantining the drop", exc, job_id) from None
    return job_id


def finish_quarantine(spool: Path, staging: Path) -> dict[str, Any] | None:
    """Move the inputs named in staging/error.json into staging/input/ and rename the folder to
    failed/<id>/. Idempotent: a crash at any point is finished by calling it again. Returns the
    error document, or None when error.json was never written (the staging dir is removed)."""
    match = STAGING.match(staging.name)
    assert match, staging
    err_file = staging / "error.json"
    if not err_file.is_file():
        rmtree_quiet(staging)  # killed before error.json was written: nothing was moved in yet
        return None
    doc = json.loads(err_file.read_text())
    for item in doc.get("inputs", []):
        if not lexists_under(spool, item["from"]):
            continue
        if item.get("discard"):
            rmtree_quiet(spool / item["from"])  # only claimed files (work/<id>/in/...) are discarded
            continue
        (staging / "input").mkdir(mode=0o750, exist_ok=True)
        os.chmod(staging / "input", 0o750)
        try:
            rename_under(spool, item["from"], _rel(spool, staging / "input" / item["name"]))
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            if exc.errno in _DISK_ERRNOS:
                raise
            # A mount point, a cross-device entry or a folder that became a link: left where it is.
    fsync_dir(staging)
    final = spool / "failed" / match["job"]
    if final.exists():
        rmtree_quiet(staging)
    else:
        os.rename(staging, final)
    fsync_dir(spool / "failed")
    return doc


RECORDS = {"outbox": "result.json", "failed": "error.json"}


def delete_media(spool: Path, job_id: str, *, requested_by: str | None, request: str) -> dict[str, Any] | None:
    """Delete a finished job's media: every entry of outbox/<id>/ or failed/<id>/ but its record
    (result.json / error.json), which gains `media_deleted` {"at", "by", "request", "removed"}.
    Everything goes through directory fds: a symlink (at any depth) is unlinked, never followed.
    Returns the record's `media_deleted`, or None when the job has no folder or record."""
    for folder, record in RECORDS.items():
        try:
            with parent_fd(spool, f"{folder}/{job_id}/{record}") as (fd, name):
                rfd = open_file_at(fd, name, os.O_RDONLY, where=f"{folder}/{job_id}")
                with os.fdopen(rfd, "rb") as handle:
                    doc = json.loads(handle.read(1 << 20))
                removed = []
                for entry in sorted(os.listdir(fd)):
                    if entry == record:
                        continue
                    remove_tree_at(fd, entry)
                    removed.append(entry)
                os.fsync(fd)
                info = {"at": utcnow(), "by": requested_by, "request": request, "removed": removed}
                doc["media_deleted"] = info
                write_atomic_at(fd, record, (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode())
                return info
        except (FileNotFoundError, NotADirectoryError):
            continue
    return None


def claim(spool: Path, request_files: list[tuple[str, Path]], *, kind: str, preset: str | None,
          options: dict[str, Any], label: str | None, client_ref: str | None, seen: str) -> dict[str, Any]:
    """Claim a drop: work/<id>/claim.json first (fsynced), then the files renamed into work/<id>/in/
    (media first, manifest last). A failed move (FileNotFoundError: the producer took a file back)
    is undone and re-raised."""
    main = request_files[0][1]
    stem = main.name[: -len(MANIFEST_SUFFIX)] if kind == "manifest" else main.stem
    job_id = new_job_id(stem)
    wdir = spool / "work" / job_id
    names: dict[Path, str] = {}
    for _role, path in request_files:
        names.setdefault(path, path.name)
    try:
        (wdir / "in").mkdir(parents=True, mode=0o700)
    except OSError:
        rmtree_quiet(wdir)
        raise
    record = {
        "job_id": job_id, "kind": kind, "preset": preset, "label": label, "options": options,
        "client_ref": client_ref, "roles": {role: names[path] for role, path in request_files},
        "files": [{"name": n, "from": _rel(spool, p)} for p, n in names.items()],
        "seen": seen, "claimed": utcnow(),
    }
    try:
        write_json_atomic(wdir / "claim.json", record, mode=0o600)
    except OSError:
        rmtree_quiet(wdir)
        raise
    moved: list[tuple[str, str]] = []
    try:
        for path, name in sorted(names.items(), key=lambda kv: kv[0] == main):
            src, dst = _rel(spool, path), _rel(spool, wdir / "in" / name)
            rename_under(spool, src, dst)
            moved.append((src, dst))
    except OSError:  # the producer took a file back (or its folder became a link): undo
        for orig, now in reversed(moved):
            with contextlib.suppress(OSError):
                rename_under(spool, now, orig)
        rmtree_quiet(wdir)
        raise
    fsync_dir(wdir / "in")
    return record


def complete_claim(spool: Path, record: dict[str, Any], wdir: Path) -> list[str]:
    """After a restart: move files a killed claim left in the inbox; returns the ones gone."""
    missing = []
    for item in record["files"]:
        dst = wdir / "in" / item["name"]
        if not os.path.lexists(dst):
            if lexists_under(spool, item["from"]):
                rename_under(spool, item["from"], _rel(spool, dst))
            else:
                missing.append(item["from"])
    return missing


def requeue(spool: Path, job: Job) -> bool:
    """Hand a claimed job back to the inbox (media first, manifest last) and remove work/<id>/.
    False (left in work/ for the next start) when a file of the same name is back in the inbox."""
    files = sorted(job.claim["files"], key=lambda f: f["from"].endswith(MANIFEST_SUFFIX))
    try:
        for item in files:
            src = job.wdir / "in" / item["name"]
            if lexists_under(spool, item["from"]):
                return False
            if os.path.lexists(src):
                rename_under(spool, _rel(spool, src), item["from"])
    except OSError:  # e.g. its preset folder is a link now: the next start recovers it
        return False
    rmtree_quiet(job.wdir)
    return True


def _rel(spool: Path, path: Path) -> str:
    return os.fsdecode(os.path.relpath(path, spool))
