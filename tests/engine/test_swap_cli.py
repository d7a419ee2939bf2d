"""`sealfuse swap` end to end: reports, exit codes for every kind of bad input, and no network."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sealfuse.cli import main


def _run(args: list[str]) -> tuple[int, dict]:
    res = CliRunner().invoke(main, ["swap", "--execution-providers", "cpu", "--json", *args])
    out = res.stdout.strip()
    return res.exit_code, (json.loads(out) if out.startswith("{") else {"raw": res.output})


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


def test_swap_writes_the_output_and_a_json_report(hanks_png, t1_jpg, tmp_path, empty_models):
    out = tmp_path / "out.png"
    code, report = _run(["-s", str(hanks_png), "-t", str(t1_jpg), "-o", str(out), "--models-dir", str(empty_models)])
    assert code == 0, report
    assert report["ok"] and report["swapper"] == "mesh" and len(report["faces"]) == 6
    face = report["faces"][0]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and 0 < face["score"] <= 1
    assert cv2.imread(str(out)).shape == (886, 1280, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"], "no temporary file may remain"


def test_a_source_with_several_faces_uses_the_largest_and_says_so(t1_jpg, hanks_png, tmp_path, empty_models):
    code, report = _run(["-s", str(t1_jpg), "-t", str(hanks_png), "-o", str(tmp_path / "o.jpg"),
                         "--models-dir", str(empty_models)])
    assert code == 0
    assert any("6 faces; using the largest" in w for w in report["warnings"])


def _bad_inputs(tmp: Path, t1: Path) -> dict[str, tuple[Path, int, str]]:
    text = tmp / "notes.jpg"
    text.write_text("this is not an image\n" * 20)
    truncated = tmp / "truncated.jpg"
    truncated.write_bytes(t1.read_bytes()[: t1.stat().st_size // 2])
    empty = tmp / "empty.png"
    empty.write_bytes(b"")
    noface = tmp / "gradient.png"
    cv2.imwrite(str(noface), np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))[..., None].repeat(3, 2))
    mislabelled = tmp / "photo.png"
    shutil.copy(t1, mislabelled)
    unsupported = tmp / "photo.gif"
    shutil.copy(t1, unsupported)
    return {
        "not an image": (text, 3, "not_media"),
        "truncated image": (truncated, 3, "truncated"),
        "zero-byte file": (empty, 3, "empty_file"),
        "no face": (noface, 4, "no_face_in_target"),
        "decompression bomb": (bomb_png(tmp / "bomb.png"), 3, "too_large"),
        "missing path": (tmp / "does-not-exist.jpg", 3, "unreadable"),
        "a directory": (tmp, 3, "unreadable"),
        "content and extension disagree": (mislabelled, 3, "not_media"),
        "unsupported extension": (unsupported, 3, "not_media"),
    }


CASES = ["not an image", "truncated image", "zero-byte file", "no face", "decompression bomb", "missing path",
         "a directory", "content and extension disagree", "unsupported extension"]


@pytest.mark.parametrize("case", CASES)
def test_bad_target_gets_a_specific_error_and_no_output(case, hanks_png, t1_jpg, tmp_path, empty_models):
    target, code, reason = _bad_inputs(tmp_path, t1_jpg)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc, report = _run(["-s", str(hanks_png), "-t", str(target), "-o", str(out_dir / "o.png"),
                       "--models-dir", str(empty_models)])
    assert (rc, report.get("reason")) == (code, reason), report
    assert list(out_dir.iterdir()) == []


# each bad source with the one exit code and reason it must get
SOURCE_CASES = {"no face": (4, "no_face_in_source"), "truncated image": (3, "truncated"),
                "not an image": (3, "not_media"), "zero-byte file": (3, "empty_file")}


@pytest.mark.parametrize("case", sorted(SOURCE_CASES))
def test_bad_source_gets_a_specific_error(case, t1_jpg, tmp_path, empty_models):
    source, _, _ = _bad_inputs(tmp_path, t1_jpg)[case]
    rc, report = _run(["-s", str(source), "-t", str(t1_jpg), "-o", str(tmp_path / "o.png"),
                       "--models-dir", str(empty_models)])
    assert (rc, report["reason"]) == SOURCE_CASES[case], report
    assert not (tmp_path / "o.png").exists()


def test_a_source_face_position_past_the_last_face_is_exit_4(t1_jpg, tmp_path, empty_models):
    rc, report = _run(["-s", str(t1_jpg), "--source-face-position", "6", "-t", str(t1_jpg),
                       "-o", str(tmp_path / "o.png"), "--models-dir", str(empty_models)])
    assert (rc, report["reason"]) == (4, "no_face_in_source") and report["evidence"]["faces"] == 6
    assert not (tmp_path / "o.png").exists()


def test_output_in_a_missing_directory_is_refused_before_any_work(hanks_png, t1_jpg, tmp_path, empty_models):
    rc, report = _run(["-s", str(hanks_png), "-t", str(t1_jpg), "-o", str(tmp_path / "nope" / "o.png"),
                       "--models-dir", str(empty_models)])
    assert (rc, report["reason"]) == (6, "bad_output")
    assert not (tmp_path / "nope").exists()


def test_pixel_limit_is_configurable(hanks_png, t1_jpg, tmp_path, empty_models):
    rc, report = _run(["-s", str(hanks_png), "-t", str(t1_jpg), "-o", str(tmp_path / "o.png"),
                       "--max-pixels", "1000000", "--models-dir", str(empty_models)])
    assert (rc, report["reason"]) == (3, "too_large") and report["evidence"]["width"] == 1280


def test_help_states_defaults_exit_codes_and_that_mesh_is_demo_grade():
    res = CliRunner().invoke(main, ["swap", "--help"], terminal_width=200)
    text = " ".join(res.output.split())
    assert "DEMO GRADE" in text and "Exit codes" in text
    for code in ("0", "3", "4", "5", "6", "130"):
        assert f" {code} " in text
    assert "[default: 1.0; 0<=x<=1]" in text and "[default: many]" in text


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare --net")
def test_the_whole_swap_runs_inside_unshare_net(hanks_png, t1_jpg, tmp_path, standin_models):
    out = tmp_path / "out.jpg"
    script = ("import socket,sys\n"
              "s=socket.socket(); s.settimeout(2)\n"
              "try:\n s.connect(('1.1.1.1',443)); sys.exit('network reachable')\n"
              "except OSError: pass\n"
              "from sealfuse.cli import main\n"
              "sys.argv=['sealfuse','swap','-s',sys.argv[1],'-t',sys.argv[2],'-o',sys.argv[3],"
              "'--models-dir',sys.argv[4],'--face-swapper-model','inswapper_128','--json']\n"
              "main()\n")
    res = subprocess.run(["unshare", "--net", sys.executable, "-c", script, str(hanks_png), str(t1_jpg),
                          str(out), str(standin_models)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["swapper"] == "inswapper_128" and len(report["faces"]) == 6
    assert report["detector"] == "blazeface" and report["landmarker"] == "facemesh_468"
    assert out.stat().st_size > 10_000
    links = subprocess.run(["unshare", "--net", "ip", "-o", "link"], capture_output=True, text=True)
    if links.returncode == 0:
        assert [ln.split(":")[1].strip() for ln in links.stdout.splitlines()] == ["lo"]
