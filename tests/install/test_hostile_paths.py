"""Root never follows what the service user controls: symlinks, hardlinks, FIFOs and foreign files
planted (as uid 65534, or the root's own `sealfuse` user) in the directories that user can write.
Each case shows that nothing outside is created, appended, chmod-ed, chown-ed or removed."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from sealfuse.appliance import fsutil
from sealfuse.appliance.audit import AuditLog, verify_log
from sealfuse.appliance.doctor import last_job, queue_counts
from sealfuse.appliance.errors import LockBusyError, UnsafePathError
from sealfuse.appliance.release import Layout, locked, own_dir, remove_tree, write_atomic

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="planting as another user needs root")


def user_dir(path: Path, uid: int = NOBODY, mode: int = 0o700) -> Path:
    """A directory the service user owns (and so may fill with anything)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def plant_symlink(link: Path, target: Path | str, uid: int = NOBODY) -> Path:
    os.symlink(target, link)
    os.lchown(link, uid, uid)
    return link


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Root's files outside every directory sealfuse owns: what an attacker points at."""
    out = tmp_path / "outside"
    (out / "victim-dir" / "sub").mkdir(parents=True)
    (out / "secret").write_bytes(b"root's secret\n")
    (out / "secret").chmod(0o600)
    (out / "victim-dir" / "keep").write_bytes(b"keep me\n")
    (out / "victim-dir").chmod(0o751)
    return out


def state(root: Path) -> dict[str, tuple[int, int, int, int, bytes]]:
    """path -> (mode, uid, gid, nlink, content) for everything below root, links not followed."""
    out = {str(root): _entry(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out[os.path.join(dirpath, name)] = _entry(Path(dirpath) / name)
    return out


def _entry(p: Path) -> tuple[int, int, int, int, bytes]:
    st = p.lstat()
    data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
    return st.st_mode, st.st_uid, st.st_gid, st.st_nlink, data


# -- the audit log, appended to by root in the service user's directory ----------------------
def test_audit_append_refuses_a_symlink_and_writes_nothing_where_it_points(
        tmp_path: Path, outside: Path) -> None:
    audit = user_dir(tmp_path / "audit")
    before = state(outside)
    plant_symlink(audit / "audit.jsonl", outside / "secret")
    with pytest.raises(UnsafePathError) as err:
        AuditLog(audit / "audit.jsonl").append("install", version="2")
    assert err.value.exit_code == 92 and err.value.reason == "unsafe_path"
    # a dangling link must not make root create the file it names either
    (audit / "audit.jsonl").unlink()
    plant_symlink(audit / "audit.jsonl", outside / "created-by-root")
    with pytest.raises(UnsafePathError):
        AuditLog(audit / "audit.jsonl").append("install", version="2")
    assert state(outside) == before


def test_audit_append_refuses_a_hardlink_to_roots_file(tmp_path: Path, outside: Path) -> None:
    audit = user_dir(tmp_path / "audit")
    os.link(outside / "secret", audit / "audit.jsonl")  # as if protected_hardlinks were off
    before = state(outside)
    with pytest.raises(UnsafePathError, match="hard links"):
        AuditLog(audit / "audit.jsonl").append("install", version="2")
    assert state(outside) == before


def test_audit_append_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    audit = user_dir(tmp_path / "audit")
    os.mkfifo(audit / "audit.jsonl")
    os.chown(audit / "audit.jsonl", NOBODY, NOBODY)
    outcome: list[BaseException] = []

    def append() -> None:
        try:
            AuditLog(audit / "audit.jsonl").append("install")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=append, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "append blocked on a FIFO"
    assert len(outcome) == 1 and isinstance(outcome[0], UnsafePathError)


def test_audit_append_refuses_a_file_owned_by_a_stranger(tmp_path: Path) -> None:
    audit = user_dir(tmp_path / "audit")
    log = audit / "audit.jsonl"
    log.write_bytes(b"")
    os.chown(log, 12345, 12345)  # neither root nor the directory's owner
    with pytest.raises(UnsafePathError, match="owned by uid 12345"):
        AuditLog(log).append("install")
    assert log.read_bytes() == b""


def test_audit_dir_planted_as_a_symlink_below_the_users_directory_is_not_followed(
        tmp_path: Path, outside: Path) -> None:
    state_dir = user_dir(tmp_path / "state")
    plant_symlink(state_dir / "audit", outside / "victim-dir")
    before = state(outside)
    with pytest.raises(UnsafePathError, match="symlink"):
        AuditLog(state_dir / "audit" / "audit.jsonl").append("install")
    assert state(outside) == before


def test_root_creating_the_log_gives_it_to_the_directorys_owner_and_it_chains(
        tmp_path: Path) -> None:
    audit = user_dir(tmp_path / "audit")
    log = AuditLog(audit / "audit.jsonl")
    log.append("install", version="1")
    AuditLog(audit / "audit.jsonl").append("uninstall")
    st = (audit / "audit.jsonl").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o640)
    assert verify_log(audit / "audit.jsonl").entries == 2


# -- root's own directories --------------------------------------------------------------------
def test_open_dir_follows_roots_links_but_not_one_in_a_users_directory(
        tmp_path: Path, outside: Path) -> None:
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "link").symlink_to(outside / "victim-dir")
    fd = fsutil.open_dir(tmp_path / "trusted" / "link" / "sub")  # root's own link: followed
    os.close(fd)
    spool = user_dir(tmp_path / "spool", mode=0o750)
    plant_symlink(spool / "inbox", outside / "victim-dir")
    with pytest.raises(UnsafePathError):
        fsutil.open_dir(spool / "inbox" / "sub")
    with pytest.raises(UnsafePathError):  # nor is one made through it
        fsutil.open_dir(spool / "inbox" / "new", create_mode=0o755)
    assert not (outside / "victim-dir" / "new").exists()


def test_root_writes_refuse_a_directory_the_service_user_owns(
        tmp_path: Path, outside: Path) -> None:
    layout = Layout(tmp_path / "root")
    user_dir(layout.var, mode=0o755)  # /var/lib/sealfuse is root's; here the user took it
    with pytest.raises(UnsafePathError, match="uid 65534"):
        write_atomic(layout.record, b"{}")
    with pytest.raises(UnsafePathError), locked(layout):
        pass
    assert not layout.record.exists() and not layout.lock.exists()
    user_dir(layout.opt, mode=0o755)
    with pytest.raises(UnsafePathError):
        own_dir(layout.opt)
    assert stat.S_IMODE(layout.opt.stat().st_mode) == 0o755 and layout.opt.stat().st_uid == NOBODY


def test_roots_directory_below_one_the_user_owns_is_not_roots_own(tmp_path: Path) -> None:
    # the user could rename /var/lib/sealfuse away and put their own in its place
    layout = Layout(tmp_path / "root")
    user_dir(layout.var.parent, mode=0o755)
    layout.var.mkdir()
    assert layout.var.stat().st_uid == 0
    with pytest.raises(UnsafePathError, match="or a directory above it"):
        write_atomic(layout.record, b"{}")
    assert not layout.record.exists()


def test_the_install_lock_is_never_a_link(tmp_path: Path, outside: Path) -> None:
    layout = Layout(tmp_path / "root")
    layout.var.mkdir(parents=True)
    plant_symlink(layout.lock, outside / "lock-made-by-root", uid=0)
    with pytest.raises(UnsafePathError), locked(layout):
        pass
    assert not (outside / "lock-made-by-root").exists()
    layout.lock.unlink()
    with locked(layout), pytest.raises(LockBusyError), locked(layout):
        pass


# -- removal (uninstall --purge, prune, a failed stage) -------------------------------------
def test_remove_tree_removes_links_and_never_what_they_point_at(
        tmp_path: Path, outside: Path) -> None:
    spool = user_dir(tmp_path / "var" / "spool", mode=0o750)
    inbox = user_dir(spool / "inbox", mode=0o3770)
    plant_symlink(inbox / "preset", outside / "victim-dir")
    plant_symlink(inbox / "face.png", outside / "secret")
    os.link(outside / "secret", inbox / "hard.png")
    os.mkfifo(inbox / "pipe")
    nested = user_dir(inbox / "a" / "b")
    plant_symlink(nested / "up", "../../../../../outside")
    nested.chmod(0o500)  # read-only directory: made writable through its fd only
    (inbox / "a").chmod(0)
    outside_before = state(outside)
    outside_before[str(outside / "secret")] = outside_before[str(outside / "secret")][:3] + \
        (1, b"root's secret\n")  # the planted hardlink goes, so one link remains
    remove_tree(tmp_path / "var")
    assert not (tmp_path / "var").exists()
    assert state(outside) == outside_before


def test_remove_tree_of_a_link_removes_only_the_link(tmp_path: Path, outside: Path) -> None:
    before = state(outside)
    plant_symlink(tmp_path / "opt", outside / "victim-dir", uid=0)
    remove_tree(tmp_path / "opt")
    assert not (tmp_path / "opt").is_symlink() and state(outside) == before


def test_remove_tree_handles_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    top = user_dir(tmp_path / "spool")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    remove_tree(top)
    assert not top.exists()


# -- status and doctor read the service user's files ------------------------------------------
def test_status_readers_follow_no_link_and_never_block(tmp_path: Path, outside: Path) -> None:
    audit = user_dir(tmp_path / "audit")
    (outside / "fake.jsonl").write_text('{"event": "done", "job": "from-outside"}\n')
    plant_symlink(audit / "audit.jsonl", outside / "fake.jsonl")
    assert last_job(audit / "audit.jsonl") is None
    (audit / "audit.jsonl").unlink()
    os.mkfifo(audit / "audit.jsonl")
    assert last_job(audit / "audit.jsonl") is None  # a FIFO: refused, not waited on
    spool = user_dir(tmp_path / "spool", mode=0o750)
    plant_symlink(spool / "work", outside / "victim-dir")
    plant_symlink(spool / "inbox", outside / "victim-dir")
    assert queue_counts(spool) == {"inbox": 0, "work": 0, "outbox": 0, "failed": 0}


# -- end to end: `sealfuse install --root` / `uninstall --purge` on a planted tree -------------
def _service_uid(layout: Layout) -> int:
    """The uid systemd-sysusers gave the root's `sealfuse` user (it owns the spool)."""
    return layout.spool.stat().st_uid


@pytest.mark.slow
def test_install_refuses_links_fifos_and_hardlinks_planted_by_the_service_user(
        root: Path, make_bundle, trust_file: Path, outside: Path) -> None:
    from click.testing import CliRunner

    from sealfuse.appliance.cli import install

    layout = Layout(root)
    runner = CliRunner()
    res = runner.invoke(install, [str(make_bundle("1")), "--root", str(root), "--trust",
                                  str(trust_file), "--json"])
    assert res.exit_code == 0, res.output
    uid = _service_uid(layout)
    assert uid != 0
    audit_log = layout.audit_log
    log_before = audit_log.read_bytes()
    bundle2 = make_bundle("2")
    before = state(outside)

    plants = {
        "audit log -> root's file": lambda: (audit_log.unlink(),
                                             plant_symlink(audit_log, outside / "secret", uid)),
        "audit log hardlinked to root's file": lambda: (audit_log.unlink(),
                                                        os.link(outside / "secret", audit_log)),
        "audit log is a FIFO": lambda: (audit_log.unlink(), os.mkfifo(audit_log)),
        "inbox -> root's directory": lambda: (os.rmdir(layout.spool / "inbox"),
                                              plant_symlink(layout.spool / "inbox",
                                                            outside / "victim-dir", uid)),
        "state dir -> root's directory": lambda: (os.rmdir(layout.var / "state"),
                                                  plant_symlink(layout.var / "state",
                                                                outside / "victim-dir", uid)),
        "outbox handed to a stranger": lambda: os.chown(layout.spool / "outbox", 12345, 12345),
    }
    for name, plant in plants.items():
        saved = root / "saved"
        os.rename(layout.var, saved)
        subprocess.run(["cp", "-a", str(saved), str(layout.var)], check=True)  # to plant in
        plant()
        res = runner.invoke(install, [str(bundle2), "--root", str(root), "--json"])
        assert res.exit_code == 92, (name, res.output)
        assert '"reason": "unsafe_path"' in res.output, name
        assert layout.current_version() == "1", name
        assert not layout.release("2").exists(), name
        assert state(outside) == {**before, **({str(outside / "secret"):
                                                before[str(outside / "secret")][:3] + (2,) +
                                                before[str(outside / "secret")][4:]}
                                               if "hardlink" in name else {})}, name
        remove_tree(layout.var)
        os.rename(saved, layout.var)
    assert audit_log.read_bytes() == log_before
    res = runner.invoke(install, [str(bundle2), "--root", str(root), "--json"])
    assert res.exit_code == 0, res.output  # the untouched tree installs


@pytest.mark.slow
def test_uninstall_purge_removes_planted_links_and_nothing_they_point_at(
        root: Path, make_bundle, trust_file: Path, outside: Path) -> None:
    from sealfuse.appliance.install import InstallOptions
    from sealfuse.appliance.install import install as do_install
    from sealfuse.appliance.uninstall import uninstall as do_uninstall
    from tests.install.installlib import FakeSystemd

    layout = Layout(root)
    sd = FakeSystemd(layout)
    do_install(make_bundle("1"), InstallOptions(trust=trust_file, settle=0), layout, sd)
    uid = _service_uid(layout)
    inbox = layout.spool / "inbox"
    plant_symlink(inbox / "preset", outside / "victim-dir", uid)
    plant_symlink(inbox / "face.png", outside / "secret", uid)
    plant_symlink(layout.var / "state" / "db", outside, uid)
    os.mkfifo(inbox / "pipe")
    user_dir(inbox / "deep" / "er", uid=uid, mode=0o500)
    plant_symlink(inbox / "deep" / "er" / "escape", "../../../../../../../outside", uid)
    (root / "run" / "sealfuse").mkdir()
    plant_symlink(root / "run" / "sealfuse" / "jobs", outside / "victim-dir", uid)
    before = state(outside)
    do_uninstall(layout, sd, purge=True)
    assert not layout.var.exists() and not (root / "run" / "sealfuse").exists()
    assert state(outside) == before
