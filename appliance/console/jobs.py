"""The console as a producer of the spool: uploads streamed into `inbox/` under dot names, the manifest
renamed in last, and each job followed through the daemon's status files (`status/<job-id>.json`).

The console keeps one record per job it submitted (`STATE/jobs/<ref>.json`: who, when, which
files); `ref` is the manifest's `client_ref`, which the daemon copies into its status file,
`result.json` and `error.json`. Without status files (an older daemon) a job is found in
`outbox/` or `failed/` by the drop name of its manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sealfuse.appliance.console.errors import (
    BadMediaError,
    BadRequestError,
    BadUploadNameError,
    NotFoundError,
    SpoolError,
    UnsupportedTypeError,
    UploadTooLargeError,
)
from sealfuse.appliance.fsutil import bad_name, fsync_dir, write_json_atomic
from sealfuse.engine import IMAGE_EXTS, VIDEO_EXTS

MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
               ".mp4": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
               ".webm": "video/webm"}
ROLES = ("source", "target", "reference")
MANIFEST_SUFFIX = ".job.json"
CANCEL_SUFFIX = ".cancel.json"  # a removal request to the watch daemon (docs/watch-folder.md)
ACTIVE_STATES = ("queued", "running")  # a delete of such a job asks the daemon to remove it
REF_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ABS_PATH = re.compile(r"(?<![\w.])(/[^\s:'\"]+)")
FILE_MODE = 0o640  # the daemon reads drops through the producers' group
FINAL_STATES = ("done", "failed", "removed")

# The failure reasons of docs/watch-folder.md in words a person understands.
REASON_TEXT: dict[str, str] = {
    "no_face_in_target": "No face was found in the target.",
    "no_face_in_source": "No face was found in the source photo.",
    "no_reference_match": "No face in the target looks like the reference face.",
    "truncated": "A file is cut short or corrupt.",
    "not_media": "A file is not the image or video its name says.",
    "too_large": "The image or video has more pixels or frames than this appliance allows.",
    "input_too_large": "A file is larger than this appliance accepts.",
    "unreadable": "A file could not be read.",
    "empty_file": "A file is empty.",
    "unsupported_extension": "A file type is not supported.",
    "bad_options": "The chosen options do not work together.",
    "duplicate": "The same job (same files and options) was submitted before.",
    "removed": "The job was removed on request before it finished.",
    "timeout": "The job took longer than the appliance allows.",
    "memory_limit": "The job needed more memory than the appliance allows.",
    "worker_crashed": "The face-swap worker crashed on this job.",
    "attempts_exhausted": "The job was interrupted too often by restarts.",
    "missing_media": "The job's files did not all arrive.",
    "schema_violation": "The job description was not accepted.",
    "model_missing": "A model this job needs is not installed.",
    "model_digest_mismatch": "A model file does not match its signed digest.",
    "internal_error": "An internal error stopped the job.",
}


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def reason_text(reason: str | None) -> str | None:
    if reason is None:
        return None
    return REASON_TEXT.get(reason, reason.replace("_", " ").capitalize() + ".")


# -- records ----------------------------------------------------------------------------------------
@dataclass
class JobRecord:
    ref: str
    user: str
    created: str
    label: str | None
    files: dict[str, dict[str, Any]]  # role -> {"name": original (display), "drop": inbox name, "size"}
    options: dict[str, Any]
    manifest: str
    job_id: str | None = None
    media_deleted: str | None = None
    media_delete_requested: str | None = None  # asked the daemon to delete it (delete_media request)
    notified: bool = False
    ended: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Spool:
    """The console's view of the watch folder and its own job records."""

    def __init__(self, spool: Path, state_dir: Path, *, max_upload_mb: int, max_pixels: int) -> None:
        self.root = Path(spool)
        self.inbox = self.root / "inbox"
        self.status = self.root / "status"
        self.outbox = self.root / "outbox"
        self.failed = self.root / "failed"
        self.records_dir = Path(state_dir) / "jobs"
        self.max_bytes = max_upload_mb * 1024 * 1024
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        self._drop_index: dict[str, str] = {}  # "inbox/<manifest>" -> job id (found in outbox/failed)
        self._seen_dirs: set[str] = set()

    def setup(self) -> None:
        try:
            self.records_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise SpoolError(f"cannot create {self.records_dir}: {exc}", path=str(self.records_dir)) from exc
        if not self.inbox.is_dir():
            raise SpoolError(f"the spool's inbox {self.inbox} does not exist (is the watch service "
                             "installed?)", path=str(self.inbox))

    # -- records ------------------------------------------------------------------------------
    def new_ref(self) -> str:
        return f"web-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"

    def save(self, rec: JobRecord) -> None:
        write_json_atomic(self.records_dir / f"{rec.ref}.json", rec.to_dict(), mode=0o600)

    def load(self, ref: str) -> JobRecord:
        if not REF_RE.match(ref) or ref.startswith("."):
            raise NotFoundError(f"no job {ref!r}", ref=ref)
        try:
            doc = json.loads((self.records_dir / f"{ref}.json").read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no job {ref!r}", ref=ref) from None
        return JobRecord(**doc)

    def records(self) -> list[JobRecord]:
        out = []
        for p in self.records_dir.glob("*.json"):
            if p.name.startswith("."):
                continue
            with contextlib.suppress(OSError, ValueError, TypeError):
                out.append(JobRecord(**json.loads(p.read_text())))
        out.sort(key=lambda r: r.created, reverse=True)
        return out

    # -- uploads ------------------------------------------------------------------------------
    def check_upload_name(self, role: str, filename: str) -> str:
        """The extension of an uploaded file; the name itself is never used as a path."""
        if role not in ROLES:
            raise BadRequestError(f"unknown file field {role!r} (use source, target, reference)", field=role)
        if (not filename or "/" in filename or "\\" in filename or filename in (".", "..")
                or ".." in filename or "\0" in filename or bad_name(filename)):
            raise BadUploadNameError(f"the {role} file name {filename!r} is not a plain file name",
                                     role=role, name=ascii(filename))
        ext = os.path.splitext(filename)[1].lower()
        allowed = IMAGE_EXTS + (VIDEO_EXTS if role == "target" else ())
        if ext not in allowed:
            raise UnsupportedTypeError(f"the {role} must be {'an image or video' if role == 'target' else 'an image'}"
                                       f" ({', '.join(allowed)}), not {ext or 'a file without extension'}",
                                       role=role, extension=ext)
        return ext

    def open_upload(self, ref: str, role: str, ext: str) -> UploadSink:
        return UploadSink(self.inbox / f".{ref}-{role}{ext}", self.max_bytes)

    def check_media(self, path: Path, role: str) -> None:
        """The engine's own content check: header matches the extension, pixel/frame limits,
        image data complete (decoded in memory, never written), first video frame decodable."""
        from sealfuse.engine import EngineError

        try:
            if path.suffix.lower() in VIDEO_EXTS:
                from sealfuse.engine import probe_video

                probe_video(path, max_pixels=self.max_pixels)
            else:
                from sealfuse.engine import read_image

                read_image(path, max_pixels=self.max_pixels)
        except EngineError as exc:
            raise BadMediaError(f"the {role} file: {str(exc).replace(str(path), path.name)}",
                                role=role, engine_reason=exc.reason) from None

    def commit(self, rec: JobRecord, staged: dict[str, Path]) -> None:
        """Rename the staged media into place, then the manifest (atomic rename, last)."""
        from sealfuse.appliance.watch.config import MANIFEST_SCHEMA

        manifest: dict[str, Any] = {"version": 1, "options": rec.options}
        for role, tmp in staged.items():
            final = tmp.with_name(tmp.name[1:])
            os.rename(tmp, final)
            manifest[role] = final.name
            rec.files[role]["drop"] = final.name
        if rec.label:
            manifest["label"] = rec.label
        if "client_ref" in MANIFEST_SCHEMA.get("properties", {}):
            manifest["client_ref"] = rec.ref
        body = json.dumps(manifest, sort_keys=True).encode()
        tmp = self.inbox / f".{rec.manifest}.partial"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        try:
            os.write(fd, body)
            os.fchmod(fd, FILE_MODE)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.save(rec)  # the record first: a job the daemon knows is always one the console knows
        os.rename(tmp, self.inbox / rec.manifest)
        fsync_dir(self.inbox)

    def discard(self, staged: dict[str, Path]) -> None:
        for p in staged.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    # -- following ----------------------------------------------------------------------------
    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                doc = json.loads(f.read(1 << 20))
            return doc if isinstance(doc, dict) else None
        except (OSError, ValueError):
            return None

    def _find_job_id(self, rec: JobRecord) -> str | None:
        """The daemon's job id for a console job: by client_ref in status/, else by drop name."""
        if self.status.is_dir():
            for p in self.status.glob("*.json"):
                if p.name.startswith("."):
                    continue
                doc = self._read_json(p)
                if doc and doc.get("client_ref") == rec.ref and doc.get("job_id"):
                    return str(doc["job_id"])
        drop = f"inbox/{rec.manifest}"
        with self._lock:
            if drop in self._drop_index:
                return self._drop_index[drop]
            for base, kind in ((self.outbox, "result.json"), (self.failed, "error.json")):
                try:
                    names = os.listdir(base)
                except OSError:
                    continue
                for name in names:
                    key = f"{base.name}/{name}"
                    if name.startswith(".") or key in self._seen_dirs:
                        continue
                    doc = self._read_json(base / name / kind)
                    if doc is None:
                        continue
                    self._seen_dirs.add(key)
                    drops = doc.get("drop") if kind == "result.json" else [
                        i.get("drop") for i in doc.get("inputs", []) if isinstance(i, dict)]
                    for d in drops or []:
                        if isinstance(d, str) and d.endswith(MANIFEST_SUFFIX):
                            self._drop_index[d] = str(doc.get("job_id", name))
            return self._drop_index.get(drop)

    def view(self, rec: JobRecord) -> dict[str, Any]:
        """State, queue position, progress, failure reason and output of a console job."""
        v: dict[str, Any] = {"ref": rec.ref, "job_id": rec.job_id, "user": rec.user, "created": rec.created,
                             "label": rec.label, "options": rec.options,
                             "files": {r: {"name": f["name"], "size": f.get("size")} for r, f in rec.files.items()},
                             "state": "submitted", "queue_position": None,
                             "progress": {"done": 0, "total": None, "fraction": None},
                             "reason": None, "message": None, "reason_text": None, "output": None,
                             "output_kind": None, "media_deleted": rec.media_deleted, "updated": None,
                             "dispatch": None}
        if rec.job_id is None:
            jid = self._find_job_id(rec)
            if jid:
                rec.job_id = jid
                v["job_id"] = jid
                with contextlib.suppress(OSError):
                    self.save(rec)
        jid = rec.job_id
        status = self._read_json(self.status / f"{jid}.json") if jid else None
        result = self._read_json(self.outbox / jid / "result.json") if jid else None
        error = self._read_json(self.failed / jid / "error.json") if jid and result is None else None
        if status:
            for key in ("state", "queue_position", "reason", "message", "updated", "dispatch"):
                if key in status:
                    v[key] = status[key]
            if isinstance(status.get("progress"), dict):
                v["progress"] = status["progress"]
        if result is not None:
            out = result.get("output") or {}
            v.update(state="done", output=out.get("name"), output_sha256=out.get("sha256"),
                     output_size=out.get("size"), finished=result.get("finished"))
            v["progress"] = {**v["progress"], "fraction": 1.0}
        elif error is not None:
            v.update(state="removed" if error.get("reason") == "removed" else "failed",
                     reason=error.get("reason"), message=error.get("message"),
                     finished=(error.get("timestamps") or {}).get("failed"))
        elif not status and jid is None:
            v["state"] = "submitted" if (self.inbox / rec.manifest).exists() else "queued"
        deleted = next((d.get("media_deleted") for d in (status, result, error)
                        if d and isinstance(d.get("media_deleted"), dict)), None)
        if deleted and not rec.media_deleted:  # the daemon deleted the media on request
            rec.media_deleted = str(deleted.get("at") or utcnow())
            v["media_deleted"] = rec.media_deleted
            with contextlib.suppress(OSError):
                self.save(rec)
        v["media_delete_requested"] = rec.media_delete_requested if not rec.media_deleted else None
        if v.get("output"):
            ext = os.path.splitext(v["output"])[1].lower()
            v["output_kind"] = "video" if ext in VIDEO_EXTS else "image"
        if rec.media_deleted and v["state"] == "done":
            v["output_kind"] = None
        v["reason_text"] = reason_text(v["reason"]) if v["state"] in ("failed", "removed") else None
        if v.get("message"):  # the daemon's message names paths on the appliance: keep file names only
            v["message"] = ABS_PATH.sub(lambda m: m.group(1).rsplit("/", 1)[-1], str(v["message"]))
        return v

    def output_path(self, rec: JobRecord, view: dict[str, Any]) -> Path | None:
        if view["state"] != "done" or not view.get("output") or rec.media_deleted or not rec.job_id:
            return None
        name = str(view["output"])
        if "/" in name or name.startswith("."):
            return None
        path = self.outbox / rec.job_id / name
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return path if stat.S_ISREG(st.st_mode) else None

    def request_removal(self, rec: JobRecord, requested_by: str, *, delete_media: bool = False) -> str:
        """Ask the watch daemon to remove a queued or running job (or, `delete_media`, to delete a
        finished job's media): write `inbox/<ref>.cancel.json` under a dot name and rename it into
        place (the daemon stops the job and moves it to failed/<job-id>/ as `removed`; with
        `delete_media` it also deletes the job's media). Returns the request's inbox name."""
        doc: dict[str, Any] = {"version": 1, "requested_by": requested_by[:128]}
        if delete_media:
            doc["delete_media"] = True
        if rec.job_id:
            doc["job_id"] = rec.job_id
        else:
            doc["client_ref"] = rec.ref
        name = f"{rec.ref}{CANCEL_SUFFIX}"
        tmp = self.inbox / f".{name}.partial"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by an interrupted request
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        try:
            os.write(fd, json.dumps(doc, sort_keys=True).encode())
            os.fchmod(fd, FILE_MODE)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.inbox / name)
        fsync_dir(self.inbox)
        return name

    def delete_media(self, rec: JobRecord, requested_by: str) -> tuple[list[str], bool]:
        """Delete the job's media. Unclaimed drops in inbox/ (the console's own files) are unlinked
        here; a claimed job's folders belong to the watch daemon, which alone may change them: it
        is asked with a `delete_media` request and the view shows `media_deleted` once it did.
        Returns (files removed here, whether the daemon was asked)."""
        removed: list[str] = []
        for f in rec.files.values():
            if not f.get("drop"):
                continue
            p = self.inbox / f["drop"]
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    os.unlink(p)
                    removed.append(os.path.relpath(p, self.root))
        claimed = bool(rec.job_id) and any(os.path.lexists(d / str(rec.job_id)) for d in (self.outbox, self.failed))
        if claimed:
            self.request_removal(rec, requested_by, delete_media=True)
            rec.media_delete_requested = utcnow()
        else:
            rec.media_deleted = utcnow()
        self.save(rec)
        return removed, claimed

    def expired(self, retention_hours: float) -> list[JobRecord]:
        """Finished jobs whose media outlived the retention time."""
        if retention_hours <= 0:
            return []
        cutoff = datetime.now(UTC) - timedelta(hours=retention_hours)
        out = []
        for rec in self.records():
            if rec.media_deleted or rec.media_delete_requested or not rec.ended:
                continue
            with contextlib.suppress(ValueError):
                if datetime.fromisoformat(rec.ended.replace("Z", "+00:00")) < cutoff:
                    out.append(rec)
        return out


class UploadSink:
    """One uploaded file written straight into the inbox under a dot name (the daemon ignores it)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
        os.fchmod(self._fd, FILE_MODE)

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise UploadTooLargeError(f"the upload is larger than {self.max_bytes // (1024 * 1024)} MiB",
                                      limit_bytes=self.max_bytes)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

