"""A real systemd as PID 1 in fresh namespaces, for system tests (scripts in tests/system/ct/).

`Container.boot(...)` runs ct/up.sh; `run` executes a command inside via nsenter; `down` powers
it off. One container at a time per state directory.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CT_DIR = Path(__file__).resolve().parent / "ct"


def skip_reason() -> str | None:
    """Why system tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "system tests boot systemd in namespaces and need root"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"system tests need {tool} (util-linux)"
    return None


class ContainerError(RuntimeError):
    """The container did not boot, or a command inside it failed."""


@dataclass
class Container:
    state: Path
    pid1: int

    @classmethod
    def boot(cls, state: Path, *, extra: Path | None = None,
             binds: Sequence[tuple[Path, str]] = ()) -> Container:
        env = {**os.environ, "CT_STATE": str(state), "CT_EXTRA": str(extra or ""),
               "CT_BIND": " ".join(f"{src}:{dst}" for src, dst in binds)}
        result = subprocess.run([str(CT_DIR / "up.sh")], env=env, capture_output=True, text=True,
                                timeout=60)
        pid_file = state / "pid1"
        pid = pid_file.read_text().strip() if pid_file.exists() else ""
        if result.returncode != 0 or not pid:
            subprocess.run([str(CT_DIR / "down.sh")], env=env, capture_output=True, timeout=60)
            log = (state / "unshare.log").read_text() if (state / "unshare.log").exists() else ""
            raise ContainerError(f"container did not boot: {result.stdout}{result.stderr}{log}")
        return cls(state, int(pid))

    def run(self, cmd: str | Sequence[str], *, check: bool = True, timeout: float = 120,
            input: str | None = None, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run a command (a shell string or argv) in all of the container's namespaces."""
        argv = ["bash", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if env:
            argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
        full = ["nsenter", "-t", str(self.pid1), "-a", *argv]
        result = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise ContainerError(f"{shlex.join(argv)} exited {result.returncode}\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, *(f"-p{p}" for p in props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, lines: int = 200) -> str:
        return self.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager", "-n", str(lines)],
                        check=False).stdout

    def wait_for(self, cmd: str, *, timeout: float = 60, interval: float = 0.5) -> str:
        """Run `cmd` until it exits 0; return its stdout. Raise ContainerError at the timeout."""
        deadline = time.monotonic() + timeout
        last: subprocess.CompletedProcess[str] | None = None
        while time.monotonic() < deadline:
            last = self.run(cmd, check=False, timeout=max(5.0, timeout))
            if last.returncode == 0:
                return last.stdout
            time.sleep(interval)
        raise ContainerError(f"timed out after {timeout}s waiting for: {cmd}\n"
                             f"last: {last.stdout if last else ''}{last.stderr if last else ''}")

    def down(self) -> None:
        env = {**os.environ, "CT_STATE": str(self.state)}
        subprocess.run([str(CT_DIR / "down.sh")], env=env, capture_output=True, timeout=90)
