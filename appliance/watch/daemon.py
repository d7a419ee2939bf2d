"""The watch-folder daemon: wires the inbox watcher, admission, the spool and a dispatcher, and runs
the single-threaded select loop (sd_notify READY/STATUS/WATCHDOG, audit, metrics, status files).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sealfuse import __version__
from sealfuse.appliance.audit import AuditLog
from sealfuse.appliance.fsutil import FollowError, lexists_under, rmtree_quiet, sha256_file
from sealfuse.appliance.metrics import Metrics
from sealfuse.appliance.sdnotify import Notifier
from sealfuse.appliance.watch import errors
from sealfuse.appliance.watch.admission import Admission
from sealfuse.appliance.watch.config import WatchConfig
from sealfuse.appliance.watch.dispatch import Dispatcher, DispatchEvent, JobRequest
from sealfuse.appliance.watch.inbox import CANCEL_SUFFIX, MANIFEST_SUFFIX, InboxWatcher
from sealfuse.appliance.watch.jobs import JobBook
from sealfuse.appliance.watch.local import WORKER_COMMAND, LocalDispatcher
from sealfuse.appliance.watch.spool import Paths
from sealfuse.appliance.watch.state import StateDB

__all__ = ["Daemon", "Paths"]

LOCK_NAME = ".watch.lock"


class Daemon:
    """One watch-folder daemon on one spool. `dispatcher` (default: the local worker pool started
    with `worker_command`) runs the jobs; `run()` returns the exit code."""

    def __init__(self, paths: Paths, config: WatchConfig, *, models_dir: Path | None = None,
                 once: bool = False, notifier: Notifier | None = None, dispatcher: Dispatcher | None = None,
                 worker_command: list[str] | None = None) -> None:
        self.paths = paths
        self.cfg = config
        self.once = once
        self.models_dir = models_dir
        self.notifier = notifier or Notifier()
        self.audit = AuditLog(paths.audit)
        self.metrics = Metrics(paths.metrics, spool=paths.spool, backend=config.dispatch_backend)
        self.admission = Admission(config, paths.inbox)
        self.watcher = InboxWatcher(paths.inbox, config.presets, config.stable_seconds, on_new=self._on_new)
        if dispatcher is None and config.dispatch_backend == "slurm":
            dispatcher = self._slurm_dispatcher()
        self.dispatcher = dispatcher or self._local_dispatcher(worker_command or list(WORKER_COMMAND))
        self.book: JobBook | None = None
        self.stopping = False
        self._stop_announced = False
        self.stop_deadline = 0.0
        self.ready_sent = False
        self.signing: dict[str, Any] = {}  # the C2PA signing status, set by setup()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._last_status = ""
        self._last_status_t = 0.0
        self._last_metrics = 0.0
        self._next_ping = 0.0
        self.db: StateDB | None = None
        self._lock_fd: int | None = None

    def _local_dispatcher(self, command: list[str]) -> LocalDispatcher:
        opts = self.cfg.engine_options()
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # only the daemon talks to systemd
        if self.models_dir:
            opts["models_dir"] = str(self.models_dir)
            env["SEALFUSE_MODELS_DIR"] = str(self.models_dir)
        return LocalDispatcher(concurrency=self.cfg.concurrency,
                               init={"options": opts, "provenance": self.cfg.provenance()}, env=env,
                               command=command, max_rss_mb=self.cfg.max_rss_mb,
                               rss_poll_seconds=self.cfg.rss_poll_seconds,
                               start_timeout_seconds=self.cfg.worker_start_timeout_seconds)

    def _slurm_dispatcher(self) -> Dispatcher:
        from sealfuse.appliance.watch.slurm import SlurmDispatcher, SlurmSettings

        opts = self.cfg.engine_options()
        if self.models_dir:
            opts["models_dir"] = str(self.models_dir)
        # Slurm copies the submitter's environment into the job: nothing of systemd's goes along.
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "RUNTIME_DIRECTORY",
                            "INVOCATION_ID", "JOURNAL_STREAM")}
        return SlurmDispatcher(SlurmSettings.from_table(self.cfg.slurm), spool=self.paths.spool,
                               engine_options=opts, retain_inputs=self.cfg.retain_inputs,
                               metrics=self.metrics, env=env, provenance=self.cfg.provenance())

    # ---------------------------------------------------------------- startup / shutdown
    def setup(self) -> None:
        """Create the spool, take over what a previous run left, start watching and the backend."""
        paths = self.paths
        paths.spool.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._lock_spool()  # before anything (recovery, the tmp sweep) touches the spool
        for directory, mode in ((paths.work, 0o700), (paths.outbox, 0o750),
                                (paths.failed, 0o750), (paths.status, 0o750), (paths.state, 0o700)):
            directory.mkdir(parents=True, exist_ok=True, mode=mode)
        paths.inbox.mkdir(parents=True, exist_ok=True, mode=0o770)
        for name, preset in self.cfg.presets.items():
            if not os.path.lexists(paths.inbox / name):  # a link or file there is quarantined, not used
                self.watcher.make_preset_dir(name)
            for what, src in (("source", preset.source), ("reference", preset.reference)):
                if src is not None and not src.is_file():
                    raise errors.ConfigError(f"preset {name!r}: {what} face image {src} is not a readable file")
        self.signing = self._provenance_status()
        self.db = StateDB(paths.state / "state.sqlite")
        jobs_tmp = paths.jobs_tmp  # residue from a previous run: per-job temporaries
        if jobs_tmp.exists():
            for child in jobs_tmp.iterdir():
                rmtree_quiet(child)
        jobs_tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(jobs_tmp, 0o700)
        self.metrics.sweep_stale()
        self.book = JobBook(paths, self.cfg, self.db, self.audit, self.metrics, self._write_metrics)
        self.book.status.setup()
        self.audit.append("started", version=__version__, pid=os.getpid(), config=self.cfg.source_file,
                          config_sha256=_file_digest(self.cfg.source_file), spool=str(paths.spool),
                          presets=sorted(self.cfg.presets), concurrency=self.cfg.concurrency,
                          provenance=self.signing)
        self.book.recover(self.dispatcher)
        self.watcher.start()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.watcher.scan()
        self.dispatcher.start()

    def _lock_spool(self) -> None:
        """Hold an exclusive flock on SPOOL/.watch.lock for the daemon's lifetime: one daemon per spool."""
        path = self.paths.spool / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise errors.StartupError(f"cannot open the spool lock {path}: {exc}", path=str(path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.SpoolLockedError(f"another sealfuse watch daemon is running on {self.paths.spool} "
                                          f"(it holds {path}); one daemon per spool", path=str(path)) from None
        self._lock_fd = fd
        with contextlib.suppress(OSError):  # the pid is for people; a full disk must not stop a start
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.cfg.shutdown_grace_seconds
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _on_new(self, path: Path) -> None:
        if path.name.endswith(MANIFEST_SUFFIX) or path.parent != self.paths.inbox:
            self.audit.append("seen", drop=self._rel(path), name=ascii(path.name))

    def close(self) -> None:
        """Stop the backend, write the last metrics, close the database and inotify."""
        self.dispatcher.stop()
        self.watcher.close()
        if self._lock_fd is None:
            return  # never owned the spool: its metrics and temporaries belong to the daemon that does
        self.metrics.up.set(0)
        self._write_metrics(force=True)
        if self.db:
            self.db.close()
        with contextlib.suppress(OSError):
            self.paths.jobs_tmp.rmdir()
        os.close(self._lock_fd)  # releases the flock
        self._lock_fd = None

    def _rel(self, path: Path) -> str:
        return os.fsdecode(os.path.relpath(path, self.paths.spool))

    # ---------------------------------------------------------------- admission
    def evaluate(self) -> None:
        """Decide, for every tracked entry that is stable, whether it becomes a job or is quarantined."""
        inbox, tracks = self.paths.inbox, self.watcher.tracks
        referenced: set[Path] = set()
        for manifest in [p for p in tracks if p.parent == inbox and p.name.endswith(MANIFEST_SUFFIX)]:
            if manifest in tracks and self.watcher.stable(manifest):
                referenced |= self._evaluate_manifest(manifest)
        for request in [p for p in tracks if p.parent == inbox and p.name.endswith(CANCEL_SUFFIX)]:
            referenced.add(request)
            if request in tracks and self.watcher.stable(request):
                self._judge(request, self._cancel)
        for path in list(tracks):
            if path not in tracks or path in referenced or not self.watcher.stable(path):
                continue
            if path.parent != inbox:
                self._judge(path, lambda p: self._claim(self.admission.preset_drop(p)))
            elif not path.name.endswith(MANIFEST_SUFFIX):
                self._judge(path, lambda p: self.admission.loose(p, age=self.watcher.age(p)))

    def _cancel(self, path: Path) -> None:
        """A removal request: apply it, then delete it (a bad or unknown one is quarantined)."""
        assert self.book is not None
        request = self.admission.cancel(path)
        self.book.remove(request, self.dispatcher, drop=self._rel(path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # inbox/<name>: a real directory of ours; the name itself is never followed
        self.watcher.forget(path)

    def _judge(self, path: Path, decide: Any) -> None:
        seen = self.watcher.tracks[path].seen_wall
        try:
            decide(path)
        except (FileNotFoundError, FollowError):
            self.watcher.forget(path)  # gone, or its folder became a link (judged as an entry itself)
        except errors.DropError as err:
            self._quarantine([path], err, seen=seen)
        except OSError as exc:
            self._refuse([path], exc)

    def _evaluate_manifest(self, manifest: Path) -> set[Path]:
        seen = self.watcher.tracks[manifest].seen_wall

        def stable(media: Path) -> bool:
            if media not in self.watcher.tracks:
                self.watcher.touch(media, complete=False)
            return self.watcher.stable(media)

        try:
            verdict = self.admission.manifest(manifest, age=self.watcher.age(manifest), stable=stable)
        except OSError as exc:
            self._refuse([manifest], exc)
            return set()
        if verdict.gone:
            self.watcher.forget(manifest)
        elif verdict.rejection is not None:
            self._quarantine(verdict.reject_paths, verdict.rejection, seen=seen, client_ref=verdict.client_ref)
        elif verdict.claim is not None:
            self._claim(verdict.claim)
        return verdict.named

    def _quarantine(self, paths: list[Path], err: errors.DropError, *, seen: str,
                    client_ref: str | None = None) -> None:
        assert self.book is not None
        self.book.quarantine_drop(paths, err, seen=seen, client_ref=client_ref)
        self._settle(paths)

    def _settle(self, paths: list[Path]) -> None:
        """Entries gone from the inbox are forgotten; entries still there (they could not be moved)
        are refused until they change."""
        for path in paths:
            if lexists_under(self.paths.spool, path.relative_to(self.paths.spool)):
                self.watcher.refuse(path)
            else:
                self.watcher.forget(path)
                if path.parent == self.paths.inbox and path.name in self.cfg.presets:
                    self.watcher.restore_preset(path.name)

    def _refuse(self, paths: list[Path], exc: OSError) -> None:
        """An entry the daemon cannot handle now (e.g. disk full): audited once, left where it is."""
        self.audit.append("drop_refused", drop=[self._rel(p) for p in paths], errno=exc.errno,
                          error=str(exc))
        for path in paths:
            self.watcher.refuse(path)

    def _claim(self, request: Any) -> None:
        assert self.book is not None
        seen = self.watcher.tracks[request.files[0][1]].seen_wall
        paths = [path for _role, path in request.files]
        try:
            self.book.claim(request, seen=seen)
        except OSError as exc:
            self._refuse(paths, exc)
            return
        self._settle(paths)

    # ---------------------------------------------------------------- running
    def dispatch(self) -> None:
        """Hand queued jobs to the backend while it has free slots."""
        assert self.book is not None
        while self.book.queue and not self.stopping and self.dispatcher.free_slots() > 0:
            job = self.book.queue.pop(0)
            tdir = self.paths.jobs_tmp / job.job_id
            rmtree_quiet(tdir)
            try:
                (tdir / "out").mkdir(parents=True, mode=0o700)
                os.chmod(tdir, 0o700)
            except OSError as exc:  # the tmp dir (tmpfs) is full or gone: this job fails, not the daemon
                rmtree_quiet(tdir)
                self.book.fail(job, errors.ScratchUnavailableError(
                    f"cannot make the job's temporary directory: {exc}", error=str(exc), errno=exc.errno))
                continue
            opts = dict(job.options)
            if "reference" in job.inputs:
                opts["reference_face_image"] = str(job.inputs["reference"])
            pairs = sorted({int(r.split(".")[1]) for r in job.inputs if r.startswith("face_map.")})
            if pairs:  # a manifest's face map, its images claimed with the job
                opts["face_map"] = [[str(job.inputs[f"face_map.{i}.reference"]), str(job.inputs[f"face_map.{i}.source"])]
                                    for i in pairs]
            target = job.inputs["target"]
            request = JobRequest(job.job_id, self.paths.spool, job.inputs["source"], target,
                                 tdir / "out" / target.name, opts, self.cfg.job_timeout_seconds)
            placement = self.dispatcher.submit(request)
            pid = self.dispatcher.worker_pid(job.job_id) if isinstance(self.dispatcher, LocalDispatcher) else None
            self.book.started(job, placement, worker_pid=pid)
        self.book.publish_queue()

    def handle(self, event: DispatchEvent) -> None:
        """Act on one backend event."""
        assert self.book is not None
        if event.kind == "ready":
            self.audit.append("worker_ready", **event.info)
            if not self.ready_sent and self.dispatcher.ready:
                self.ready_sent = True
                self.metrics.up.set(1)
                self.notifier.ready(self._status_text())
        elif event.kind == "progress" and event.job_id:
            self.book.progress(event.job_id, event.progress)
        elif event.kind == "placed" and event.job_id in self.book.running:
            self.book.placed(self.book.running[event.job_id], event.info)
        elif event.kind == "done" and event.job_id in self.book.running:
            self.book.complete(self.book.running.pop(event.job_id), event.report, event.seconds or 0.0,
                               committed=event.committed, placement=event.info)
        elif event.kind == "failed" and event.job_id in self.book.running:
            assert event.error is not None
            self.book.fail(self.book.running.pop(event.job_id), event.error, seconds=event.seconds)
        elif event.kind == "worker_restarted":
            reason = str(event.info.get("reason"))
            self.metrics.worker_restarts.labels(reason).inc()
            self.audit.append("worker_restarted", job=event.job_id,
                              **{k: v for k, v in event.info.items()})

    def _provenance_status(self) -> dict[str, Any]:
        """Load the C2PA signing key once here too, so a broken key stops the start with its reason and
        an unsigned appliance says so in the journal, the audit log and `systemctl status`."""
        from sealfuse.engine import Provenance, ProvenanceConfig, ProvenanceError

        try:
            status = Provenance(ProvenanceConfig.from_dict(self.cfg.provenance())).status()
        except ProvenanceError as exc:
            raise errors.ConfigError(f"[provenance]: {exc.message}") from None
        if not status["signing"]:
            print(f"sealfuse watch: WARNING: {status['message']}", file=sys.stderr, flush=True)
        return status

    # ---------------------------------------------------------------- status
    def _status_text(self) -> str:
        assert self.book is not None
        running = []
        for job_id, prog in self.dispatcher.running().items():
            frame = f" frame {prog.get('frame')}/{prog.get('total')}" if prog.get("frame") else ""
            running.append(f"{job_id}{frame}")
        state = "stopping" if self.stopping else ("ready" if self.ready_sent else "loading models")
        unsigned = "" if self.signing.get("signing", True) else "; outputs UNSIGNED (no C2PA key)"
        return (f"{state}; queue {len(self.book.queue) + self.watcher.pending_drops()}; "
                f"running {', '.join(running) if running else 'none'}{unsigned}")

    def _write_metrics(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_metrics < 5:
            return
        self._last_metrics = now
        if self.book is not None:
            self.metrics.set_queue(pending=self.watcher.pending_drops(), queued=len(self.book.queue),
                                   running=len(self.book.running))
        self.metrics.write()

    def _report_status(self) -> None:
        text = self._status_text()
        now = time.monotonic()
        if text != self._last_status and now - self._last_status_t >= 0.5:
            self._last_status, self._last_status_t = text, now
            self.notifier.status(text)

    # ---------------------------------------------------------------- main loop
    def _drained(self) -> bool:
        # Loose media in inbox/ waits for its manifest (or orphan_seconds); it does not hold --once.
        assert self.book is not None
        return not self.book.queue and not self.book.running and self.watcher.pending_drops() == 0

    def run(self) -> int:
        """Set up, loop until stopped (or drained with --once), shut down; the exit code."""
        self.setup()
        assert self.book is not None
        interval = self.notifier.watchdog_interval
        while True:
            now = time.monotonic()
            if interval and now >= self._next_ping:
                self.notifier.watchdog()
                self._next_ping = now + interval
            if self.stopping and (not self.book.running or now >= self.stop_deadline
                                  or self.dispatcher.keeps_jobs_across_restart):
                break
            if self.once and self.ready_sent and self._drained():
                break
            timeout = min(0.25, self.cfg.scan_interval, self.cfg.rss_poll_seconds)
            if interval:
                timeout = max(0.0, min(timeout, self._next_ping - now))
            fds = [self.watcher.fileno(), self._wake_r, *self.dispatcher.wait_fds()]
            readable: list[int] = []
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select(fds, [], [], timeout)
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 64)
            if self.stopping:
                self._announce_stop()
                self.book.requeue_all()
            else:
                self.watcher.handle_events()
                if time.monotonic() - self.watcher.last_scan >= self.cfg.scan_interval:
                    self.watcher.scan()
                self.evaluate()
            for event in self.dispatcher.poll():
                self.handle(event)
            self.dispatch()
            self.book.status.flush()
            self._report_status()
            self._write_metrics()
        return self.shutdown()

    def _announce_stop(self) -> None:
        if not self._stop_announced:
            assert self.book is not None
            self._stop_announced = True
            self.notifier.stopping()
            self.audit.append("stopping", grace_seconds=self.cfg.shutdown_grace_seconds,
                              running=list(self.book.running))

    def shutdown(self) -> int:
        """Jobs still running past the grace period go back to the inbox; then close."""
        assert self.book is not None
        if isinstance(self.dispatcher, LocalDispatcher):
            self.dispatcher.stopping = True  # workers cancelled now are not restarted
        if self.dispatcher.keeps_jobs_across_restart:
            # Cluster jobs keep running and keep their claims; the next start adopts them.
            self.book.running.clear()
        for job_id in list(self.book.running):
            self.dispatcher.cancel(job_id)
            self.book.queue.append(self.book.running.pop(job_id))
        self.book.requeue_all()
        self.audit.append("stopped", pid=os.getpid(), signal=self.stopping)
        self.close()
        return errors.EXIT_OK


def _file_digest(path: str | None) -> str | None:
    if not path or not os.path.isfile(path):
        return None
    return sha256_file(Path(path))[0]

