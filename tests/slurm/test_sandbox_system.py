"""The Slurm drop-in under a real systemd: the watch unit's own sandbox plus hardening/slurm.conf lets
the Slurm client reach the controller (and munged) and nothing else; without it, no IP at all.

A container (tests/system/ct) gets a veth interface with two private addresses; munged, slurmctld
and slurmd run on 192.0.2.10. A probe runs as the `sealfuse` user inside sealfuse-watch.service's
exact sandbox (the shipped unit, only its ExecStart and Type replaced) with and without the drop-in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm.slurmlib import skip_reason as slurm_skip_reason
from tests.system.container import Container, skip_reason

pytestmark = [pytest.mark.system, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
STATE = Path("/tmp/sealfuse-ct-slurm")
CTL, OTHER = "192.0.2.10", "192.0.2.11"
BLOCKED = ("EPERM", "timed out")
SLURM_ROOT = "/srv/sf-slurm"
PROBE = """
import errno, json, os, socket, subprocess
port = int(os.environ["CTL_PORT"])
out = {}
def run(*argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return [r.returncode, r.stdout.strip(), r.stderr.strip()[-300:]]
    except OSError as e:
        return [-1, "", str(e)]
def tcp(addr):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    s.settimeout(3)
    try:
        s.connect((addr, port))
        return "connected"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
    finally:
        s.close()
out["squeue"] = run("squeue", "-h", "-o", "%i")
out["sbatch"] = run("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true")
out["controller"] = tcp(os.environ["CTL"])
out["loopback"] = tcp("127.0.0.1")
out["other"] = tcp(os.environ["OTHER"])
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
    out["netlink"] = "allowed"
except OSError as e:
    out["netlink"] = errno.errorcode.get(e.errno, str(e))
with open("/var/lib/sealfuse/state/probe.json", "w") as f:
    json.dump(out, f)
"""


@pytest.fixture(scope="module")
def ct() -> Iterator[tuple[Container, int]]:
    reason = skip_reason() or slurm_skip_reason()
    if reason:
        pytest.skip(reason)
    container = Container.boot(STATE, binds=[(REPO, str(REPO))])
    try:
        # A veth pair inside the container's own network namespace (no dummy module needed).
        container.run(f"ip link add sfa type veth peer name sfb && ip addr add {CTL}/24 dev sfa && "
                      f"ip addr add {OTHER}/24 dev sfa && ip link set sfa up && ip link set sfb up && "
                      "ip link set lo up")
        out = container.run(
            ["env", f"PYTHONPATH={REPO}", "PYTHONDONTWRITEBYTECODE=1", "/usr/bin/python3", "-c",
             "from pathlib import Path\nfrom tests.slurm.slurmlib import SlurmCluster\n"
             f"c = SlurmCluster(Path('{SLURM_ROOT}'), address='{CTL}').start()\nprint(c.ctld_port)"],
            timeout=120).stdout
        port = int(out.strip().splitlines()[-1])
        container.run(f"systemd-sysusers {REPO}/systemd/sysusers.d/sealfuse.conf && "
                      "mkdir -p /opt/sealfuse /var/lib/sealfuse/spool /var/lib/sealfuse/state "
                      "/var/lib/sealfuse/audit /var/lib/sealfuse/metrics && "
                      "chown sealfuse: /var/lib/sealfuse/state")
        container.run("cat > /srv/probe.py", input=PROBE)
        yield container, port
    finally:
        container.down()


def _probe(ct: Container, port: int, *, slurm_dropin: bool) -> dict[str, object]:
    unit = "sf-probe.service"
    d = f"/etc/systemd/system/{unit}.d"
    ct.run(f"rm -rf {d} && mkdir -p {d} && cp {REPO}/systemd/sealfuse-watch.service "
           f"/etc/systemd/system/{unit} && rm -f /var/lib/sealfuse/state/probe.json")
    ct.run(f"cat > {d}/00-probe.conf", input=(
        "[Service]\nType=oneshot\nWatchdogSec=0\nExecStart=\nExecStart=/usr/bin/python3 /srv/probe.py\n"
        f"Environment=SLURM_CONF={SLURM_ROOT}/etc/slurm.conf CTL_PORT={port} CTL={CTL} OTHER={OTHER}\n"))
    if slurm_dropin:
        text = (REPO / "hardening" / "slurm.conf").read_text()
        ct.run(f"cat > {d}/slurm.conf", input=text.replace("IPAddressAllow=192.0.2.10", f"IPAddressAllow={CTL}"))
    ct.run("systemctl daemon-reload")
    ct.run(f"systemctl start {unit}", timeout=120)
    return json.loads(ct.run("cat /var/lib/sealfuse/state/probe.json").stdout)


def test_with_the_dropin_the_slurm_client_reaches_only_the_controller(ct: tuple[Container, int]) -> None:
    container, port = ct
    out = _probe(container, port, slurm_dropin=True)
    assert out["squeue"][0] == 0, out
    assert out["sbatch"][0] == 0 and str(out["sbatch"][1]).split(";")[0].isdigit(), out
    assert out["controller"] == "connected"
    # IPAddressDeny=any drops the packets (connect fails with EPERM or never completes): even the
    # host's own services on loopback, and another address of the same host, are out of reach.
    assert out["loopback"] in BLOCKED, out
    assert out["other"] in BLOCKED, out
    assert out["netlink"] == "EAFNOSUPPORT"  # RestrictAddressFamilies keeps everything else out


def test_outside_the_sandbox_the_same_probe_reaches_every_address(ct: tuple[Container, int]) -> None:
    """The denials above are the sandbox's doing: unsandboxed, loopback and the other address answer."""
    container, port = ct
    container.run(["env", f"SLURM_CONF={SLURM_ROOT}/etc/slurm.conf", f"CTL_PORT={port}", f"CTL={CTL}",
                   f"OTHER={OTHER}", "/usr/bin/python3", "/srv/probe.py"])
    out = json.loads(container.run("cat /var/lib/sealfuse/state/probe.json").stdout)
    assert out["loopback"] == "connected" and out["other"] == "connected", out
    assert out["netlink"] == "allowed"


def test_without_the_dropin_the_unit_has_no_ip_at_all(ct: tuple[Container, int]) -> None:
    container, port = ct
    out = _probe(container, port, slurm_dropin=False)
    assert out["squeue"][0] != 0
    assert out["controller"] == "EAFNOSUPPORT"
