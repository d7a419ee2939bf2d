"""The hash-chained audit log: appends chain, and `sealfuse audit verify` names the first bad line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sealfuse.appliance.audit import GENESIS, AuditLog, verify_log


def _log(tmp_path: Path, n: int = 5) -> Path:
    path = tmp_path / "audit" / "audit.jsonl"
    log = AuditLog(path)
    for i in range(n):
        log.append("claimed", job=f"job-{i}", sha256="ab" * 32)
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sealfuse", "audit", "verify", *args],
                          capture_output=True, text=True, timeout=60)


def test_entries_link_to_the_previous_line_from_a_zero_genesis(tmp_path: Path) -> None:
    path = _log(tmp_path, 3)
    lines = path.read_bytes().splitlines()
    first = json.loads(lines[0])
    assert first["prev"] == GENESIS and first["seq"] == 1
    import hashlib

    assert json.loads(lines[1])["prev"] == hashlib.sha256(lines[0]).hexdigest()
    assert (path.stat().st_mode & 0o777) == 0o640
    res = verify_log(path)
    assert res.ok and res.entries == 3 and res.head_seq == 3


def test_a_second_writer_continues_the_chain(tmp_path: Path) -> None:
    path = _log(tmp_path, 2)
    AuditLog(path).append("install", release="0.2.0")  # e.g. the installer, another process
    other = AuditLog(path)
    threads = [threading.Thread(target=other.append, args=("x",), kwargs={"i": i}) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res = verify_log(path)
    assert res.ok and res.entries == 11


@pytest.mark.parametrize("tamper,line,reason", [
    ("edit_byte", 3, "edited"),
    ("edit_last", 5, "edited"),
    ("delete", 3, "sequence"),
    ("swap", 2, "sequence"),
    ("truncate", 5, "truncated"),
])
def test_verify_names_the_first_bad_line(tmp_path: Path, tamper: str, line: int, reason: str) -> None:
    path = _log(tmp_path, 5)
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    if tamper == "edit_byte":
        lines[2] = lines[2].replace(b"job-2", b"job-9")
    elif tamper == "edit_last":
        lines[4] = lines[4].replace(b"job-4", b"jab-4")
    elif tamper == "delete":
        del lines[2]
    elif tamper == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    elif tamper == "truncate":
        lines[4] = lines[4][:40]
    path.write_bytes(b"".join(lines))
    res = verify_log(path)
    assert not res.ok and res.bad_line == line and res.reason == reason
    proc = _cli(str(path), "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["bad_line"] == line and out["reason"] == reason


def test_cutting_whole_entries_off_the_end_is_caught_by_an_anchor(tmp_path: Path) -> None:
    path = _log(tmp_path, 5)
    head = json.loads(_cli(str(path), "--json").stdout)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:3]))
    assert _cli(str(path)).returncode == 0  # a clean cut is invisible without an anchor
    proc = _cli(str(path), "--anchor", f"{head['head_seq']}:{head['head_hash']}")
    assert proc.returncode == 1 and "anchor" in proc.stderr


def test_verify_cli_exit_codes(tmp_path: Path) -> None:
    path = _log(tmp_path, 2)
    ok = _cli(str(path))
    assert ok.returncode == 0 and "OK: 2 entries" in ok.stdout
    assert _cli(str(tmp_path / "missing.jsonl")).returncode == 2
    assert _cli(str(path), "--anchor", "nonsense").returncode == 2


def test_verify_refuses_a_fifo_in_place_of_the_log_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo)
    res = _cli(str(fifo), "--json")  # no writer: a blocking read would never return
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["reason"] == "unreadable" and "not a regular file" in doc["message"]
