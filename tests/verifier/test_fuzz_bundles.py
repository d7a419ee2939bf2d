"""Seeded fuzzing of signed bundles: bit flips, ustar field and pax record mutations, and structural
edits, run through `sealfuse verify` and `sealfuse install --root` in-process.

Every case must end with a documented exit code, no traceback, no hang (a per-case alarm) and
nothing written outside the install root. Whenever sealfuse accepts a mutant, GNU tar and Python's
tarfile must list the same members with the same sizes and bytes (the differential test).
SEALFUSE_FUZZ_CASES (default 2000) and SEALFUSE_FUZZ_SEED change the run; SEALFUSE_FUZZ_INSTALL_CASES
(default 150) how many of the cases also go through the installer.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sealfuse.cli import main
from sealfuse.verifier.archive import TarReader
from sealfuse.verifier.errors import EXIT_CODES, VerificationError
from tests.bundle.factory import BundleFactory, make_install_root
from tests.system.wheelhouse import build_sealfuse_wheel
from tests.verifier import tarcraft as T

CASES = int(os.environ.get("SEALFUSE_FUZZ_CASES", "2000"))
INSTALL_CASES = int(os.environ.get("SEALFUSE_FUZZ_INSTALL_CASES", "150"))
SEED = int(os.environ.get("SEALFUSE_FUZZ_SEED", "20261125"))
CASE_TIMEOUT = 30.0  # seconds; a hang fails the case (a correct case takes milliseconds)

pytestmark = pytest.mark.slow

Member = tuple[str, int, str]  # (name, size, sha256)


class CaseTimeout(BaseException):  # noqa: N818 - not an error the code under test may catch
    """The per-case alarm went off: the command under test hangs."""


@dataclass(frozen=True)
class Mutant:
    """One fuzz case: how it was made (for the failure message) and its bytes."""

    index: int
    how: str
    data: bytes


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise CaseTimeout


def _within_timeout(fn: Callable[[], Result]) -> Result:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# -- the corpus -----------------------------------------------------------------------------------
def _header_offsets(data: bytes) -> list[int]:
    """Offsets of every header block (ustar and pax) of a well-formed archive."""
    offsets = []
    pos = 0
    while pos + 512 <= len(data) and any(data[pos:pos + 512]):
        offsets.append(pos)
        size = int(data[pos + 124:pos + 136].rstrip(b"\x00 ") or b"0", 8)
        pos += 512 + size + (-size % 512)
    return offsets


NUMERIC_VALUES = [
    b"0000000\x00", b" 000644\x00", b"0000644 ", b"0000644\x00junk"[:8], b"00006\xd9\xa1\x00",
    b"\xc2\xb90000\x00", b"99999999", b"\x00" * 8, b" " * 8, b"\x80" + bytes(7), b"\xff" * 8,
    b"+000644\x00", b"-000001\x00", b"0x1f\x00\x00\x00\x00", b"7777777\x00", b"0000000",
]
TEXT_VALUES = [b"", b"payload/models/standin_detector.onnx", b"manifest.json", b"/etc/passwd",
               b"../../x", b"payload/\n", b"a\x00b", b"\xc3\xa9", b"signatures/", b"payload//x"]
TYPEFLAGS = [b"0", b"\x00", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"x", b"g", b"L", b"K",
             b"S", b"V", b"A", b"\xff"]


def _pax_values(rng: random.Random, member: T.Member) -> bytes:
    size = str(len(member.data))
    choices: list[bytes] = [
        T.record("size", size),
        T.record("size", "\u00b9" + size),
        T.record("size", "".join(chr(0x660 + int(c)) for c in size)),
        T.record("size", "0" + size),
        T.record("size", " " + size),
        T.record("size", str(len(member.data) + rng.choice([-1, 1, 512]))),
        T.record("size", size) + T.record("size", size),
        T.record("path", member.name),
        T.record("path", member.name + "\n"),
        T.record("path", member.name + "\x00evil"),
        T.record("path", "payload/" + "y" * 150),
        T.record("path", member.name) + T.record("path", "payload/evil"),
        T.record("mtime", "1.5"),
        T.record("linkpath", "/etc/shadow"),
        T.record("hdrcharset", "BINARY"),
        T.record("size", size)[:-1],
        b"1" + T.record("size", size),
        T.record("size", size).replace(b" ", b"  ", 1),
    ]
    return rng.choice(choices)


def _mutate(rng: random.Random, base: bytes, members: list[T.Member]) -> tuple[str, bytes]:
    kind = rng.choice(["bitflip", "bitflip-header", "field", "field", "pax", "typeflag",
                       "structure"])
    offsets = _header_offsets(base)
    data = bytearray(base)
    if kind == "bitflip":
        flips = [rng.randrange(len(data) * 8) for _ in range(rng.randint(1, 8))]
        for bit in flips:
            data[bit // 8] ^= 1 << (bit % 8)
        return f"bitflip {flips}", bytes(data)
    if kind == "bitflip-header":
        at = rng.choice(offsets)
        bits = [rng.randrange(512 * 8) for _ in range(rng.randint(1, 3))]
        for bit in bits:
            data[at + bit // 8] ^= 1 << (bit % 8)
        if rng.random() < 0.7:
            block = bytearray(data[at:at + 512])
            T.fix_checksum(block)
            data[at:at + 512] = block
        return f"header bitflip at {at} bits {bits}", bytes(data)
    if kind == "field":
        at = rng.choice(offsets)
        name = rng.choice(sorted(T.FIELDS))
        start, width = T.FIELDS[name]
        if name in ("name", "linkname", "uname", "gname", "prefix"):
            value = rng.choice(TEXT_VALUES)
        elif name in ("magic", "version", "pad", "typeflag"):
            value = bytes(rng.randrange(256) for _ in range(width))
        else:
            value = rng.choice(NUMERIC_VALUES + [bytes(rng.randrange(256) for _ in range(width))])
            if name in ("size", "mtime"):
                value = rng.choice([b"0000" + value, b"\x00\x00\x00\x00" + value, value + b"    "])
        value = value[:width].ljust(width, b"\x00")
        data[at + start:at + start + width] = value
        fixed = rng.random() < 0.85 and name != "chksum"
        if fixed:
            block = bytearray(data[at:at + 512])
            T.fix_checksum(block)
            data[at:at + 512] = block
        return f"field {name}={value!r} at {at} (checksum fixed: {fixed})", bytes(data)
    if kind == "pax":
        copy = [T.Member(m.name, m.data, m.pax, dict(m.fields), m.typeflag, m.size)
                for m in members]
        target = rng.choice(copy)
        target.pax = _pax_values(rng, target)
        if b"size=" in target.pax and rng.random() < 0.7:
            target.size = 0
        return f"pax on {target.name}: {target.pax!r} (ustar size {target.size})", \
            T.archive(copy)
    if kind == "typeflag":
        at = rng.choice(offsets)
        flag = rng.choice(TYPEFLAGS)
        data[at + 156:at + 157] = flag
        block = bytearray(data[at:at + 512])
        T.fix_checksum(block)
        data[at:at + 512] = block
        return f"typeflag {flag!r} at {at}", bytes(data)
    op = rng.choice(["truncate", "append-random", "append-zeros", "drop-block", "dup-block",
                     "insert-block"])
    block_count = len(data) // 512
    blk = rng.randrange(block_count) * 512
    if op == "truncate":
        cut = rng.randrange(len(data))
        return f"truncate at {cut}", bytes(data[:cut])
    if op == "append-random":
        extra = bytes(rng.randrange(256) for _ in range(rng.randint(1, 1024)))
        return f"append {len(extra)} random bytes", bytes(data) + extra
    if op == "append-zeros":
        return "append zeros", bytes(data) + bytes(rng.choice([1, 511, 512, 10240]))
    if op == "drop-block":
        return f"drop block at {blk}", bytes(data[:blk] + data[blk + 512:])
    if op == "dup-block":
        return f"duplicate block at {blk}", bytes(data[:blk + 512] + data[blk:])
    insert = T.header("payload/x", 0) if rng.random() < 0.5 else bytes(512)
    return f"insert block at {blk}", bytes(data[:blk] + insert + data[blk:])


def _mutants(base: bytes, members: list[T.Member], count: int) -> Iterator[Mutant]:
    for i in range(count):
        rng = random.Random(SEED * 1_000_003 + i)
        how, data = _mutate(rng, base, members)
        yield Mutant(i, how, data)


# -- three readers --------------------------------------------------------------------------------
def sealfuse_members(path: Path) -> list[Member]:
    out: list[Member] = []
    with open(path, "rb", buffering=0) as f:
        reader = TarReader(f)
        while (h := reader.next()) is not None:
            digest = hashlib.sha256()
            reader.read_data(h.size, digest.update)
            out.append((h.name, h.size, digest.hexdigest()))
    return out


def tarfile_members(path: Path) -> list[Member]:
    out: list[Member] = []
    with tarfile.open(path, "r:") as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            data = f.read() if f is not None else b""
            out.append((m.name, m.size, hashlib.sha256(data).hexdigest()))
    return out


_TV_LINE = re.compile(r"\S+ \S+ +(\d+) \S+ \S+ (.*)")


def gnu_tar_members(path: Path, work: Path) -> list[Member]:
    listing = subprocess.run(["tar", "-tvf", str(path)], capture_output=True, text=True,
                             check=True, timeout=60, env={**os.environ, "LC_ALL": "C"}).stdout
    out_dir = work / "gnu-x"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    subprocess.run(["tar", "-xf", str(path), "-C", str(out_dir), "--no-same-owner"],
                   capture_output=True, check=True, timeout=60)
    out: list[Member] = []
    for line in listing.splitlines():
        m = _TV_LINE.fullmatch(line)
        assert m is not None, line
        name = m.group(2)
        data = (out_dir / name).read_bytes()
        out.append((name, int(m.group(1)), hashlib.sha256(data).hexdigest()))
    return out


# -- the harness ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fuzz")
    factory = BundleFactory(root / "factory", n_keys=2, threshold=1)
    build_sealfuse_wheel(factory.inputs_dir / "wheels")  # the installer needs the sealfuse command
    long_config = root / ("settings-" + "c" * 120 + ".toml")  # a pax path record in the base
    long_config.write_text("x = 1\n")
    created = int(time.time()) - 86400
    repo = Path(__file__).resolve().parents[2]
    bundle = factory.build(version="1.0.1", signers=(0,), configs=[long_config],
                           source_date_epoch=created, expires_days=30,
                           units_dir=repo / "systemd", hardening_dir=repo / "hardening")
    return {"root": root, "factory": factory, "bundle": bundle, "base": bundle.read_bytes(),
            "members": T.members_of(bundle)}


def _snapshot(top: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            st = (here / name).lstat()
            out[str(here / name)] = (st.st_mode, st.st_size)
    return out


def _reasons(root: type) -> set[str]:
    """Every `reason` of `root` and its subclasses (the documented refusal ids)."""
    out = {root.reason}  # type: ignore[attr-defined]
    for sub in root.__subclasses__():
        out |= _reasons(sub)
    return out


def _documented(help_text: str) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s", help_text, re.MULTILINE)}


def test_mutated_bundles_end_in_documented_codes_and_accepted_ones_read_alike_everywhere(
        corpus: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    factory: BundleFactory = corpus["factory"]
    runner = CliRunner()
    install_help = runner.invoke(main, ["install", "--help"]).output
    install_codes = _documented(install_help) | set(EXIT_CODES)
    from sealfuse.appliance.errors import ApplianceError

    verify_reasons = _reasons(VerificationError)
    install_reasons = verify_reasons | _reasons(ApplianceError)
    root = make_install_root(tmp_path / "root")
    trust = str(factory.trust_path)
    # Pin the trust file and install the unmutated bundle once: a mutant that verifies then
    # stops at "this version is running" instead of building one venv per case.
    first = runner.invoke(main, ["install", str(corpus["bundle"]), "--root", str(root),
                                 "--trust", trust, "--no-start", "--python", sys.executable,
                                 "--json"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    system_paths = [Path(p) for p in ("/opt/sealfuse", "/var/lib/sealfuse", "/etc/sealfuse")]
    system_before = {p: p.exists() for p in system_paths}

    cases_dir = tmp_path / "cases"
    cases_dir.mkdir()
    counts: dict[str, int] = {}
    accepted = installed_cases = 0
    started = time.monotonic()
    for mutant in _mutants(corpus["base"], corpus["members"], CASES):
        path = cases_dir / "case.bundle"
        path.write_bytes(mutant.data)
        where = f"case {mutant.index} (seed {SEED}): {mutant.how}"
        res = _within_timeout(lambda p=path: runner.invoke(
            main, ["verify", str(p), "--trust", trust, "--json"]))
        assert not isinstance(res.exception, CaseTimeout), f"verify hangs on {where}"
        assert res.exception is None or isinstance(res.exception, SystemExit), \
            f"verify raised {res.exception!r} on {where}"
        assert res.exit_code in EXIT_CODES, f"undocumented exit {res.exit_code} on {where}"
        doc = json.loads(res.output)
        counts[doc.get("reason", "accepted")] = counts.get(doc.get("reason", "accepted"), 0) + 1
        if res.exit_code == 0:
            accepted += 1
            mine = sealfuse_members(path)
            assert tarfile_members(path) == mine, f"tarfile reads another archive: {where}"
            assert gnu_tar_members(path, tmp_path) == mine, f"GNU tar reads another archive: {where}"
        else:
            assert doc["ok"] is False and doc["exit_code"] == res.exit_code
            assert doc["reason"] in verify_reasons, f"undocumented reason {doc['reason']}: {where}"

        if mutant.index < INSTALL_CASES:
            installed_cases += 1
            before = _snapshot(tmp_path, root)
            res = _within_timeout(lambda p=path: runner.invoke(
                main, ["install", str(p), "--root", str(root), "--no-start", "--python",
                       sys.executable, "--json"]))
            assert not isinstance(res.exception, CaseTimeout), f"install hangs on {where}"
            assert res.exception is None or isinstance(res.exception, SystemExit), \
                f"install raised {res.exception!r} on {where}"
            assert res.exit_code in install_codes, f"undocumented install exit {res.exit_code}"
            assert res.exit_code != 0, f"install accepted a second copy of the release: {where}"
            assert json.loads(res.output)["reason"] in install_reasons, where
            assert _snapshot(tmp_path, root) == before, f"install wrote outside --root: {where}"
    elapsed = time.monotonic() - started
    assert {p: p.exists() for p in system_paths} == system_before
    with capsys.disabled():
        print(f"\nfuzz: {CASES} mutated bundles through verify ({installed_cases} also through "
              f"install --root) in {elapsed:.1f} s, seed {SEED}; {accepted} accepted and "
              f"read alike by GNU tar and tarfile; outcomes {dict(sorted(counts.items()))}")
    assert sum(counts.values()) == CASES
    assert len(counts) >= 8, f"the mutations reach too few refusals: {counts}"


def test_differential_readers_agree_on_the_unmutated_bundle(corpus: dict[str, Any],
                                                            tmp_path: Path) -> None:
    """The three readers used above, checked against each other on a bundle they must agree on."""
    mine = sealfuse_members(corpus["bundle"])
    assert len(mine) == len(corpus["members"]) and mine[0][0] == "manifest.json"
    assert tarfile_members(corpus["bundle"]) == mine
    assert gnu_tar_members(corpus["bundle"], tmp_path) == mine
