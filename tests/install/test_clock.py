"""A clock set back behind the installed release's signed `created` time: `install` refuses with
ClockBehindError (exit 93) before verifying anything, and `doctor`'s clock check fails."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from sealfuse.appliance.clock import CLOCK_SKEW, check_installed, release_created
from sealfuse.appliance.doctor import check_clock
from sealfuse.appliance.errors import ClockBehindError
from sealfuse.appliance.install import InstallOptions
from sealfuse.appliance.install import install as do_install
from sealfuse.appliance.release import Layout
from tests.install.installlib import FakeSystemd


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p)] = (st.st_mode, st.st_mtime_ns, p.read_bytes() if p.is_file()
                           and not p.is_symlink() else b"")
    return out


@pytest.mark.slow
def test_install_refuses_and_doctor_fails_when_the_clock_is_behind_the_installed_release(
        root: Path, make_bundle, trust_file: Path) -> None:
    layout = Layout(root)
    sd = FakeSystemd(layout)
    do_install(make_bundle("1"), InstallOptions(trust=trust_file, settle=0), layout, sd)
    created = release_created(layout, "1")
    assert created is not None
    behind = created - CLOCK_SKEW - dt.timedelta(minutes=1)
    within = created - CLOCK_SKEW + dt.timedelta(minutes=1)

    assert check_clock(layout, now=within).ok is True
    check = check_clock(layout, now=behind)
    assert check.ok is False and check.detail.startswith("clock_behind:")
    assert created.strftime("%Y-%m-%dT%H:%M:%SZ") in check.detail

    bundle2 = make_bundle("2")
    audit = str(layout.audit_log)
    before = {k: v for k, v in tree(root).items() if k != audit}
    with pytest.raises(ClockBehindError) as err:
        do_install(bundle2, InstallOptions(settle=0, now=behind.isoformat()), layout, sd)
    doc = err.value.to_dict()
    assert (doc["exit_code"], doc["reason"]) == (93, "clock_behind")
    assert doc["evidence"]["installed"] == "1"
    assert doc["evidence"]["created"] == created.isoformat()
    assert {k: v for k, v in tree(root).items() if k != audit} == before
    last = layout.audit_log.read_text().splitlines()[-1]
    assert '"event":"install_refused"' in last and "ClockBehindError" in last

    result = do_install(bundle2, InstallOptions(settle=0, now=within.isoformat()), layout, sd)
    assert result.version == "2"


def test_no_installed_release_means_no_clock_check(tmp_path: Path) -> None:
    check_installed(Layout(tmp_path), None, "1970-01-02T00:00:00Z")  # first install: nothing


def test_an_unreadable_installed_manifest_does_not_block_an_install(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    (layout.release("1")).mkdir(parents=True)
    (layout.release("1") / "manifest.json").write_text("{not json")
    assert release_created(layout, "1") is None
    check_installed(layout, "1", "1970-01-02T00:00:00Z")
