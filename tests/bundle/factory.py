"""Bundle factory for tests (after python-tuf's RepositorySimulator): valid bundles and every attack.

Inputs are generated in a temp dir: two tiny real wheels, a tiny model with a licence, a unit and a
hardening file. Keys are real Ed25519 keys; bundles are built and signed with the real builder.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealfuse.bundle.build import BuildInputs, build_bundle
from sealfuse.bundle.sign import sign_bundle
from sealfuse.verifier import errors as E
from sealfuse.verifier.keys import keyid_of, openssh_public, serialize_private
from sealfuse.verifier.trust import Trust, TrustedKey, make_trust

EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z
NOW = "2026-06-01T00:00:00Z"  # inside the default 365-day validity


def make_install_root(root: Path) -> Path:
    """A tree for `sealfuse install --root` (as tests/install lays it out), with this host's
    users and groups so systemd-sysusers can add the service user inside it."""
    import shutil

    for d in ("etc/systemd/system/multi-user.target.wants", "etc/sysusers.d", "etc/tmpfiles.d",
              "etc/apparmor.d", "var/lib", "opt", "run", "dev"):
        (root / d).mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        if Path(f"/etc/{name}").exists():
            shutil.copy(f"/etc/{name}", root / "etc" / name)
    return root


def make_wheel(directory: Path, name: str, version: str, body: str = "") -> Path:
    """A minimal, valid, deterministic pure-Python wheel that pip can install."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'VERSION = "{version}"\n{body}',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: sealfuse-tests\nRoot-Is-Purelib: true\n"
                         "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    out = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            info = zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
    return out


@dataclass
class Entry:
    """One tar member, editable by attacks."""

    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    size: int | None = None  # header size override (a size that lies)


def read_entries(bundle: Path) -> list[Entry]:
    with tarfile.open(bundle, "r:") as tar:
        out = []
        for m in tar.getmembers():
            f = tar.extractfile(m)
            out.append(Entry(m.name, f.read() if f else b"", m.type, m.linkname))
        return out


def write_entries(path: Path, entries: Sequence[Entry], mtime: int = EPOCH) -> Path:
    """Write arbitrary members (links, devices, unsafe names) as a POSIX tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mtime = mtime
            info.mode = 0o644
            info.linkname = e.linkname
            if e.type == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3
            if e.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    raw = bytearray(buf.getvalue())
    # A lying size: patch the header's size field (and checksum) after the fact.
    offset = 0
    for e in entries:
        hdr = _find_header(raw, e.name, offset)
        offset = hdr + 512
        if e.size is not None:
            raw[hdr + 124:hdr + 136] = f"{e.size:011o}\0".encode()
            raw[hdr + 148:hdr + 156] = b" " * 8
            raw[hdr + 148:hdr + 156] = f"{sum(raw[hdr:hdr + 512]):06o}\0 ".encode()
    path.write_bytes(bytes(raw))
    return path


def _find_header(raw: bytearray, name: str, start: int) -> int:
    key = name.encode()[:100]
    pos = start
    while pos < len(raw):
        if raw[pos:pos + len(key)] == key and raw[pos + 257:pos + 262] == b"ustar":
            return pos
        pos += 512
    raise AssertionError(f"header for {name} not found")


@dataclass
class BundleFactory:
    """Makes keys, a trust file, inputs and signed bundles under `root`."""

    root: Path
    n_keys: int = 3
    threshold: int = 2
    keys: list[Ed25519PrivateKey] = field(default_factory=list)
    trust: Trust | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys = [Ed25519PrivateKey.generate() for _ in range(self.n_keys)]
        self.trust = make_trust("sealfuse", [TrustedKey.from_public(k.public_key(), f"signer{i}")
                                            for i, k in enumerate(self.keys)], self.threshold)
        self.trust_path = self.root / "trust.json"
        self.trust.write(self.trust_path)
        self.inputs_dir = self.root / "inputs"
        wheels = self.inputs_dir / "wheels"
        models = self.inputs_dir / "models"
        units = self.inputs_dir / "systemd"
        hardening = self.inputs_dir / "hardening"
        for d in (wheels, models, units, hardening):
            d.mkdir(parents=True, exist_ok=True)
        make_wheel(wheels, "sfdemo", "1.0.0")
        make_wheel(wheels, "sfhelper", "0.3.1", body="def answer():\n    return 42\n")
        (models / "standin_detector.onnx").write_bytes(b"stand-in model bytes " * 64)
        (models / "catalog.json").write_text(
            '{"models": [{"file": "standin_detector.onnx", "name": "standin_detector", '
            '"licence": "MIT (test stand-in)"}]}')
        (units / "sealfuse-watch.service").write_text("[Service]\nExecStart=/bin/true\n")
        (hardening / "memory.conf").write_text("[Service]\nMemoryMax=4G\n")

    def key_path(self, index: int, passphrase: bytes | None = None) -> Path:
        """Write key `index` as an OpenSSH private key (0600) and its .pub; return the path."""
        path = self.root / f"key{index}"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(serialize_private(self.keys[index], passphrase))
            (self.root / f"key{index}.pub").write_text(
                openssh_public(self.keys[index].public_key(), f"signer{index}") + "\n")
        return path

    def inputs(self, version: str = "1.2.0", out: str = "out", **kw: object) -> BuildInputs:
        d = self.inputs_dir
        base = BuildInputs(version=version, out_dir=self.root / out, wheelhouse=d / "wheels",
                           models_dir=d / "models", units_dir=d / "systemd",
                           hardening_dir=d / "hardening", source_date_epoch=EPOCH)
        return replace(base, **kw)  # type: ignore[arg-type]

    def build(self, version: str = "1.2.0", signers: Sequence[int] = (0, 1), out: str = "out",
              extra_keys: Sequence[Ed25519PrivateKey] = (), **kw: object) -> Path:
        path = build_bundle(self.inputs(version, out, **kw)).path
        for i in signers:
            sign_bundle(path, self.keys[i])
        for k in extra_keys:
            sign_bundle(path, k)
        return path

    def variant(self, name: str, entries: Sequence[Entry]) -> Path:
        return write_entries(self.root / f"{name}.bundle", entries)


def _flip(data: bytes, at: int = -1) -> bytes:
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def _edit(entries: list[Entry], name_prefix: str, fn: Callable[[Entry], Entry | None]) -> list[Entry]:
    out: list[Entry] = []
    done = False
    for e in entries:
        if not done and e.name.startswith(name_prefix):
            done = True
            new = fn(e)
            if new is not None:
                out.append(new)
        else:
            out.append(e)
    assert done, f"no member starting with {name_prefix}"
    return out


@dataclass(frozen=True)
class Attack:
    """A tampered bundle and the exact error class the verifier must raise."""

    name: str
    error: type[E.VerificationError]
    make: Callable[[BundleFactory], Path]
    verify_kwargs: dict[str, object] = field(default_factory=dict)


def _entries(f: BundleFactory) -> list[Entry]:
    return read_entries(f.build())


def _only_raw(entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if not e.name.endswith(".sshsig")]


def _swap_raw(f: BundleFactory) -> Path:
    entries = _only_raw(_entries(f))
    sigs = [e for e in entries if e.name.endswith(".sig")]
    a, b = sigs[0], sigs[1]
    a.data, b.data = b.data, a.data
    return f.variant("swapped-raw", entries)


def _mix_and_match(f: BundleFactory) -> Path:
    other = read_entries(f.build(version="1.1.0", out="other"))
    entries = _entries(f)
    foreign = [e for e in other if e.name.startswith("signatures/")]
    mine = [e for e in entries if not e.name.startswith("signatures/")]
    return f.variant("mix-and-match", [mine[0], *foreign, *mine[1:]])


def _same_key_twice(f: BundleFactory) -> Path:
    entries = read_entries(f.build(signers=(0,)))
    ssh = next(e for e in entries if e.name.endswith(".sshsig"))
    copy = Entry("signatures/again.sshsig", ssh.data)
    raw = next(e for e in entries if e.name.endswith(".sig"))
    # the raw signature again under an SSHSIG made from the same key: still one key
    idx = entries.index(raw)
    return f.variant("same-key-twice", [*entries[:idx + 1], copy, *entries[idx + 1:]])


def _untrusted(f: BundleFactory) -> Path:
    return f.build(signers=(0,), extra_keys=[Ed25519PrivateKey.generate()], out="untrusted")


def _noncanonical(f: BundleFactory) -> Path:
    entries = [e for e in _entries(f) if not e.name.startswith("signatures/")]
    manifest = entries[0].data.replace(b'{"_type"', b'{ "_type"', 1)
    sigs = []
    for k in f.keys[:2]:
        sigs.append(Entry(f"signatures/{keyid_of(k.public_key())}.sig", k.sign(manifest)))
    return f.variant("noncanonical", [Entry("manifest.json", manifest), *sigs, *entries[1:]])


def _wrong_product(f: BundleFactory) -> Path:
    return f.build(product="othercorp", out="product")


def _add(entries: list[Entry], e: Entry) -> list[Entry]:
    return [*entries, e]


ATTACKS: list[Attack] = [
    Attack("flipped-byte-model", E.HashMismatchError, lambda f: f.variant(
        "flip-model", _edit(_entries(f), "payload/models/", lambda e: replace(e, data=_flip(e.data))))),
    Attack("flipped-byte-wheel", E.HashMismatchError, lambda f: f.variant(
        "flip-wheel", _edit(_entries(f), "payload/wheels/",
                            lambda e: replace(e, data=_flip(e.data, 40))))),
    Attack("flipped-byte-manifest", E.UnsignedManifestError, lambda f: f.variant(
        "flip-manifest", _edit(_entries(f), "manifest.json",
                               lambda e: replace(e, data=e.data.replace(b"1.2.0", b"1.3.0"))))),
    Attack("swapped-signature-files", E.UnsignedManifestError, _swap_raw),
    Attack("signatures-from-another-bundle", E.UnsignedManifestError, _mix_and_match),
    Attack("signature-by-untrusted-key", E.UnsignedManifestError, _untrusted),
    Attack("fewer-than-k-signatures", E.UnsignedManifestError, lambda f: f.build(signers=(2,))),
    Attack("same-key-twice-towards-k", E.UnsignedManifestError, _same_key_twice),
    Attack("garbage-signature-file", E.MalformedSignatureError, lambda f: f.variant(
        "garbage-sig", [_entries(f)[0], Entry("signatures/x.sshsig", b"not a signature"),
                        *_entries(f)[1:]])),
    Attack("expired-manifest", E.ExpiredManifestError, lambda f: f.build(expires_days=30)),
    Attack("rollback-below-floor", E.BadVersionNumberError, lambda f: f.build(version="1.2.0"),
           {"floor_version": "1.10.0"}),
    Attack("same-version-as-floor", E.BadVersionNumberError, lambda f: f.build(version="1.2.0"),
           {"floor_version": "1.2"}),
    Attack("member-not-in-manifest", E.UnexpectedMemberError, lambda f: f.variant(
        "extra", _add(_entries(f), Entry("payload/models/extra.onnx", b"evil")))),
    Attack("member-missing", E.MissingMemberError, lambda f: f.variant(
        "missing", _edit(_entries(f), "payload/models/", lambda e: None))),
    Attack("duplicated-member", E.DuplicateMemberError, lambda f: f.variant(
        "dup", _add(_entries(f), next(e for e in _entries(f)
                                       if e.name.startswith("payload/models/"))))),
    Attack("absolute-path", E.UnsafePathError, lambda f: f.variant(
        "abs", _add(_entries(f), Entry("/etc/cron.d/evil", b"* * * * * root sh\n")))),
    Attack("dotdot-path", E.UnsafePathError, lambda f: f.variant(
        "dotdot", _add(_entries(f), Entry("payload/../../etc/evil", b"x")))),
    Attack("symlink-member", E.LinkMemberError, lambda f: f.variant(
        "symlink", _add(_entries(f), Entry("payload/models/link", type=tarfile.SYMTYPE,
                                           linkname="/etc/shadow")))),
    Attack("hardlink-member", E.LinkMemberError, lambda f: f.variant(
        "hardlink", _add(_entries(f), Entry("payload/models/hard", type=tarfile.LNKTYPE,
                                            linkname="payload/lock.txt")))),
    Attack("device-member", E.NotRegularFileError, lambda f: f.variant(
        "device", _add(_entries(f), Entry("payload/dev-null", type=tarfile.CHRTYPE)))),
    Attack("directory-member", E.NotRegularFileError, lambda f: f.variant(
        "dir", _add(_entries(f), Entry("payload/extra-dir", type=tarfile.DIRTYPE)))),
    Attack("trailing-data", E.TrailingDataError, lambda f: _append(f.build(), b"MALWARE")),
    Attack("truncated-archive", E.TruncatedArchiveError, lambda f: _truncate(f.build())),
    Attack("size-that-lies", E.LengthMismatchError, lambda f: f.variant(
        "lying-size", _edit(_entries(f), "payload/models/",
                            lambda e: replace(e, data=e.data + b"X")))),
    Attack("header-size-patched", E.LengthMismatchError, lambda f: f.variant(
        "patched-size", _edit(_entries(f), "payload/models/",
                              lambda e: replace(e, size=len(e.data) - 512)))),
    Attack("manifest-not-first", E.ArchiveLayoutError, lambda f: f.variant(
        "order", list(reversed(_entries(f))))),
    Attack("signed-but-not-canonical-manifest", E.ManifestError, _noncanonical),
    Attack("other-product", E.ProductMismatchError, _wrong_product),
]


def _append(path: Path, data: bytes) -> Path:
    with open(path, "ab") as f:
        f.write(data)
    return path


def _truncate(path: Path) -> Path:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    return path

