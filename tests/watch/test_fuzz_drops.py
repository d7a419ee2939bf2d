"""Fuzzing drops: seeded, mutated drops against admission (in process) and a running daemon.

Manifests with random field and byte mutations, odd names, links, odd file types and truncated
or bit-flipped media. Every case must end in a claim or a documented reason, without a traceback
or a hang (a per-case / per-batch timeout), and nothing outside the spool may change.

    SEALFUSE_FUZZ_CASES=5000 pytest tests/watch/test_fuzz_drops.py -s   # longer runs
    SEALFUSE_FUZZ_SEED=7 ...                                             # another sequence
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sealfuse.appliance.fsutil import FollowError
from sealfuse.appliance.watch import errors
from sealfuse.appliance.watch.admission import Admission
from sealfuse.appliance.watch.config import Preset, WatchConfig
from tests.watch.watchlib import WatchEnv, documented_reasons, png_variant, wait_for

SEED = int(os.environ.get("SEALFUSE_FUZZ_SEED", "20251125"))
CASES = int(os.environ.get("SEALFUSE_FUZZ_CASES", "400"))  # admission cases; the daemon gets a sixth
CASE_SECONDS = 5
ODD_NAMES = ["../x.png", "/etc/passwd", "a/b.png", "bell\x07.png", ".hidden.png", "x.job.json", "ü-face.png",
             "x" * 300 + ".png", "", ".", "..", "\udcff\udcfe.png", "nul\x00.png", "back\\slash.png",
             "t.PNG", "t.png ", " t.png", "t.png.partial", "t.mp4", "t.txt", "-rf.png", "t.png\n"]
JUNK_VALUES: list[Any] = [None, 0, -1, 2**70, 1.5, True, [], {}, ["a"], {"a": 1}, "", "x" * 5000,
                          "\x00", "ü", "../../etc", "tom\n", {"blend_ratio": 9}]


def _tree(root: Path) -> dict[str, tuple[int, bytes | str]]:
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            content: bytes | str = b""
            if stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = path.read_bytes()
            out[str(path.relative_to(root))] = (st.st_mode, content)
    return out


class DropMaker:
    """Makes one random drop per call in `inbox` (links point into `outside`)."""

    def __init__(self, rng: random.Random, inbox: Path, outside: Path, good_png: bytes, good_mp4: bytes) -> None:
        self.rng, self.inbox, self.outside = rng, inbox, outside
        self.good_png, self.good_mp4 = good_png, good_mp4
        self.n = 0

    def name(self, ext: str = ".png") -> str:
        if self.rng.random() < 0.25:
            return self.rng.choice(ODD_NAMES)
        return f"f{self.n}-{self.rng.randrange(10**6)}{ext}"

    def media(self) -> bytes:
        data = bytearray(self.good_mp4 if self.rng.random() < 0.15 else self.good_png)
        how = self.rng.choice(["whole", "truncate", "flip", "flip", "zero", "prefix"])
        if how == "truncate":
            del data[self.rng.randrange(len(data)):]
        elif how == "flip":
            for _ in range(self.rng.randint(1, 20)):
                data[self.rng.randrange(len(data))] = self.rng.randrange(256)
        elif how == "zero":
            data = bytearray()
        elif how == "prefix":
            data = bytearray(b"GIF89a") + data
        return bytes(data)

    def manifest_doc(self, target: str) -> bytes:
        doc: dict[str, Any] = {"version": 1, "preset": "tom", "target": target,
                               "client_ref": f"fz{self.n}"}
        if self.rng.random() < 0.3:
            doc["source"] = self.name()
        for _ in range(self.rng.randint(0, 3)):
            key = self.rng.choice(["version", "preset", "target", "source", "reference", "label", "options",
                                   "client_ref", "bogus"])
            if self.rng.random() < 0.3:
                doc.pop(key, None)
            else:
                doc[key] = self.rng.choice(JUNK_VALUES)
        raw = bytearray(json.dumps(doc).encode())
        how = self.rng.choice(["none", "none", "flip", "truncate", "bom", "dupkey", "deep"])
        if how == "flip" and raw:
            for _ in range(self.rng.randint(1, 5)):
                raw[self.rng.randrange(len(raw))] = self.rng.randrange(256)
        elif how == "truncate":
            del raw[self.rng.randrange(len(raw) + 1):]
        elif how == "bom":
            raw = bytearray(b"\xef\xbb\xbf") + raw
        elif how == "dupkey":
            raw = bytearray(raw.replace(b'"version": 1', b'"version": 1, "version": 2'))
        elif how == "deep":
            raw = bytearray(b"[" * 100_000 + b"]" * 100_000)
        return bytes(raw)

    def inside(self, path: Path) -> Path:
        """`path` itself, if it names an entry of the inbox or its preset folder; never anything
        else (an absolute or `..` name joined to a folder would point elsewhere)."""
        norm = Path(os.path.normpath(path))
        if norm != path or norm.parent not in (self.inbox, self.inbox / "tom"):
            raise ValueError(f"not an inbox entry: {path!r}")
        return path

    def write(self, path: Path, data: bytes) -> None:
        path = self.inside(path)
        tmp = path.with_name(f".fz{self.n}.partial")
        tmp.write_bytes(data)
        os.rename(tmp, path)

    def make(self) -> list[Path]:
        """One drop; returns the inbox entries it made."""
        self.n += 1
        rng, tom = self.rng, self.inbox / "tom"
        kind = rng.choice(["manifest", "manifest", "preset", "preset", "odd", "loose"])
        made: list[Path] = []
        with contextlib.suppress(OSError, ValueError):  # an odd name the filesystem refuses
            if kind == "manifest":
                target = self.name()
                if rng.random() < 0.8:
                    with contextlib.suppress(OSError, ValueError):  # "../x", "/etc/passwd": not written
                        self.write(self.inbox / target, self.media())
                        made.append(self.inbox / target)
                path = self.inside(self.inbox / f"m{self.n}.job.json")
                self.write(path, self.manifest_doc(target))
                made.append(path)
            elif kind == "preset":
                path = tom / self.name(rng.choice([".png", ".jpg", ".mp4", ".txt", ""]))
                self.write(path, self.media())
                made.append(path)
            elif kind == "loose":
                path = self.inbox / self.name()
                self.write(path, self.media())
                made.append(path)
            else:
                path = self.inside(rng.choice([tom, self.inbox]) / f"odd{self.n}.png")
                what = rng.choice(["symlink_file", "symlink_dir", "hardlink", "fifo", "socket", "dir",
                                   "device"])
                if what == "symlink_file":
                    os.symlink(self.outside / "victim.png", path)
                elif what == "symlink_dir":
                    os.symlink(self.outside, path)
                elif what == "hardlink":
                    os.link(self.outside / "victim.png", path)
                elif what == "fifo":
                    os.mkfifo(path)
                elif what == "socket":
                    sock = socket.socket(socket.AF_UNIX)
                    try:
                        sock.bind(str(path))
                    finally:
                        sock.close()
                elif what == "dir":
                    (path / "inner").mkdir(parents=True)
                    (path / "inner" / "x.png").write_bytes(self.good_png)
                elif os.geteuid() == 0:
                    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
                made.append(path)
        return made


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    def expired(_signum: int, _frame: Any) -> None:
        raise TimeoutError(f"a fuzz case took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _outside(tmp_path: Path, hanks: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    png_variant(hanks, outside / "victim.png", 99)
    (outside / "sub" / "note.txt").write_text("not the daemon's")
    return outside


def _media(hanks: Path, tmp_path: Path) -> tuple[bytes, bytes]:
    from tests.watch.watchlib import small_mp4

    return png_variant(hanks, tmp_path / "good.png", 98).read_bytes(), small_mp4(hanks, frames=3)


def test_fuzzed_drops_against_admission_end_in_a_claim_or_a_documented_reason(tmp_path: Path,
                                                                              hanks_png: Path) -> None:
    rng = random.Random(SEED)
    spool = tmp_path / "spool"
    (spool / "inbox" / "tom").mkdir(parents=True)
    outside = _outside(tmp_path, hanks_png)
    before = _tree(outside)
    good_png, good_mp4 = _media(hanks_png, tmp_path)
    maker = DropMaker(rng, spool / "inbox", outside, good_png, good_mp4)
    cfg = WatchConfig(manifest_max_bytes=4096, presets={"tom": Preset("tom", hanks_png, None, {})})
    admission = Admission(cfg, spool / "inbox")
    documented = documented_reasons()
    outcomes: dict[str, int] = {}
    for _case in range(CASES):
        for path in maker.make():
            with _deadline(CASE_SECONDS):
                try:
                    if path.name.endswith(".job.json"):
                        verdict = admission.manifest(path, age=rng.choice([0, 10**6]), stable=lambda p: True)
                        outcome = (verdict.rejection.reason if verdict.rejection else
                                   "claim" if verdict.claim else "gone" if verdict.gone else "waiting")
                    elif path.parent.name == "tom":
                        admission.preset_drop(path)
                        outcome = "claim"
                    else:
                        admission.loose(path, age=rng.choice([0, 10**6]))
                        outcome = "waiting"
                except errors.DropError as err:
                    outcome = err.reason
                except (FileNotFoundError, FollowError):
                    outcome = "gone"
            assert outcome in documented | {"claim", "waiting", "gone"}, (path, outcome)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert _tree(outside) == before
    assert sum(outcomes.values()) >= CASES * 0.9
    print(f"fuzz admission: {CASES} cases (seed {SEED}), outcomes {dict(sorted(outcomes.items()))}")


def _daemon_output(proc: Any) -> str:
    with contextlib.suppress(Exception):
        return proc.stdout.read().decode(errors="replace")
    return ""


@pytest.mark.slow
def test_fuzzed_drops_against_a_running_daemon_never_crash_hang_or_escape(watch_env: WatchEnv,
                                                                          tmp_path: Path) -> None:
    env = watch_env
    env.write_config({"manifest_wait_seconds": 1, "orphan_seconds": 0, "manifest_max_bytes": 4096,
                      "job_timeout_seconds": 60})
    rng = random.Random(SEED + 1)
    outside = _outside(tmp_path, env.hanks)
    before = _tree(outside)
    good_png, good_mp4 = _media(env.hanks, tmp_path)
    maker = DropMaker(rng, env.inbox, outside, good_png, good_mp4)
    cases = max(20, CASES // 6)
    daemon = env.start()
    env.wait_ready()
    ran = 0
    while ran < cases:
        batch: list[Path] = []
        for _ in range(min(20, cases - ran)):
            batch += maker.make()
            ran += 1

        def settled(batch: list[Path] = batch) -> bool:
            refused = {d for e in env.events("drop_refused") for d in e["drop"]}
            return all(not os.path.lexists(p) or str(p.relative_to(env.spool)) in refused
                       or p.name.startswith(".") or p.name.endswith(".partial") for p in batch)

        try:
            wait_for(settled, 120, "the batch to settle (a hang?)", interval=0.2)
        except AssertionError:
            left = [str(p) for p in batch if os.path.lexists(p)]
            raise AssertionError(f"unsettled after 120 s: {left[:10]}") from None
        assert daemon.poll() is None, _daemon_output(daemon)[-3000:]
    for p in env.inbox.iterdir():  # what the daemon never takes (dotfiles, *.partial) goes now
        if p.name != "tom":
            with contextlib.suppress(OSError):
                p.unlink() if not p.is_dir() or p.is_symlink() else None
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(120) == 0
    out = _daemon_output(daemon)
    assert "Traceback" not in out, out[-3000:]
    reasons = {e["reason"] for e in env.failed().values()}
    assert reasons <= documented_reasons() - {"internal_error"}, reasons
    assert _tree(outside) == before
    for dirpath, _dirs, files in os.walk(env.tmp):
        assert not files, (dirpath, files)
    print(f"fuzz daemon: {ran} cases (seed {SEED + 1}), {len(env.done())} done, "
          f"{len(env.failed())} quarantined, reasons {sorted(reasons)}, "
          f"{len(env.events('drop_refused'))} refused")
    time.sleep(0)
