"""`sealfuse install`, `rollback`, `uninstall`, `status`, `doctor` on a tree below --root, with
real signed bundles, real venvs and pip, real systemd-sysusers/tmpfiles, and a systemd stand-in
that starts a release unless the release itself says it fails."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealfuse.appliance.cli import doctor, install, rollback, status, uninstall
from sealfuse.appliance.errors import (
    NothingToRollBackError,
    PlatformMismatchError,
    ReleaseRunningError,
    RolledBackError,
    ServiceDownError,
    SystemdError,
    TrustRequiredError,
    VenvError,
)
from sealfuse.appliance.install import InstallOptions
from sealfuse.appliance.install import install as do_install
from sealfuse.appliance.install import rollback as do_rollback
from sealfuse.appliance.release import InstallRecord, Layout
from sealfuse.appliance.uninstall import uninstall as do_uninstall
from sealfuse.engine.registry import read_lock
from sealfuse.verifier.errors import BadVersionNumberError, HashMismatchError, RotationError
from sealfuse.verifier.trust import load_trust
from tests.install.installlib import UNIT, FakeSystemd, write_trust

pytestmark = pytest.mark.slow


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """path -> (mode, size, link target) for everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size if p.is_file() else 0,
                                             os.readlink(p) if p.is_symlink() else "")
    return out


def audit_events(layout: Layout) -> list[dict]:
    return [json.loads(line) for line in layout.audit_log.read_text().splitlines()]


def opts(trust: Path | None = None, **kw) -> InstallOptions:
    return InstallOptions(trust=trust, settle=0, **kw)


def test_first_install_verifies_pins_trust_builds_venv_and_switches_current(
        root: Path, make_bundle, trust_file: Path) -> None:
    layout = Layout(root)
    sd = FakeSystemd(layout)
    result = do_install(make_bundle("1"), opts(trust_file), layout, sd)

    assert (result.version, result.previous, result.started, result.trust) == \
        ("1", None, True, "first-pin")
    assert os.readlink(layout.current) == "releases/1"
    assert layout.trust.read_bytes() == trust_file.read_bytes()
    venv_python = layout.release("1") / "venv" / "bin" / "python"
    assert Path(os.path.realpath(venv_python)).resolve() == Path("/usr/bin/python3").resolve()
    assert (layout.release("1") / "venv" / "bin" / "sealfuse").exists()
    models = layout.release("1") / "models"
    assert stat.S_IMODE(models.stat().st_mode) == 0o555
    model = models / "detector-standin.onnx"
    assert stat.S_IMODE(model.stat().st_mode) == 0o444 and model.stat().st_uid == 0
    # the engine's registry gets the signed pins of every shipped model
    pins = read_lock(models)
    assert pins["detector-standin.onnx"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert not (layout.release("1") / "payload" / "wheels").exists()
    assert layout.unit_file.read_bytes() == UNIT.read_bytes()
    assert "sealfuse:" in (root / "etc/passwd").read_text()
    assert stat.S_IMODE((layout.spool / "inbox").stat().st_mode) == 0o3770
    assert (root / "etc/systemd/system/multi-user.target.wants" / UNIT.name).is_symlink()
    assert InstallRecord.load(layout).current == "1"
    events = [e["event"] for e in audit_events(layout)]
    assert events[:3] == ["install", "trust_first_pin", "service_ready"]
    assert sd.calls == ["daemon-reload", "restart 1"]


def test_first_install_without_trust_is_refused_and_writes_nothing(root: Path, make_bundle) -> None:
    before = snapshot(root)
    with pytest.raises(TrustRequiredError) as err:
        do_install(make_bundle("1"), opts(), Layout(root), FakeSystemd(Layout(root)))
    assert err.value.exit_code == 85
    assert snapshot(root) == before


def test_tampered_bundle_is_refused_and_changes_nothing(
        root: Path, make_bundle, trust_file: Path) -> None:
    layout = Layout(root)
    do_install(make_bundle("1"), opts(trust_file), layout, FakeSystemd(layout))
    bad = make_bundle("2")
    data = bytearray(bad.read_bytes())
    i = data.rindex(b"stand-in model bytes")
    data[i] ^= 0x20
    bad.write_bytes(bytes(data))
    before = snapshot(root)
    with pytest.raises(HashMismatchError):
        do_install(bad, opts(), layout, FakeSystemd(layout))
    after = snapshot(root)
    audit = "var/lib/sealfuse/audit/audit.jsonl"
    assert {k: v for k, v in after.items() if k != audit} == \
        {k: v for k, v in before.items() if k != audit}
    last = audit_events(layout)[-1]
    assert last["event"] == "install_refused" and last["error"] == "HashMismatchError"


def test_upgrade_then_failed_start_returns_to_previous_release(
        root: Path, make_bundle, trust_file: Path) -> None:
    layout = Layout(root)
    sd = FakeSystemd(layout)
    do_install(make_bundle("1"), opts(trust_file), layout, sd)
    do_install(make_bundle("2"), opts(), layout, sd)
    assert layout.current_version() == "2"
    with pytest.raises(RolledBackError) as err:
        do_install(make_bundle("3", fail_start=True), opts(), layout, sd)
    assert err.value.exit_code == 81
    assert err.value.evidence["restored"] == "2"
    assert "models missing" in err.value.evidence["journal"]
    assert layout.current_version() == "2"
    assert not layout.release("3").exists()
    assert [c for c in sd.calls if c.startswith("restart")][-2:] == ["restart 3", "restart 2"]
    assert InstallRecord.load(layout).current == "2"
    assert audit_events(layout)[-1]["event"] == "install_rolled_back"


class TmpfilesFailsFor2(FakeSystemd):
    """systemd-tmpfiles fails once release 2 is switched in (after `current` moved)."""

    def tmpfiles(self) -> None:
        if self.layout.current_version() == "2":
            raise SystemdError("systemd-tmpfiles --create exited 1 (stand-in failure)")
        super().tmpfiles()


def test_a_systemd_failure_after_the_switch_returns_to_the_previous_release(
        root: Path, make_bundle, trust_file: Path) -> None:
    layout = Layout(root)
    do_install(make_bundle("1"), opts(trust_file), layout, FakeSystemd(layout))
    sd = TmpfilesFailsFor2(layout)
    with pytest.raises(RolledBackError) as err:
        do_install(make_bundle("2"), opts(), layout, sd)
    assert err.value.exit_code == 81 and "systemd_failed" in err.value.evidence["reason"]
    assert isinstance(err.value.__cause__, SystemdError)
    assert layout.current_version() == "1" and InstallRecord.load(layout).current == "1"
    assert sorted(p.name for p in layout.releases.iterdir()) == ["1"]
    assert sd.calls[-1] == "restart 1"
    assert audit_events(layout)[-1]["event"] == "install_rolled_back"


def test_failed_first_install_stops_and_leaves_no_release(
        root: Path, make_bundle, trust_file: Path) -> None:
    layout = Layout(root)
    with pytest.raises(ServiceDownError) as err:
        do_install(make_bundle("1", fail_start=True), opts(trust_file), layout,
                   FakeSystemd(layout))
    assert err.value.exit_code == 82
    assert not layout.current.is_symlink() and not layout.release("1").exists()
    assert not layout.unit_file.exists() and not layout.trust.exists()


def test_downgrade_and_reinstall_are_refused_unless_allowed_and_audited(
        root: Path, make_bundle, trust_file: Path) -> None:
    layout = Layout(root)
    sd = FakeSystemd(layout)
    b1 = make_bundle("1")
    do_install(b1, opts(trust_file), layout, sd)
    do_install(make_bundle("2"), opts(), layout, sd)
    with pytest.raises(BadVersionNumberError) as err:
        do_install(b1, opts(), layout, sd)
    assert err.value.exit_code == 41 and layout.current_version() == "2"
    with pytest.raises(ReleaseRunningError):
        do_install(make_bundle("2"), opts(allow_downgrade=True), layout, sd)
    result = do_install(b1, opts(allow_downgrade=True), layout, sd)
    assert result.downgrade and layout.current_version() == "1"
    installs = [e for e in audit_events(layout) if e["event"] == "install"]
    assert installs[-1]["downgrade"] is True and installs[-1]["previous"] == "2"


def test_other_trust_is_refused_unless_a_rotation_signed_by_the_pinned_key(
        root: Path, make_bundle, trust_file: Path, signing_key: Ed25519PrivateKey,
        tmp_path: Path) -> None:
    layout = Layout(root)
    sd = FakeSystemd(layout)
    do_install(make_bundle("1"), opts(trust_file), layout, sd)
    new_key = Ed25519PrivateKey.generate()
    stranger = write_trust(tmp_path / "stranger.json", [new_key], version=2)
    with pytest.raises(RotationError):
        do_install(make_bundle("2", key=new_key), opts(stranger), layout, sd)
    assert layout.trust.read_bytes() == trust_file.read_bytes()
    rotated = load_trust(stranger).with_signature(signing_key)
    rotated.write(tmp_path / "rotated.json")
    result = do_install(make_bundle("2", key=new_key), opts(tmp_path / "rotated.json"), layout, sd)
    assert result.trust == "rotated"
    assert load_trust(layout.trust).version == 2


def test_bundle_for_another_python_is_refused_before_anything_is_written(
        root: Path, make_bundle, trust_file: Path) -> None:
    before = snapshot(root)
    with pytest.raises(PlatformMismatchError) as err:
        do_install(make_bundle("1", python_version="3.12"), opts(trust_file), Layout(root),
                   FakeSystemd(Layout(root)))
    assert err.value.exit_code == 87 and "cp312" in err.value.message
    assert snapshot(root) == before


def test_broken_wheel_fails_pip_and_switches_nothing(
        root: Path, make_bundle, trust_file: Path, tmp_path: Path) -> None:
    layout = Layout(root)
    sd = FakeSystemd(layout)
    do_install(make_bundle("1"), opts(trust_file), layout, sd)
    junk = tmp_path / "junk-1.0-py3-none-any.whl"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(VenvError) as err:
        do_install(make_bundle("2", extra_wheels=(junk,)), opts(), layout, sd)
    assert err.value.exit_code == 89
    assert layout.current_version() == "1"
    assert sorted(p.name for p in layout.releases.iterdir()) == ["1"]
    assert audit_events(layout)[-1]["event"] == "install_failed"


def test_rollback_returns_to_previous_and_prune_keeps_last_n(
        root: Path, make_bundle, trust_file: Path) -> None:
    layout = Layout(root)
    sd = FakeSystemd(layout)
    with pytest.raises(NothingToRollBackError):
        do_install(make_bundle("1"), opts(trust_file), layout, sd)
        do_rollback(layout, sd)
    do_install(make_bundle("2"), opts(), layout, sd)
    result = do_install(make_bundle("3"), opts(keep=2), layout, sd)
    assert result.pruned == ["1"]
    assert sorted(p.name for p in layout.releases.iterdir()) == ["2", "3"]
    back = do_rollback(layout, sd, opts=opts())
    assert (back.version, back.previous) == ("2", "3")
    assert layout.current_version() == "2"
    assert audit_events(layout)[-1]["event"] == "rollback"


def test_uninstall_keeps_data_and_purge_leaves_nothing_behind(
        root: Path, make_bundle, trust_file: Path) -> None:
    pristine = snapshot(root)
    passwd = (root / "etc/passwd").read_text()
    layout = Layout(root)
    sd = FakeSystemd(layout)
    do_install(make_bundle("1"), opts(trust_file), layout, sd)
    (layout.spool / "inbox" / "job.png").write_bytes(b"x")
    kept = do_uninstall(layout, sd)
    assert not layout.opt.exists() and not layout.unit_file.exists()
    assert (layout.spool / "inbox" / "job.png").exists() and layout.trust.exists()
    assert audit_events(layout)[-1]["event"] == "uninstall"
    assert str(layout.audit_log) in kept.kept
    do_uninstall(layout, sd, purge=True)
    # shadow-utils' own lock and backup files are the OS's, not ours
    leftovers = {k for k in snapshot(root) if k not in pristine
                 and not (k.startswith("etc/") and (k.endswith("-") or k == "etc/.pwd.lock"))}
    assert leftovers == set()
    assert (root / "etc/passwd").read_text() == passwd


def test_cli_install_status_doctor_and_exit_codes(
        root: Path, make_bundle, trust_file: Path) -> None:
    runner = CliRunner()
    b1 = make_bundle("1")
    res = runner.invoke(install, [str(b1), "--root", str(root), "--trust", str(trust_file),
                                  "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["version"] == "1" and doc["started"] is None  # --root: nothing started
    res = runner.invoke(install, [str(b1), "--root", str(root), "--json"])
    assert res.exit_code == 41 and json.loads(res.output)["error"] == "BadVersionNumberError"
    res = runner.invoke(install, [str(b1), "--root", str(root), "--allow-downgrade", "--json"])
    assert res.exit_code == 86 and json.loads(res.output)["error"] == "ReleaseRunningError"
    res = runner.invoke(status, ["--root", str(root), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert st["release"] == "1" and st["queue"]["inbox"] == 0
    assert st["signature"]["signers"][0]["name"] == "signer0"
    res = runner.invoke(doctor, ["--root", str(root), "--json"])
    checks = {c["name"]: c for c in json.loads(res.output)["checks"]}
    assert checks["models"]["ok"] is True and checks["clock"]["ok"] is True
    assert checks["unit"]["ok"] is True and "exposure 0." in checks["unit"]["detail"]
    assert checks["providers"]["ok"] is False  # this test venv carries no onnxruntime
    assert res.exit_code == 1
    os.chmod(layout_model := Layout(root).current / "models", 0o755)
    (layout_model / "detector-standin.onnx").chmod(0o644)
    (layout_model / "detector-standin.onnx").write_bytes(b"tampered")
    res = runner.invoke(doctor, ["--root", str(root), "--json"])
    checks = {c["name"]: c for c in json.loads(res.output)["checks"]}
    assert checks["models"]["ok"] is False and "detector-standin.onnx" in checks["models"]["detail"]
    manifest = Layout(root).current / "manifest.json"
    manifest.chmod(0o644)
    manifest.write_bytes(b'{"not": "a manifest"}')
    res = runner.invoke(doctor, ["--root", str(root), "--json"])
    checks = {c["name"]: c for c in json.loads(res.output)["checks"]}
    assert checks["models"]["ok"] is False and "manifest" in checks["models"]["detail"]
    res = runner.invoke(rollback, ["--root", str(root), "--json"])
    assert res.exit_code == 83
    res = runner.invoke(uninstall, ["--root", str(root), "--purge", "--json"])
    assert res.exit_code == 0
    res = runner.invoke(status, ["--root", str(root)])
    assert res.exit_code == 84 and "not installed" in res.output
