"""The bad-drop battery: each hostile or broken drop is quarantined with its own reason, the daemon
keeps serving, a good job afterwards still succeeds, and nothing is left behind."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import zlib
from pathlib import Path

import pytest

from tests.watch.watchlib import WatchEnv, drop_bytes, png_variant, small_mp4, wait_for


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def manifest(env: WatchEnv, name: str, doc: object) -> None:
    drop_bytes(json.dumps(doc).encode(), env.inbox / name)


@pytest.mark.slow
def test_bad_drop_battery_is_quarantined_with_specific_reasons(watch_env: WatchEnv, tmp_path: Path) -> None:
    env = watch_env
    env.write_config({"manifest_wait_seconds": 2, "manifest_max_bytes": 4096})
    tom = env.inbox / "tom"
    good = png_variant(env.hanks, tmp_path / "good.png", 1).read_bytes()
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes(good)
    expected: dict[str, str] = {}

    daemon = env.start()
    env.wait_ready()

    # 1-2: manifests that point outside their drop
    drop_bytes(good, env.inbox / "t1.png")
    manifest(env, "dotdot.job.json", {"version": 1, "source": "../../outside/secret.png", "target": "t1.png"})
    expected["inbox/dotdot.job.json"] = "path_escape"
    expected["inbox/t1.png"] = "path_escape"  # named media goes with its manifest
    manifest(env, "abs.job.json", {"version": 1, "source": str(secret), "target": "x.png"})
    expected["inbox/abs.job.json"] = "path_escape"
    # 3: a symlink to a file outside the spool
    os.symlink(secret, tom / "link.png")
    expected["inbox/tom/link.png"] = "symlink"
    # 4: a hardlink to a file outside the spool
    os.link(secret, tom / "hard.png")
    expected["inbox/tom/hard.png"] = "hardlink"
    # 5: a FIFO (opening it would block the daemon)
    os.mkfifo(tom / "pipe.png")
    expected["inbox/tom/pipe.png"] = "fifo"
    # 6: a device node
    if os.geteuid() == 0:
        os.mknod(tom / "null.png", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        expected["inbox/tom/null.png"] = "device_node"
    # 7: a directory bomb (deep and wide), moved aside without being walked
    bomb = tmp_path / "bomb"
    deep = bomb
    for i in range(200):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    for i in range(300):
        (bomb / f"w{i}").mkdir()
    os.rename(bomb, tom / "bomb")
    expected["inbox/tom/bomb"] = "directory"
    # 8-9: invalid JSON, schema violation
    drop_bytes(b'{"version": 1, "target": ', env.inbox / "broken.job.json")
    expected["inbox/broken.job.json"] = "invalid_json"
    manifest(env, "schema.job.json", {"version": 2, "target": 5, "options": {"blend_ratio": 7}})
    expected["inbox/schema.job.json"] = "schema_violation"
    # 10: zero bytes
    drop_bytes(b"", tom / "empty.png")
    expected["inbox/tom/empty.png"] = "empty_file"
    # 11: truncated image
    drop_bytes(good[: len(good) // 2], tom / "half.png")
    expected["inbox/tom/half.png"] = "truncated"
    # 12: decompression bomb (header claims 100000 x 100000)
    drop_bytes(png_bomb(100_000, 100_000), tom / "bomb.png")
    expected["inbox/tom/bomb.png"] = "too_large"
    # 13-14: wrong extensions (unsupported; content that does not match)
    drop_bytes(good, tom / "notes.txt")
    expected["inbox/tom/notes.txt"] = "unsupported_extension"
    drop_bytes(good, tom / "liar.jpg")
    expected["inbox/tom/liar.jpg"] = "not_media"
    # 15: no face (a flat grey image)
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (128, 128, 128)).save(buf, format="PNG")
    drop_bytes(buf.getvalue(), tom / "noface.png")
    expected["inbox/tom/noface.png"] = "no_face_in_target"
    # 16: a huge manifest
    drop_bytes(b'{"version": 1, "target": "a.png", "label": "' + b"x" * 100_000 + b'"}',
               env.inbox / "huge.job.json")
    expected["inbox/huge.job.json"] = "manifest_too_large"
    # 17: control characters in the name
    drop_bytes(good, tom / "bell\x07\x1b[31m.png")
    expected["inbox/tom/bell\x07\x1b[31m.png"] = "bad_name"
    # 18: a folder for a preset that does not exist
    (env.inbox / "nosuch").mkdir()
    expected["inbox/nosuch"] = "unknown_preset"
    # 19: a manifest whose media never arrives
    manifest(env, "waiting.job.json", {"version": 1, "source": "never.png", "target": "never2.png"})
    expected["inbox/waiting.job.json"] = "missing_media"
    # 20: a manifest naming an unknown preset
    drop_bytes(good, env.inbox / "t2.png")
    manifest(env, "nopreset.job.json", {"version": 1, "preset": "ghost", "target": "t2.png"})
    expected["inbox/nopreset.job.json"] = "unknown_preset"
    expected["inbox/t2.png"] = "unknown_preset"
    # 22: a PNG whose zTXt chunk inflates to 40 MiB (an ancillary-chunk bomb)
    ztxt = b"Comment\0\0" + zlib.compress(b"\0" * (40 << 20), 9)
    bomb_chunk = struct.pack(">I", len(ztxt)) + b"zTXt" + ztxt + struct.pack(">I", zlib.crc32(b"zTXt" + ztxt))
    drop_bytes(good[:33] + bomb_chunk + good[33:], tom / "ztxt.png")
    expected["inbox/tom/ztxt.png"] = "too_large"
    # 21: a truncated video
    mp4 = small_mp4(env.hanks)
    drop_bytes(mp4[: len(mp4) // 2], tom / "cut.mp4")
    expected["inbox/tom/cut.mp4"] = "truncated"

    try:
        wait_for(lambda: set(env.failed()) >= set(expected), 60, "every bad drop to be quarantined")
    except AssertionError:
        out = daemon.stdout.read1().decode() if daemon.poll() is not None else "(running)"
        raise AssertionError(f"not quarantined: {sorted(set(expected) - set(env.failed()))}; "
                             f"got {env.reasons()}; done {list(env.done())}; daemon: {out[-3000:]}") from None
    # The daemon is still serving: a good job after the battery succeeds.
    drop_bytes(good, tom / "good.png")
    wait_for(lambda: "inbox/tom/good.png" in env.done(), 60, "the good job after the battery")
    assert daemon.poll() is None
    reasons = env.reasons()
    assert {k: reasons[k] for k in expected} == expected
    assert set(reasons) == set(expected)
    # One quarantine folder per refused drop; the two manifests took their named media along
    # (dotdot + t1.png, nopreset + t2.png), so two fewer folders than entries.
    quarantines = [d for d in (env.spool / "failed").iterdir() if not d.name.startswith(".")]
    assert len(quarantines) == len(expected) - 2
    for drop_rel, err in env.failed().items():
        moved = next(i for i in err["inputs"] if i["drop"] == drop_rel)
        assert os.path.lexists(env.spool / "failed" / err["job_id"] / "input" / moved["name"]), drop_rel
    # The FIFO and device node were moved, never opened; the hardlinked original is untouched.
    err = env.failed()["inbox/tom/pipe.png"]
    assert stat.S_ISFIFO(os.lstat(env.spool / "failed" / err["job_id"] / "input" / "pipe.png").st_mode)
    assert secret.read_bytes() == good
    for e in env.failed().values():
        assert e["message"] and e["timestamps"]["failed"]
    daemon.terminate()
    assert daemon.wait(60) == 0
    assert env.residue() == []
