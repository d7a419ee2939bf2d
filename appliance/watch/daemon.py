"""The watch-folder daemon: inotify + stability timer on inbox/, atomic claims into work/, results to
outbox/, quarantine to failed/, crash recovery, supervised workers, audit, metrics and sd_notify.

Everything runs in one single-threaded select loop; only workers run models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import select
import signal
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inotify_simple import INotify
from inotify_simple import flags as F

from sealfuse import __version__
from sealfuse.appliance.audit import AuditLog
from sealfuse.appliance.fsutil import (
    bad_name,
    copy_durable,
    fsync_dir,
    rmtree_quiet,
    safe_name,
    sha256_file,
    write_json_atomic,
)
from sealfuse.appliance.metrics import Metrics
from sealfuse.appliance.sdnotify import Notifier
from sealfuse.appliance.watch import errors as E
from sealfuse.appliance.watch.config import MANIFEST_SCHEMA, WatchConfig, validate
from sealfuse.appliance.watch.state import StateDB
from sealfuse.appliance.watch.supervisor import WorkerHandle

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm")
MANIFEST_SUFFIX = ".job.json"
HANG_FILE_ENV = "SEALFUSE_TEST_HANG_FILE"
WATCH_FLAGS = (F.CLOSE_WRITE | F.MOVED_TO | F.CREATE | F.MODIFY | F.ATTRIB | F.MOVED_FROM
               | F.DELETE | F.DELETE_SELF)
MIB = 1024 * 1024

# Exit codes of `sealfuse watch`
EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_STARTUP = 3
EXIT_WORKER = 5


class StartupError(Exception):
    def __init__(self, message: str, code: int = EXIT_STARTUP) -> None:
        super().__init__(message)
        self.code = code


def _engine_exts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        from sealfuse.engine import api

        return tuple(api.SUPPORTED_IMAGE_EXTS), tuple(api.SUPPORTED_VIDEO_EXTS)
    except Exception:  # the engine is imported by the worker; the daemon can run without it
        return IMAGE_EXTS, VIDEO_EXTS


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Track:
    """What the daemon knows about one inbox entry, for the stability decision."""

    first_seen: float
    sig: tuple[int, ...]
    since: float
    complete: bool = False
    seen_wall: str = field(default_factory=utcnow)


@dataclass
class Job:
    job_id: str
    kind: str  # "manifest" | "preset"
    wdir: Path
    claim: dict[str, Any]
    inputs: dict[str, Path]  # role -> path inside work/<id>/in (preset source: config path)
    options: dict[str, Any]
    key: str = ""
    digests: dict[str, str] = field(default_factory=dict)


@dataclass
class Paths:
    spool: Path
    state: Path
    audit: Path
    metrics: Path
    tmp_root: Path

    @property
    def inbox(self) -> Path:
        return self.spool / "inbox"

    @property
    def work(self) -> Path:
        return self.spool / "work"

    @property
    def outbox(self) -> Path:
        return self.spool / "outbox"

    @property
    def failed(self) -> Path:
        return self.spool / "failed"

    @property
    def jobs_tmp(self) -> Path:
        tag = hashlib.sha256(str(self.spool.resolve()).encode()).hexdigest()[:12]
        return self.tmp_root / f"sealfuse-watch-{tag}"


class Daemon:
    def __init__(self, paths: Paths, config: WatchConfig, *, models_dir: Path | None = None,
                 once: bool = False, notifier: Notifier | None = None) -> None:
        self.p = paths
        self.cfg = config
        self.once = once
        self.models_dir = models_dir
        self.notifier = notifier or Notifier()
        self.audit = AuditLog(paths.audit)
        self.metrics = Metrics(paths.metrics)
        self.image_exts, self.video_exts = _engine_exts()
        self.tracks: dict[Path, Track] = {}
        self.queue: list[Job] = []
        self.workers: list[WorkerHandle] = []
        self.running: dict[int, Job] = {}  # worker index -> job
        self.stopping = False
        self._stop_announced = False
        self.stop_deadline = 0.0
        self.ready_sent = False
        self.worker_init_failures = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._last_scan = 0.0
        self._last_rss = 0.0
        self._last_status = ""
        self._last_status_t = 0.0
        self._last_metrics = 0.0
        self._next_ping = 0.0
        self.inotify: INotify | None = None
        self.wds: dict[int, Path] = {}
        self.db: StateDB | None = None

    # ---------------------------------------------------------------- startup / shutdown
    def setup(self) -> None:
        for d, mode in ((self.p.spool, 0o750), (self.p.work, 0o700), (self.p.outbox, 0o750),
                        (self.p.failed, 0o750), (self.p.state, 0o700)):
            d.mkdir(parents=True, exist_ok=True, mode=mode)
        self.p.inbox.mkdir(parents=True, exist_ok=True, mode=0o770)
        inbox_st = os.stat(self.p.inbox)
        for name, preset in self.cfg.presets.items():
            d = self.p.inbox / name
            if not d.is_dir():
                d.mkdir(mode=0o700)
                os.chmod(d, stat.S_IMODE(inbox_st.st_mode))
                with contextlib.suppress(PermissionError):
                    os.chown(d, -1, inbox_st.st_gid)
            for what, src in (("source", preset.source), ("reference", preset.reference)):
                if src is not None and not src.is_file():
                    raise StartupError(f"preset {name!r}: {what} face image {src} is not a readable file",
                                       EXIT_CONFIG)
        self.db = StateDB(self.p.state / "state.sqlite")
        # Residue from a previous run: per-job temporaries and half-written metrics.
        jt = self.p.jobs_tmp
        if jt.exists():
            for child in jt.iterdir():
                rmtree_quiet(child)
        jt.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(jt, 0o700)
        self.metrics.sweep_stale()
        self.audit.append("started", version=__version__, pid=os.getpid(), config=self.cfg.source_file,
                          config_sha256=_file_digest(self.cfg.source_file), spool=str(self.p.spool),
                          presets=sorted(self.cfg.presets), concurrency=self.cfg.concurrency)
        self.recover()
        self.inotify = INotify()
        self._watch(self.p.inbox)
        for name in self.cfg.presets:
            self._watch(self.p.inbox / name)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.scan()
        self._start_workers()

    def _watch(self, d: Path) -> None:
        assert self.inotify is not None
        wd = self.inotify.add_watch(str(d), WATCH_FLAGS)
        self.wds[wd] = d

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.cfg.shutdown_grace_seconds
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # only the daemon talks to systemd
        env.pop(HANG_FILE_ENV, None)
        if self.models_dir:
            env["SEALFUSE_MODELS_DIR"] = str(self.models_dir)
        return env

    def _start_workers(self) -> None:
        opts = self.cfg.engine_options()
        if self.models_dir:
            opts["models_dir"] = str(self.models_dir)
        for i in range(self.cfg.concurrency):
            w = WorkerHandle(i, {"options": opts}, env=self._worker_env())
            w.start()
            self.workers.append(w)

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.metrics.up.set(0)
        self._write_metrics(force=True)
        if self.db:
            self.db.close()
        with contextlib.suppress(OSError):
            self.p.jobs_tmp.rmdir()

    # ---------------------------------------------------------------- recovery
    def recover(self) -> None:
        """Finish or re-queue what a killed daemon left in work/, outbox/.tmp and failed/.tmp."""
        assert self.db is not None
        for tmp in sorted(self.p.failed.glob(".*.tmp")):
            self._finish_quarantine_dir(tmp, recovered=True)
        for tmp in sorted(self.p.outbox.glob(".*.tmp")):
            rmtree_quiet(tmp)
        for wdir in sorted(self.p.work.iterdir()):
            jid = wdir.name
            claim_file = wdir / "claim.json"
            if not claim_file.is_file():
                rmtree_quiet(wdir)  # killed between mkdir and the claim record: nothing was moved
                continue
            claim = json.loads(claim_file.read_text())
            if (self.p.outbox / jid).is_dir():
                if self.cfg.retain_inputs:
                    self._retain_inputs(wdir, self.p.outbox / jid)
                self.db.upsert(jid, state="done")
                self.audit.append("recovered", job=jid, outcome="done")
                self.metrics.job_finished("recovered", "done", None)
                rmtree_quiet(wdir)
                continue
            if (self.p.failed / jid).is_dir():
                self.db.upsert(jid, state="failed")
                self.audit.append("recovered", job=jid, outcome="failed")
                rmtree_quiet(wdir)
                continue
            # Claimed but not finished: complete the claim, then re-run (or give up).
            missing = []
            for f in claim["files"]:
                dst = wdir / "in" / f["name"]
                if not os.path.lexists(dst):
                    src = self.p.spool / f["from"]
                    if os.path.lexists(src):
                        os.rename(src, dst)
                    else:
                        missing.append(f["from"])
            job = self._job_from_claim(claim, wdir)
            row = self.db.get(jid)
            attempts = row["attempts"] if row else 0
            if missing:
                self._fail(job, E.ClaimIncompleteError(
                    "claimed files vanished during a restart", missing=missing).to_dict())
                continue
            if attempts >= self.cfg.max_attempts:
                self._fail(job, E.AttemptsExhaustedError(
                    f"the job was interrupted {attempts} times (max_attempts={self.cfg.max_attempts})",
                    attempts=attempts).to_dict())
                continue
            self.audit.append("recovered", job=jid, outcome="requeued", attempts=attempts)
            self._admit(job)

    def _job_from_claim(self, claim: dict[str, Any], wdir: Path) -> Job:
        inputs = {role: wdir / "in" / name for role, name in claim["roles"].items()}
        if claim["kind"] == "preset" or claim.get("preset"):
            preset = self.cfg.presets.get(claim["preset"])
            if preset is not None:
                inputs.setdefault("source", preset.source)
                if preset.reference is not None:
                    inputs.setdefault("reference", preset.reference)
        return Job(claim["job_id"], claim["kind"], wdir, claim, inputs, dict(claim.get("options", {})))

    # ---------------------------------------------------------------- inbox scanning
    def scan(self) -> None:
        """Full listing of the inbox: discovers entries inotify missed and refreshes stability."""
        self._last_scan = time.monotonic()
        seen: set[Path] = set()
        dirs = [self.p.inbox] + [self.p.inbox / n for n in self.cfg.presets]
        for d in dirs:
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for name in names:
                path = d / name
                if d == self.p.inbox and name in self.cfg.presets:
                    continue
                seen.add(path)
                self._touch(path, complete=False)
        for path in list(self.tracks):
            if path not in seen:
                del self.tracks[path]

    @staticmethod
    def _ignored(name: str) -> bool:
        return name.startswith(".") or name.endswith(".partial")

    def _touch(self, path: Path, *, complete: bool, modified: bool = False) -> None:
        if self._ignored(path.name):
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.tracks.pop(path, None)
            return
        now = time.monotonic()
        sig = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode, st.st_nlink)
        tr = self.tracks.get(path)
        if tr is None:
            tr = self.tracks[path] = Track(first_seen=now, sig=sig, since=now)
            if path.name.endswith(MANIFEST_SUFFIX) or path.parent != self.p.inbox:
                self.audit.append("seen", drop=self._rel(path), name=ascii(path.name))
        elif tr.sig != sig or modified:
            tr.sig, tr.since, tr.complete = sig, now, False
        if complete:
            tr.complete = True

    def _stable(self, path: Path) -> bool:
        tr = self.tracks.get(path)
        if tr is None:
            return False
        return tr.complete or time.monotonic() - tr.since >= self.cfg.stable_seconds

    def handle_events(self) -> None:
        assert self.inotify is not None
        for ev in self.inotify.read(timeout=0):
            if ev.mask & F.Q_OVERFLOW:
                self.scan()
                continue
            d = self.wds.get(ev.wd)
            if d is None or not ev.name:
                if ev.mask & (F.DELETE_SELF | F.IGNORED) and d is not None:
                    self.wds.pop(ev.wd, None)
                continue
            path = d / ev.name
            if d == self.p.inbox and ev.name in self.cfg.presets:
                continue
            if ev.mask & (F.DELETE | F.MOVED_FROM):
                self.tracks.pop(path, None)
            elif ev.mask & (F.CLOSE_WRITE | F.MOVED_TO):
                self._touch(path, complete=True)
            elif ev.mask & F.CREATE:
                # Links, FIFOs, device nodes and directories are whole when created.
                try:
                    special = not stat.S_ISREG(os.lstat(path).st_mode)
                except FileNotFoundError:
                    continue
                self._touch(path, complete=special)
            elif ev.mask & (F.MODIFY | F.ATTRIB):
                self._touch(path, complete=False, modified=True)

    # ---------------------------------------------------------------- drop evaluation
    def _rel(self, path: Path) -> str:
        return os.fsdecode(os.path.relpath(path, self.p.spool))

    def _inspect(self, path: Path, *, media: bool) -> os.stat_result:
        """lstat-level checks every claimed entry passes; raises the specific DropError."""
        why = bad_name(path.name)
        if why:
            raise E.BadNameError(f"the file name {ascii(path.name)} {why}", name=ascii(path.name))
        st = os.lstat(path)
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            raise E.SymlinkError(f"{ascii(path.name)} is a symbolic link; drop regular files only",
                                 name=path.name, points_to=os.readlink(path))
        if stat.S_ISFIFO(mode):
            raise E.FifoError(f"{path.name} is a FIFO; drop regular files only", name=path.name)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise E.DeviceNodeError(f"{path.name} is a device node; drop regular files only", name=path.name,
                                    major=os.major(st.st_rdev), minor=os.minor(st.st_rdev))
        if stat.S_ISSOCK(mode):
            raise E.SocketFileError(f"{path.name} is a socket; drop regular files only", name=path.name)
        if stat.S_ISDIR(mode):
            raise E.DirectoryError(f"{path.name} is a directory; drop files only (not walked)", name=path.name)
        if not stat.S_ISREG(mode):  # pragma: no cover - every type is named above
            raise E.DropError(f"{path.name} is not a regular file", name=path.name)
        if st.st_nlink > 1:
            raise E.HardlinkError(f"{path.name} has {st.st_nlink} hard links; drop a file of its own",
                                  name=path.name, links=st.st_nlink)
        if st.st_size == 0:
            raise E.EmptyDropError(f"{path.name} is empty (0 bytes)", name=path.name)
        if media:
            ext = path.suffix.lower()
            if ext not in self.image_exts + self.video_exts:
                raise E.UnsupportedExtensionError(
                    f"{path.name}: extension {path.suffix!r} is not a supported image or video",
                    name=path.name, supported=list(self.image_exts + self.video_exts))
            if st.st_size > self.cfg.max_input_mb * MIB:
                raise E.TooLargeDropError(f"{path.name} is {st.st_size} bytes, over max_input_mb",
                                          name=path.name, size=st.st_size, limit_mb=self.cfg.max_input_mb)
        return st

    def evaluate(self) -> None:
        """Decide, for every tracked entry that is stable, whether it becomes a job or is quarantined."""
        referenced: set[Path] = set()
        manifests = [p for p in self.tracks if p.parent == self.p.inbox and p.name.endswith(MANIFEST_SUFFIX)]
        for m in manifests:
            if m in self.tracks:
                referenced |= self._evaluate_manifest(m)
        for path in list(self.tracks):
            if path not in self.tracks or path in referenced:
                continue
            if path.parent != self.p.inbox:
                self._evaluate_preset_drop(path)
            elif not path.name.endswith(MANIFEST_SUFFIX):
                self._evaluate_loose(path)

    def _evaluate_loose(self, path: Path) -> None:
        if not self._stable(path):
            return
        tr = self.tracks[path]
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                raise E.UnknownPresetError(f"inbox/{path.name} is a directory but no preset of that name "
                                           "is configured", name=path.name, presets=sorted(self.cfg.presets))
            self._inspect(path, media=True)
            if time.monotonic() - tr.first_seen >= self.cfg.orphan_seconds:
                raise E.OrphanMediaError(f"{path.name} waited {self.cfg.orphan_seconds:g} s for a manifest",
                                         name=path.name)
        except FileNotFoundError:
            self.tracks.pop(path, None)
        except E.DropError as err:
            self._quarantine_drop([path], err.to_dict(), seen=tr.seen_wall)

    def _evaluate_preset_drop(self, path: Path) -> None:
        if not self._stable(path):
            return
        preset = path.parent.name
        tr = self.tracks[path]
        try:
            self._inspect(path, media=True)
        except FileNotFoundError:
            self.tracks.pop(path, None)
            return
        except E.DropError as err:
            self._quarantine_drop([path], err.to_dict(), seen=tr.seen_wall)
            return
        p = self.cfg.presets[preset]
        self._claim("preset", [("target", path)], seen=tr.seen_wall, preset=preset,
                    options=dict(p.options), label=None)

    def _evaluate_manifest(self, m: Path) -> set[Path]:
        """Returns the inbox paths this manifest names (so they are not treated as orphans)."""
        if not self._stable(m):
            return set()
        tr = self.tracks[m]
        named: dict[str, Path] = {}
        try:
            st = self._inspect(m, media=False)
            if st.st_size > self.cfg.manifest_max_bytes:
                raise E.ManifestTooLargeError(
                    f"{m.name} is {st.st_size} bytes; manifests are at most {self.cfg.manifest_max_bytes}",
                    name=m.name, size=st.st_size, limit=self.cfg.manifest_max_bytes)
            fd = os.open(m, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                raw = f.read(self.cfg.manifest_max_bytes + 1)
            try:
                doc = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise E.InvalidJsonError(f"{m.name} is not valid JSON: {exc}", name=m.name) from None
            problems = validate(doc, MANIFEST_SCHEMA)
            if problems:
                raise E.SchemaViolationError(f"{m.name} breaks the job schema: {problems[0]}",
                                             name=m.name, problems=problems[:10])
            name_error: E.DropError | None = None
            for role in ("source", "target", "reference"):
                if role not in doc:
                    continue
                name = doc[role]
                if (name.startswith("/") or "/" in name or "\\" in name or name in (".", "..")
                        or "\0" in name):
                    name_error = name_error or E.PathEscapeError(
                        f"{m.name}: {role} {ascii(name)} is not a plain file name in the drop folder",
                        name=m.name, role=role, path=ascii(name))
                elif bad_name(name) or name.startswith(".") or name.endswith(MANIFEST_SUFFIX):
                    name_error = name_error or E.BadNameError(
                        f"{m.name}: {role} name {ascii(name)} is not acceptable", name=m.name, role=role)
                else:
                    named[role] = self.p.inbox / name
            if name_error is not None:  # raised once every acceptable name is known: they go along
                raise name_error
            preset = doc.get("preset")
            if preset is not None and preset not in self.cfg.presets:
                raise E.UnknownPresetError(f"{m.name}: preset {preset!r} is not configured",
                                           name=m.name, preset=preset, presets=sorted(self.cfg.presets))
            if "target" in named and named["target"].suffix.lower() not in self.image_exts + self.video_exts:
                raise E.UnsupportedExtensionError(f"{m.name}: target extension is not supported",
                                                  name=m.name, target=named["target"].name)
            for role in ("source", "reference"):
                if role in named and named[role].suffix.lower() not in self.image_exts:
                    raise E.UnsupportedExtensionError(f"{m.name}: {role} must be an image",
                                                      name=m.name, role=role)
            # Media must be present and whole before anything is claimed.
            waiting = []
            for path in named.values():
                if not os.path.lexists(path):
                    waiting.append(path.name)
                    continue
                if path not in self.tracks:
                    self._touch(path, complete=False)
                self._inspect(path, media=True)
                if not self._stable(path):
                    waiting.append(path.name)
            if waiting:
                if time.monotonic() - tr.first_seen >= self.cfg.manifest_wait_seconds:
                    raise E.MissingMediaError(
                        f"{m.name}: {', '.join(waiting)} did not arrive (whole) within "
                        f"{self.cfg.manifest_wait_seconds:g} s", name=m.name, waiting=waiting)
                return set(named.values())
        except FileNotFoundError:
            self.tracks.pop(m, None)
            return set(named.values())
        except E.DropError as err:
            present = [p for p in named.values() if os.path.lexists(p)]
            self._quarantine_drop([m, *dict.fromkeys(present)], err.to_dict(), seen=tr.seen_wall)
            return set(named.values())
        preset_opts = self.cfg.presets[doc["preset"]].options if doc.get("preset") else {}
        files = [("manifest", m)] + list(named.items())
        self._claim("manifest", files, seen=tr.seen_wall, preset=doc.get("preset"),
                    options={**preset_opts, **doc.get("options", {})}, label=doc.get("label"))
        return set(named.values())

    # ---------------------------------------------------------------- claiming
    def _new_job_id(self, hint: str) -> str:
        stem = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in hint)[:40] or "job"
        return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{stem}-{secrets.token_hex(3)}"

    def _claim(self, kind: str, files: list[tuple[str, Path]], *, seen: str, preset: str | None,
               options: dict[str, Any], label: str | None) -> None:
        main = files[0][1]
        stem = main.name[: -len(MANIFEST_SUFFIX)] if kind == "manifest" else main.stem
        jid = self._new_job_id(stem)
        wdir = self.p.work / jid
        (wdir / "in").mkdir(parents=True, mode=0o700)
        names: dict[Path, str] = {}
        for _role, path in files:
            names.setdefault(path, path.name)
        claim = {
            "job_id": jid, "kind": kind, "preset": preset, "label": label, "options": options,
            "roles": {role: names[path] for role, path in files},
            "files": [{"name": n, "from": self._rel(p)} for p, n in names.items()],
            "seen": seen, "claimed": utcnow(),
        }
        write_json_atomic(wdir / "claim.json", claim, mode=0o600)
        # Media first, manifest last: a crash mid-way is completed by recover().
        moved: list[tuple[Path, Path]] = []
        try:
            for path, name in sorted(names.items(), key=lambda kv: kv[0] == main):
                os.rename(path, wdir / "in" / name)
                moved.append((path, wdir / "in" / name))
        except FileNotFoundError:  # the producer took a file back: undo, decide again later
            for orig, now in reversed(moved):
                os.rename(now, orig)
            rmtree_quiet(wdir)
            for path in names:
                self.tracks.pop(path, None)
            return
        for path in names:
            self.tracks.pop(path, None)
        fsync_dir(wdir / "in")
        self.audit.append("claimed", job=jid, kind=kind, preset=preset,
                          drop=[f["from"] for f in claim["files"]], seen=seen)
        self._admit(self._job_from_claim(claim, wdir))

    def _admit(self, job: Job) -> None:
        """Hash the claimed inputs, apply idempotency, queue the job."""
        assert self.db is not None
        digests = {}
        try:
            for role, path in job.inputs.items():
                digests[role] = sha256_file(path)[0]
        except OSError as exc:
            self._fail(job, E.PresetSourceError(f"cannot read an input: {exc}", error=str(exc)).to_dict())
            return
        job.digests = digests
        key_doc = {"kind": job.kind, "preset": job.claim.get("preset"), "options": job.options,
                   "digests": {r: d for r, d in digests.items() if r != "manifest"}}
        job.key = hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=str).encode()).hexdigest()
        original = self.db.find_blocking(job.key, job.job_id)
        if original is not None:
            err = E.DuplicateJobError(
                f"identical job (same media digests and options) already {original['state']} as "
                f"{original['job_id']}; not run again", original_job=original["job_id"],
                original_state=original["state"], key=job.key)
            self.db.upsert(job.job_id, key=job.key, state="duplicate", reason="duplicate")
            self.audit.append("duplicate", job=job.job_id, original_job=original["job_id"], key=job.key,
                              digests=digests)
            self._fail(job, err.to_dict(), keep_media=False, duplicate=True)
            return
        row = self.db.get(job.job_id)
        if row is None or row["state"] not in ("queued", "running"):
            self.db.upsert(job.job_id, key=job.key, state="queued")
        self.queue.append(job)

    # ---------------------------------------------------------------- running
    def dispatch(self) -> None:
        assert self.db is not None
        for w in self.workers:
            if not self.queue or self.stopping:
                return
            if not w.ready or w.job is not None:
                continue
            job = self.queue.pop(0)
            attempts = self.db.start_attempt(job.job_id)
            tdir = self.p.jobs_tmp / job.job_id
            rmtree_quiet(tdir)
            (tdir / "out").mkdir(parents=True, mode=0o700)
            os.chmod(tdir, 0o700)
            target = job.inputs["target"]
            opts = dict(job.options)
            if "reference" in job.inputs:
                opts["reference_face_image"] = str(job.inputs["reference"])
            request = {"source": str(job.inputs["source"]), "target": str(target),
                       "output": str(tdir / "out" / target.name), "options": opts}
            w.submit(job.job_id, request, self.cfg.job_timeout_seconds)
            self.running[w.index] = job
            self.audit.append("started_job", job=job.job_id, worker_pid=w.pid, attempt=attempts)

    def on_worker_message(self, w: WorkerHandle, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "ready":
            w.ready = True
            self.worker_init_failures = 0
            self.audit.append("worker_ready", worker_pid=msg.get("pid"), load_seconds=msg.get("load_seconds"))
            if not self.ready_sent and all(x.ready for x in self.workers):
                self.ready_sent = True
                self.metrics.up.set(1)
                self.notifier.ready(self._status_text())
        elif op == "fatal":
            err = msg.get("error", {})
            raise StartupError(f"the worker cannot load the engine: {err.get('message')} "
                               f"({err.get('reason')}; evidence {err.get('evidence')})", EXIT_WORKER)
        elif op == "progress" and w.job is not None:
            w.job.progress = msg.get("info", {})
        elif op == "result" and w.job is not None and msg.get("job_id") == w.job.job_id:
            job = self.running.pop(w.index)
            seconds = time.monotonic() - w.job.started
            w.job = None
            if msg.get("ok"):
                self._complete(job, msg.get("report", {}), seconds)
            else:
                err = msg.get("error", {})
                self._fail(job, err, seconds=seconds)

    def _worker_lost(self, w: WorkerHandle, err: E.DropError | None, restart_reason: str) -> None:
        """The worker died or was killed: fail its job (if any) and start a fresh worker."""
        desc = w.exit_description()
        w.kill()
        job = self.running.pop(w.index, None)
        was_ready = w.ready
        w.job = None
        if job is not None:
            if err is None:
                err = E.WorkerCrashError("the worker process died during the job "
                                         f"({desc.get('signal') or desc.get('returncode')})", **desc)
            else:
                err.evidence.update(desc)
            self._fail(job, err.to_dict(), seconds=None)
        self.metrics.worker_restarts.labels(restart_reason).inc()
        self.audit.append("worker_restarted", reason=restart_reason, job=job.job_id if job else None, **desc)
        if not was_ready:
            self.worker_init_failures += 1
            if self.worker_init_failures >= 3:
                raise StartupError("the worker died three times while loading the models "
                                   f"(last exit {desc})", EXIT_WORKER)
        if not self.stopping:
            w.start()

    def supervise(self) -> None:
        now = time.monotonic()
        check_rss = self.cfg.max_rss_mb > 0 and now - self._last_rss >= self.cfg.rss_poll_seconds
        if check_rss:
            self._last_rss = now
        for w in self.workers:
            if w.proc is None:
                continue
            for msg in w.read_messages():
                self.on_worker_message(w, msg)
            if not w.alive():
                for msg in w.read_messages():
                    self.on_worker_message(w, msg)
                self._worker_lost(w, None, "crash")
                continue
            if w.job is not None and now > w.job.deadline:
                self._worker_lost(w, E.JobTimeoutError(
                    f"the job ran past job_timeout_seconds={self.cfg.job_timeout_seconds:g}",
                    timeout_seconds=self.cfg.job_timeout_seconds), "timeout")
            elif w.job is not None and check_rss:
                rss = w.rss_bytes()
                if rss > self.cfg.max_rss_mb * MIB:
                    self._worker_lost(w, E.MemoryLimitError(
                        f"the worker used {rss // MIB} MiB, over max_rss_mb={self.cfg.max_rss_mb}",
                        rss_bytes=rss, limit_mb=self.cfg.max_rss_mb), "memory_limit")
            elif not w.ready and now - w.started_at > self.cfg.worker_start_timeout_seconds:
                raise StartupError(f"the worker did not load the models within "
                                   f"{self.cfg.worker_start_timeout_seconds:g} s", EXIT_WORKER)

    # ---------------------------------------------------------------- outcomes
    def _complete(self, job: Job, report: dict[str, Any], seconds: float) -> None:
        assert self.db is not None
        tdir = self.p.jobs_tmp / job.job_id
        target = job.inputs["target"]
        produced = tdir / "out" / target.name
        final = self.p.outbox / job.job_id
        staging = self.p.outbox / f".{job.job_id}.tmp"
        try:
            rmtree_quiet(staging)
            staging.mkdir(mode=0o750)
            copy_durable(produced, staging / target.name, mode=0o640)
            out_digest, out_size = sha256_file(staging / target.name)
        except OSError as exc:
            rmtree_quiet(staging)
            self._fail(job, {"error": "OutputError", "reason": "output_missing",
                             "message": f"the worker reported success but its output is unusable: {exc}",
                             "evidence": {"error": str(exc)}}, seconds=seconds)
            return
        frames = int(report.get("frames") or (1 if report.get("kind") == "image" else 0) or 0)
        if isinstance(report.get("frames"), dict):
            frames = int(report["frames"].get("processed") or report["frames"].get("total") or 0)
        result = {
            "job_id": job.job_id, "label": job.claim.get("label"), "kind": job.kind,
            "preset": job.claim.get("preset"), "drop": [f["from"] for f in job.claim["files"]],
            "inputs": {r: {"sha256": d} for r, d in job.digests.items()},
            "output": {"name": target.name, "sha256": out_digest, "size": out_size},
            "options": job.options, "seen": job.claim.get("seen"), "claimed": job.claim.get("claimed"),
            "finished": utcnow(), "seconds": round(seconds, 3),
            "report": {k: v for k, v in report.items() if k not in ("source", "target", "output")},
        }
        write_json_atomic(staging / "result.json", result, mode=0o640)
        fsync_dir(staging)
        os.rename(staging, final)  # the commit point
        fsync_dir(self.p.outbox)
        if self.cfg.retain_inputs:
            self._retain_inputs(job.wdir, final)
        self.db.upsert(job.job_id, state="done")
        self.audit.append("done", job=job.job_id, key=job.key, inputs=job.digests, output_sha256=out_digest,
                          seconds=round(seconds, 3), faces=len(report.get("faces", []) or []),
                          frames=frames)
        self.metrics.job_finished("done", "ok", seconds, frames)
        self.metrics.last_success.set(time.time())
        rmtree_quiet(job.wdir)
        rmtree_quiet(tdir)
        self._write_metrics(force=True)

    def _retain_inputs(self, wdir: Path, final: Path) -> None:
        src = wdir / "in"
        if not src.is_dir():
            return
        dst = final / "input"
        dst.mkdir(exist_ok=True, mode=0o750)
        for child in src.iterdir():
            os.rename(child, dst / child.name)
        fsync_dir(dst)

    def _fail(self, job: Job, err: dict[str, Any], *, seconds: float | None = None,
              keep_media: bool = True, duplicate: bool = False) -> None:
        """Quarantine a claimed job into failed/<job-id>/ with error.json (and its inputs)."""
        assert self.db is not None
        inputs = [{"from": os.path.relpath(job.wdir / "in" / f["name"], self.p.spool),
                   "name": safe_name(f["name"]), "drop": f["from"], "discard": not keep_media}
                  for f in job.claim["files"]]
        self._write_quarantine(job.job_id, err, inputs, seen=job.claim.get("seen"),
                               claimed=job.claim.get("claimed"), digests=job.digests)
        reason = err.get("reason", "internal_error")
        if not duplicate:
            self.db.upsert(job.job_id, key=job.key or None, state="failed", reason=reason)
            self.audit.append("failed", job=job.job_id, reason=reason, key=job.key or None,
                              inputs=job.digests or None)
        self.metrics.job_finished("duplicate" if duplicate else "failed", reason, seconds)
        rmtree_quiet(job.wdir)
        rmtree_quiet(self.p.jobs_tmp / job.job_id)
        self._write_metrics(force=True)

    def _quarantine_drop(self, paths: list[Path], err: dict[str, Any], *, seen: str) -> None:
        """Move a bad drop (never opened beyond lstat/header reads) into failed/<job-id>/."""
        jid = self._new_job_id(safe_name(paths[0].name).split(".")[0])
        inputs = [{"from": self._rel(p), "name": safe_name(p.name), "drop": self._rel(p), "discard": False}
                  for p in paths]
        self._write_quarantine(jid, err, inputs, seen=seen, claimed=None, digests={})
        for p in paths:
            self.tracks.pop(p, None)
        self.audit.append("failed", job=jid, reason=err.get("reason"), drop=[i["from"] for i in inputs])
        self.metrics.job_finished("failed", err.get("reason", "bad_drop"), None)
        self._write_metrics(force=True)

    def _write_quarantine(self, jid: str, err: dict[str, Any], inputs: list[dict[str, Any]], *,
                          seen: str | None, claimed: str | None, digests: dict[str, str]) -> None:
        staging = self.p.failed / f".{jid}.tmp"
        staging.mkdir(mode=0o750, exist_ok=True)
        used: set[str] = set()
        for i in inputs:  # unique names inside input/
            base, n = i["name"], 1
            while i["name"] in used:
                n += 1
                i["name"] = f"{n}-{base}"
            used.add(i["name"])
        doc = {
            "job_id": jid, "reason": err.get("reason", "internal_error"), "message": err.get("message", ""),
            "error": err.get("error"), "exit_code": err.get("exit_code"),
            "evidence": err.get("evidence", {}), "inputs": inputs, "digests": digests,
            "timestamps": {"seen": seen, "claimed": claimed, "failed": utcnow()},
        }
        write_json_atomic(staging / "error.json", doc, mode=0o640)  # first: recovery reads it
        self._finish_quarantine_dir(staging, recovered=False)

    def _finish_quarantine_dir(self, staging: Path, *, recovered: bool) -> None:
        jid = staging.name[1:-len(".tmp")]
        err_file = staging / "error.json"
        if not err_file.is_file():
            # Killed before error.json was written: nothing was moved in yet.
            rmtree_quiet(staging)
            return
        doc = json.loads(err_file.read_text())
        for i in doc.get("inputs", []):
            src = self.p.spool / i["from"]
            if not os.path.lexists(src):
                continue
            if i.get("discard"):
                rmtree_quiet(src)
                continue
            (staging / "input").mkdir(mode=0o750, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.rename(src, staging / "input" / i["name"])
        fsync_dir(staging)
        final = self.p.failed / jid
        if final.exists():
            rmtree_quiet(staging)
        else:
            os.rename(staging, final)
        fsync_dir(self.p.failed)
        if recovered:
            self.audit.append("recovered", job=jid, outcome="failed", reason=doc.get("reason"))

    # ---------------------------------------------------------------- graceful stop
    def requeue(self, job: Job) -> None:
        """Hand a claimed job back to the inbox (media first, manifest last) and forget it."""
        assert self.db is not None
        files = sorted(job.claim["files"], key=lambda f: f["from"].endswith(MANIFEST_SUFFIX))
        for f in files:
            src = job.wdir / "in" / f["name"]
            dst = self.p.spool / f["from"]
            if os.path.lexists(dst):
                self.audit.append("requeue_blocked", job=job.job_id, drop=f["from"])
                return  # left in work/: the next start recovers it
            if os.path.lexists(src):
                os.rename(src, dst)
        self.db.forget(job.job_id)
        self.audit.append("requeued", job=job.job_id, drop=[f["from"] for f in files])
        rmtree_quiet(job.wdir)
        rmtree_quiet(self.p.jobs_tmp / job.job_id)

    # ---------------------------------------------------------------- status, metrics
    def _pending_drops(self) -> int:
        return sum(1 for p in self.tracks if p.parent != self.p.inbox or p.name.endswith(MANIFEST_SUFFIX))

    def _status_text(self) -> str:
        running = []
        for job_id, w in ((j.job_id, self.workers[i]) for i, j in self.running.items()):
            prog = w.job.progress if w.job else {}
            frame = f" frame {prog.get('frame')}/{prog.get('total')}" if prog.get("frame") else ""
            running.append(f"{job_id}{frame}")
        state = "stopping" if self.stopping else ("ready" if self.ready_sent else "loading models")
        return (f"{state}; queue {len(self.queue) + self._pending_drops()}; "
                f"running {', '.join(running) if running else 'none'}")

    def _write_metrics(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_metrics < 5:
            return
        self._last_metrics = now
        self.metrics.queue_depth.set(len(self.queue) + self._pending_drops())
        self.metrics.running.set(len(self.running))
        self.metrics.write()

    def _report_status(self) -> None:
        text = self._status_text()
        now = time.monotonic()
        if text != self._last_status and now - self._last_status_t >= 0.5:
            self._last_status, self._last_status_t = text, now
            self.notifier.status(text)

    # ---------------------------------------------------------------- main loop
    def _hang_hook(self) -> None:
        hang = os.environ.get(HANG_FILE_ENV)
        while hang and os.path.exists(hang):  # test hook: a stuck main loop stops the watchdog pings
            time.sleep(0.1)

    def _drained(self) -> bool:
        # Loose media in inbox/ waits for its manifest (or orphan_seconds); it does not hold --once.
        return not self.queue and not self.running and self._pending_drops() == 0

    def run(self) -> int:
        self.setup()
        interval = self.notifier.watchdog_interval
        assert self.inotify is not None
        while True:
            self._hang_hook()
            now = time.monotonic()
            if interval and now >= self._next_ping:
                self.notifier.watchdog()
                self._next_ping = now + interval
            if self.stopping and not self.running:
                break
            if self.stopping and now >= self.stop_deadline:
                break
            if self.once and self.ready_sent and self._drained():
                break
            timeout = min(0.25, self.cfg.scan_interval, self.cfg.rss_poll_seconds)
            if interval:
                timeout = max(0.0, min(timeout, self._next_ping - now))
            fds = [self.inotify.fileno(), self._wake_r] + [w.fileno() for w in self.workers if w.alive()]
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select(fds, [], [], timeout)
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 64)
            if self.stopping:
                if not self._stop_announced:
                    self._stop_announced = True
                    self.notifier.stopping()
                    self.audit.append("stopping", grace_seconds=self.cfg.shutdown_grace_seconds,
                                      running=[j.job_id for j in self.running.values()])
                for job in self.queue:
                    self.requeue(job)
                self.queue.clear()
            else:
                self.handle_events()
                if time.monotonic() - self._last_scan >= self.cfg.scan_interval:
                    self.scan()
                self.evaluate()
            self.supervise()
            self.dispatch()
            self._report_status()
            self._write_metrics()
        return self.shutdown()

    def shutdown(self) -> int:
        # Jobs still running past the grace period go back to the inbox.
        for idx, job in list(self.running.items()):
            self.workers[idx].kill()
            self.workers[idx].job = None
            self.running.pop(idx, None)
            self.requeue(job)
        for job in self.queue:
            self.requeue(job)
        self.queue.clear()
        self.audit.append("stopped", pid=os.getpid(), signal=self.stopping)
        self.close()
        return EXIT_OK


def _file_digest(path: str | None) -> str | None:
    if not path or not os.path.isfile(path):
        return None
    return sha256_file(Path(path))[0]
