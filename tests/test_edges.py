"""Cross-command edge cases: hostile inputs every command must refuse with a named error and
a documented exit code, never a traceback or a hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealfuse.cli import main


@pytest.mark.parametrize("args", [
    ["keygen", "--out", "{tmp}", "--json"],                      # a directory as the key path
    ["audit", "verify", "{tmp}", "--json"],                      # a directory as the log
    ["verify", "--json"],                                       # missing argument
    ["verify", "x.bundle", "--trust", "t.json", "--json", "--clock-skew", "-1"],
    ["audit", "verify", "x", "--json", "--anchor", "nan:00"],   # malformed option value
    ["status", "--json", "--no-such-option"],
])
def test_json_usage_errors_are_the_json_error_object(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 2 and doc["reason"] == "usage_error"
    assert doc["message"]


def test_without_json_a_usage_error_stays_click_text(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["audit", "verify", str(tmp_path)])
    assert result.exit_code == 2 and "Usage:" in result.output


@pytest.mark.parametrize("line", [
    b"[" * 100_000 + b"]" * 100_000,                  # nesting deeper than Python's stack
    b'{"seq": NaN, "hash": "x"}',                     # not JSON at all
    b'{"seq": 1, "prev": Infinity}',
])
def test_audit_verify_names_a_hostile_line_instead_of_a_traceback(tmp_path: Path,
                                                                  line: bytes) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(line + b"\n")
    result = CliRunner().invoke(main, ["audit", "verify", str(log), "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["reason"] == "not_json" and doc["bad_line"] == 1


@pytest.mark.parametrize("anchors", ["fifo", "/dev/zero"])
def test_provenance_verify_refuses_non_regular_trust_anchors_without_blocking(
        tmp_path: Path, anchors: str) -> None:
    pytest.importorskip("c2pa")
    os.mkfifo(tmp_path / "fifo")
    media = tmp_path / "x.jpg"
    media.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    path = str(tmp_path / anchors) if anchors == "fifo" else anchors
    result = CliRunner().invoke(main, ["provenance", "verify", str(media), "--json",
                                       "--trust-anchors", path])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["reason"] == "unreadable"


@pytest.mark.parametrize("option", [["--organization", "x" * 200], ["--appliance", ""]])
def test_provenance_init_names_an_unusable_name_and_writes_nothing(tmp_path: Path,
                                                                   option: list[str]) -> None:
    pytest.importorskip("cryptography")
    out = tmp_path / "pki"
    result = CliRunner().invoke(main, ["provenance", "init", "--out", str(out), "--json", *option])
    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout)["reason"] == "provenance_init_failed"
    assert not out.exists() or not any(out.rglob("*"))
