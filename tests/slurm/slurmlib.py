"""A real single-node Slurm (munged + slurmctld + slurmd as plain processes) on private ports and
directories, with a fake GPU GRES; used by the Slurm tests and `bench/slurm.py`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NODE = "sfnode1"
PARTITION = "sfpart"
DAEMONS = ("munged", "slurmctld", "slurmd", "mungekey", "sbatch", "squeue", "scontrol", "scancel")
ACCOUNTING = ("slurmdbd", "mariadbd", "mariadb-install-db", "sacct", "sacctmgr")


def skip_reason() -> str | None:
    """Why a real Slurm cannot run here, or None."""
    missing = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if missing:
        return f"Slurm tests need slurm-wlm and munge ({', '.join(missing)} not found)"
    if os.geteuid() != 0:
        return "the Slurm test cluster runs slurmd, which needs root"
    return None


def accounting_skip_reason() -> str | None:
    """Why Slurm accounting (slurmdbd + MariaDB, for sacct) cannot run here, or None."""
    missing = [d for d in ACCOUNTING if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if missing:
        return f"Slurm accounting needs slurmdbd and mariadb-server ({', '.join(missing)} not found)"
    return skip_reason()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exe(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise FileNotFoundError(name)
    return found


class SlurmCluster:
    """munged, slurmctld and slurmd for one node named NODE, everything under `root`.

    `env` is what a Slurm client (sbatch, squeue, the daemon) needs: SLURM_CONF pointing at the
    private slurm.conf. `RequeueExit=` is left out on purpose: the watch service resubmits lost
    runs itself (its retry count is configuration, and Slurm's requeue delay is 120 s).
    """

    def __init__(self, root: Path, *, cpus: int | None = None, address: str = "127.0.0.1",
                 accounting: bool = False, min_job_age: int = 600) -> None:
        self.root = root
        self.address = address  # where slurmctld and slurmd listen (a private address)
        # accounting: MariaDB + slurmdbd on 127.0.0.1 as well, so that sacct answers
        self.accounting = accounting
        self.min_job_age = min_job_age  # seconds slurmctld keeps a finished job (squeue/scontrol)
        self.db_port = free_port()
        self.dbd_port = free_port()
        self.cpus = cpus or max(2, os.cpu_count() or 2)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.munge_dir = root / "munge"
        self.socket = self.munge_dir / "munge.socket"
        self.conf = root / "etc" / "slurm.conf"
        self.jobcomp = root / "log" / "jobcomp.txt"
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------------------- config
    def write_config(self) -> None:
        for d in ("etc", "state", "spool", "log", "munge"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        # munged refuses group/world-writable dirs; clients must be able to reach the socket.
        for d in (self.root, self.munge_dir):
            os.chmod(d, 0o755)
        r = self.root
        lines = [
            "ClusterName=sealfusetest",
            f"SlurmctldHost=localhost({self.address})",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"AuthInfo=socket={self.socket}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool/slurmd-%n",
            f"SlurmctldPidFile={r}/state/slurmctld.pid",
            f"SlurmdPidFile={r}/spool/slurmd-%n.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp}",
            *(["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
               f"AccountingStoragePort={self.dbd_port}",
               f"AccountingStoragePass={self.socket}"]  # the munge socket, for slurmdbd connections
              if self.accounting
              else ["AccountingStorageType=accounting_storage/none"]),
            "JobAcctGatherType=jobacct_gather/none",
            "MailProg=/bin/true",
            "GresTypes=gpu",
            # Short waits so that a timed-out or cancelled job ends quickly.
            "KillWait=2",
            "OverTimeLimit=0",
            "InactiveLimit=0",
            f"MinJobAge={self.min_job_age}",
            "DefMemPerCPU=256",
            "MessageTimeout=10",
            "SlurmdTimeout=30",
            "SlurmctldTimeout=30",
            f"NodeName={NODE} NodeAddr={self.address} NodeHostname={NODE} CPUs={self.cpus} "
            f"RealMemory=4096 Gres=gpu:fake:1 State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        if self.accounting:
            dbd = self.conf.parent / "slurmdbd.conf"
            dbd.write_text("\n".join([
                "AuthType=auth/munge", f"AuthInfo=socket={self.socket}", "DbdHost=localhost",
                "DbdAddr=127.0.0.1", f"DbdPort={self.dbd_port}", "SlurmUser=root",
                "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
                f"StoragePort={self.db_port}", "StorageUser=root", "StorageLoc=slurm_acct_db",
                f"PidFile={r}/state/slurmdbd.pid", f"LogFile={r}/log/slurmdbd.log"]) + "\n")
            os.chmod(dbd, 0o600)
        # A fake GPU: no device node, but --gres=gpu:1 sets CUDA_VISIBLE_DEVICES.
        (self.conf.parent / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={NODE} Name=gpu Type=fake File=/dev/null\n")

    # ------------------------------------------------------------------------------- run
    def start(self, timeout: float = 30) -> SlurmCluster:
        self.write_config()
        key = self.munge_dir / "munge.key"
        if not key.exists():
            subprocess.run([_exe("mungekey"), "-c", "-k", str(key)], check=True,
                           capture_output=True)
        os.chmod(key, 0o400)
        self.procs["munged"] = subprocess.Popen(
            [_exe("munged"), "-F", "-f", f"--socket={self.socket}", f"--key-file={key}",
             f"--log-file={self.root}/log/munged.log", f"--pid-file={self.munge_dir}/munged.pid",
             f"--seed-file={self.munge_dir}/munged.seed", "--num-threads=2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait(lambda: self.socket.exists(), timeout, "munged's socket")
        os.chmod(self.munge_dir, 0o755)
        if self.accounting:
            self._start_accounting(timeout)
        self.procs["slurmctld"] = subprocess.Popen(
            [_exe("slurmctld"), "-D", "-c", "-i", "-f", str(self.conf)], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.start_slurmd()
        self._wait(self.node_idle, timeout, f"node {NODE} to be idle")
        return self

    def _start_accounting(self, timeout: float) -> None:
        """MariaDB (no grant tables, 127.0.0.1 only) and slurmdbd; the cluster registered in it."""
        data = self.root / "db"
        if not data.exists():
            subprocess.run([_exe("mariadb-install-db"), f"--datadir={data}", "--user=root",
                            "--auth-root-authentication-method=normal", "--skip-test-db"],
                           check=True, capture_output=True, timeout=120)
        self.procs["mariadbd"] = subprocess.Popen(
            [_exe("mariadbd"), f"--datadir={data}", f"--port={self.db_port}", "--bind-address=127.0.0.1",
             f"--socket={self.root}/db.sock", "--user=root", "--skip-grant-tables",
             f"--pid-file={self.root}/db.pid", f"--log-error={self.root}/log/mariadb.log",
             "--innodb-buffer-pool-size=32M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs["slurmdbd"] = subprocess.Popen(
            [_exe("slurmdbd"), "-D"], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def registered() -> bool:
            r = self.run("sacctmgr", "-i", "add", "cluster", "sealfusetest", check=False, timeout=10)
            return r.returncode == 0 or "already exists" in (r.stdout + r.stderr).lower()

        self._wait(registered, timeout * 2, "slurmdbd to register the cluster")

    def start_slurmd(self) -> None:
        self.procs["slurmd"] = subprocess.Popen(
            [_exe("slurmd"), "-D", "-N", NODE, "-f", str(self.conf)], env=self.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        # Jobs first (their steps are children of slurmstepd, not of slurmd).
        with contextlib.suppress(Exception):
            self.run("scancel", "--full", "-u", "root", check=False, timeout=10)
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            p = self.procs.pop(name, None)
            if p is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self._kill_stepds()

    def _kill_stepds(self) -> None:
        """slurmstepd processes of this cluster that outlived slurmd (found by their conf path)."""
        spool = str(self.root / "spool")
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                environ = (pid_dir / "environ").read_bytes()
                cmd = (pid_dir / "cmdline").read_bytes()
            except OSError:
                continue
            if (b"slurmstepd" in cmd and spool.encode() in environ) or \
                    f"SLURM_CONF={self.conf}".encode() in environ.split(b"\0"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid_dir.name), signal.SIGKILL)

    # ------------------------------------------------------------------------------- clients
    def run(self, *argv: str, check: bool = True, timeout: float = 30
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([_exe(argv[0]), *argv[1:]], env=self.env, capture_output=True,
                              text=True, check=check, timeout=timeout)

    def node_state(self) -> str:
        r = self.run("sinfo", "-h", "-N", "-n", NODE, "-o", "%T", check=False)
        return r.stdout.strip() if r.returncode == 0 else ""

    def node_idle(self) -> bool:
        return self.node_state() in ("idle", "mixed", "allocated")

    def job_field(self, job_id: str, name: str) -> str | None:
        r = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        for tok in r.stdout.split():
            k, _, v = tok.partition("=")
            if k == name:
                return v
        return None

    def jobcomp_records(self) -> list[dict[str, str]]:
        if not self.jobcomp.exists():
            return []
        out = []
        for line in self.jobcomp.read_text().splitlines():
            rec = {}
            for tok in line.split():
                k, _, v = tok.partition("=")
                rec[k] = v
            out.append(rec)
        return out

    def log(self, name: str = "slurmctld") -> str:
        p = self.root / "log" / (f"slurmd-{NODE}.log" if name == "slurmd" else f"{name}.log")
        return p.read_text(errors="replace") if p.exists() else ""

    @staticmethod
    def _wait(pred: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
