"""Slurm's client commands for the Slurm backend: settings, errors, sbatch/squeue/scontrol/sacct."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealfuse.appliance.watch import errors

# Slurm's long state names -> what they mean for a sealfuse job.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
          "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
          "RESV_DEL_HOLD", "SPECIAL_EXIT", "UNKNOWN_ACTIVE"}
TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"}
# Lost runs: the job itself did not fail; the run was taken away. `retry_on` names which of these
# are resubmitted (up to `retries` times).
LOST_KINDS = ("node_fail", "preempted", "cancelled", "killed")
COMMANDS = ("sbatch", "squeue", "scontrol", "scancel")  # required; sacct is used when it answers
LOG_TAIL = 2000


class SlurmNodeFailError(errors.JobError):
    """The node running the job failed (Slurm NODE_FAIL or BOOT_FAIL) and no retry was left."""

    reason = "node_fail"


class SlurmPreemptedError(errors.JobError):
    """Slurm preempted the job and no retry was left."""

    reason = "preempted"


class SlurmCancelledError(errors.JobError):
    """The Slurm job was cancelled outside sealfuse (scancel) and no retry was left."""

    reason = "cancelled"


class SlurmJobFailedError(errors.JobError):
    """The batch step ended without committing a result and without an engine error (for example
    `sealfuse run-job` is missing on the node or the spool is not mounted there)."""

    reason = "slurm_failed"


class SlurmSubmitError(errors.JobError):
    """sbatch refused the job (bad partition, account, GRES...) or the controller stayed unreachable."""

    reason = "submit_failed"


@dataclass(frozen=True)
class SlurmSettings:
    """`[dispatch.slurm]` of the watch config (docs/cluster.md)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gres: str | None = None  # per job, e.g. "gpu:1"
    cpus_per_task: int | None = None
    mem_mb: int | None = None
    time_limit_minutes: int | None = None  # default: job_timeout_seconds rounded up to minutes
    extra_args: tuple[str, ...] = ()
    max_jobs: int = 32  # Slurm jobs in flight at once
    retries: int = 1  # resubmissions of a lost run
    retry_on: tuple[str, ...] = ("node_fail", "preempted")
    poll_seconds: float = 2.0
    submit_timeout_seconds: float = 600.0  # sbatch failing this long fails the job (submit_failed)
    command: tuple[str, ...] = ()  # sealfuse on the nodes; default: this release's interpreter
    node_tmp_dir: str | None = None  # run-job's scratch on the node; default $TMPDIR or /tmp
    bin_dir: str | None = None  # where sbatch & co. live; default: $PATH
    job_name_prefix: str = "sealfuse"
    command_timeout_seconds: float = 20.0

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> SlurmSettings:
        data = dict(table)
        for key in ("extra_args", "retry_on", "command"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)



class SlurmCommands:
    """Runs and parses Slurm's client commands; mixed into `SlurmDispatcher` (uses its `s`, `env`,
    `metrics` and `_sacct_ok`)."""

    s: SlurmSettings
    env: dict[str, str]
    metrics: Any
    _sacct_ok: bool | None

    def _exe(self, name: str) -> str:
        if self.s.bin_dir:
            return str(Path(self.s.bin_dir) / name)
        return shutil.which(name, path=self.env.get("PATH")) or name

    def _run(self, name: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command; a failure (exit status, timeout, missing binary) is counted."""
        try:
            r = subprocess.run([self._exe(name), *args], input=stdin, capture_output=True, text=True,
                               env=self.env, timeout=self.s.command_timeout_seconds)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._command_error(name)
            return subprocess.CompletedProcess([name, *args], 127, "", str(exc))
        if r.returncode != 0:
            self._command_error(name)
        return r

    def _command_error(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.slurm_errors.labels(name).inc()

    def _listing(self) -> dict[str, tuple[str, str, str]] | None:
        """Slurm job id -> (state, nodes, reason) for this user's jobs; None if squeue failed."""
        r = self._run("squeue", "--me", "-h", "-t", "all", "-o", "%i|%T|%N|%r")
        if r.returncode != 0:
            return None
        out = {}
        for line in r.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4:
                out[parts[0]] = (parts[1], parts[2], parts[3])
        return out

    def _show(self, slurm_id: str) -> dict[str, str]:
        r = self._run("scontrol", "-o", "show", "job", slurm_id)
        if r.returncode != 0:
            return {}
        fields = {}
        for tok in r.stdout.split():
            key, sep, value = tok.partition("=")
            if sep:
                fields.setdefault(key, value)
        return fields

    def _sacct(self, slurm_id: str) -> tuple[str, str, str] | None:
        """(state, exit code, nodes) of a finished job from Slurm's accounting (slurmdbd), for jobs
        slurmctld has already forgotten (MinJobAge); None without accounting or a record."""
        if self._sacct_ok is False or not slurm_id:
            return None
        try:
            r = subprocess.run([self._exe("sacct"), "-n", "-P", "-X", "-j", slurm_id, "-o",
                                "JobIDRaw,State,ExitCode,NodeList"], capture_output=True, text=True,
                               env=self.env, timeout=self.s.command_timeout_seconds)
        except (OSError, subprocess.TimeoutExpired):
            self._sacct_ok = False
            return None
        if r.returncode != 0:
            if "disabled" in r.stderr.lower() or "accounting_storage/none" in r.stderr.lower():
                self._sacct_ok = False  # no slurmdbd on this cluster: squeue/scontrol only
            else:
                self._command_error("sacct")
            return None
        self._sacct_ok = True
        for line in r.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4 and parts[0] == slurm_id:
                return parts[1].split()[0].rstrip("+"), parts[2], parts[3]
        return None


def signal_of(exit_code: str) -> int:
    """scontrol's ExitCode=<status>:<signal> -> the signal (0: none)."""
    _, _, sig = exit_code.partition(":")
    return int(sig) if sig.isdigit() else 0


def tail_of(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
