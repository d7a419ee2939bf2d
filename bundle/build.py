"""Build an unsigned, reproducible bundle: wheels + lock + SBOM, pinned models, units, hardening.

Same inputs and SOURCE_DATE_EPOCH give a byte-identical `<product>-<version>-<python>-<arch>.bundle`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sealfuse.bundle.errors import BuildError, WheelError
from sealfuse.bundle.models import check_policy, collect_models
from sealfuse.bundle.tarwrite import PayloadFile, write_bundle
from sealfuse.verifier.inputs import open_regular
from sealfuse.verifier.licences import DEFAULT_POLICY, LicencePolicy
from sealfuse.verifier.model import (
    LockEntry,
    Manifest,
    Member,
    ModelEntry,
    Platform,
    Version,
)

# Never both of a pair in one lock (installed with --no-deps, the last one would win silently).
CONFLICTS = [
    {"opencv-python", "opencv-python-headless", "opencv-contrib-python",
     "opencv-contrib-python-headless"},
    {"onnxruntime", "onnxruntime-gpu"},
]
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CPYTHON_TAG = re.compile(r"cp([0-9])([0-9]{1,2})")
CHUNK = 1 << 20


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    fd, _ = open_regular(path, "input file")
    with os.fdopen(fd, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Wheel:
    """A wheel file and the fields of its name (PEP 427)."""

    path: Path
    name: str
    version: str
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]

    @classmethod
    def parse(cls, path: Path) -> Wheel:
        stem = path.name[:-4] if path.name.endswith(".whl") else ""
        parts = stem.split("-")
        if len(parts) not in (5, 6):
            raise WheelError(f"{path.name} is not a wheel file name (PEP 427)", path=str(path))
        name, version = parts[0], parts[1]
        py, abi, plat = parts[-3:]
        return cls(path, normalize_name(name), version, tuple(py.split(".")),
                   tuple(abi.split(".")), tuple(plat.split(".")))

    def check_target(self, python_tag: str, arch: str) -> None:
        """Raise WheelError unless the wheel installs on CPython `python_tag` on `arch`."""
        minor = python_tag[3:]  # "cp311" -> "11"
        major = python_tag[2]
        ok_py = {"py3", f"py{major}", f"py{major}{minor}", python_tag}
        abi3_ok = "abi3" in self.abi_tags and any(
            (m := _CPYTHON_TAG.fullmatch(t)) is not None and m.group(1) == major
            and int(m.group(2)) <= int(minor) for t in self.python_tags)
        if not (ok_py & set(self.python_tags)) and not abi3_ok:
            raise WheelError(f"{self.path.name} is not for {python_tag}",
                             path=self.path.name, target=python_tag, tags=self.python_tags)
        if "any" not in self.platform_tags and not any(
                p.endswith(f"_{arch}") for p in self.platform_tags):
            raise WheelError(f"{self.path.name} is not for {arch}", path=self.path.name,
                             target=arch, tags=self.platform_tags)


@dataclass
class BuildInputs:
    """Everything `sealfuse bundle build` takes; paths may be missing or empty."""

    version: str
    out_dir: Path
    product: str = "sealfuse"
    python_version: str = "3.11"
    platform_tag: str = "manylinux_2_17_x86_64"
    wheelhouse: Path | None = None
    requirements: Sequence[Path] = ()
    pip_no_deps: bool = False
    models_dir: Path | None = None
    model_urls: Sequence[str] = ()
    licences: Mapping[str, str] = field(default_factory=dict)
    licence_policy: LicencePolicy = DEFAULT_POLICY
    # file -> the studio's reference for a commercial licence it holds (--licence-grant)
    licence_grants: Mapping[str, str] = field(default_factory=dict)
    units_dir: Path | None = Path("systemd")
    hardening_dir: Path | None = Path("hardening")
    configs: Sequence[Path] = ()
    images: Sequence[Path] = ()
    # `sealfuse provenance init`'s appliance/ dir: chain.pem + signing.key for C2PA signing
    provenance_dir: Path | None = None
    expires_days: int = 365
    source_date_epoch: int | None = None

    @property
    def python_tag(self) -> str:
        major, _, minor = self.python_version.partition(".")
        return f"cp{major}{minor}"

    @property
    def arch(self) -> str:
        for arch in ("x86_64", "aarch64", "arm64", "ppc64le", "s390x", "i686", "armv7l"):
            if self.platform_tag.endswith(arch):
                return arch
        return self.platform_tag.rsplit("_", 1)[-1]


@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: Manifest
    sha256: str
    warnings: tuple[str, ...]


def source_date_epoch(explicit: int | None = None) -> int:
    if explicit is not None:
        return explicit
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        try:
            return int(env)
        except ValueError:
            raise BuildError(f"SOURCE_DATE_EPOCH={env!r} is not an integer") from None
    return int(dt.datetime.now(dt.UTC).timestamp())


def pip_download(requirements: Sequence[Path], dest: Path, platform_tag: str,
                 python_version: str, no_deps: bool) -> None:
    """Fetch binary wheels for the target platform with pip (build host only)."""
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
           "--platform", platform_tag, "--python-version", python_version,
           "--implementation", "cp", "--disable-pip-version-check"]
    if no_deps:
        cmd.append("--no-deps")
    for req in requirements:
        cmd += ["-r", str(req)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"pip download failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}",
                         command=cmd)


def collect_wheels(dirs: Iterable[Path], python_tag: str, arch: str) -> list[Wheel]:
    wheels: dict[str, Wheel] = {}
    for d in dirs:
        for path in sorted(d.glob("*.whl")):
            wheel = Wheel.parse(path)
            wheel.check_target(python_tag, arch)
            if wheel.name in wheels:
                other = wheels[wheel.name]
                if sha256_file(other.path) == sha256_file(path):
                    continue
                raise WheelError(f"two wheels for {wheel.name}: {other.path.name} and {path.name}",
                                 paths=[other.path.name, path.name])
            wheels[wheel.name] = wheel
    for group in CONFLICTS:
        present = sorted(group & set(wheels))
        if len(present) > 1:
            raise WheelError(f"the lock may carry only one of {present} (installed with --no-deps)",
                             conflict=present)
    return [wheels[n] for n in sorted(wheels)]


def _tree(root: Path | None, prefix: str, kind: str, warnings: list[str]) -> list[tuple[str, Path, str]]:
    if root is None:
        return []
    if not root.is_dir():
        warnings.append(f"{root} does not exist; no {kind} files in this bundle")
        return []
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if p.is_symlink():
            raise BuildError(f"{p} is a symlink; bundles carry regular files only", path=str(p))
        if p.is_file():
            out.append((f"{prefix}{rel.as_posix()}", p, kind))
    if not out:
        warnings.append(f"{root} is empty; no {kind} files in this bundle")
    return out


def make_sbom(product: str, version: str, wheels: Sequence[tuple[Wheel, str]], epoch: int) -> bytes:
    """CycloneDX 1.6 JSON of the wheels; serial number and timestamp are deterministic."""
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    seed = "\n".join([product, version, *(f"{w.name}=={w.version} {sha}" for w, sha in wheels)])
    root = Component(name=product, version=version, type=ComponentType.APPLICATION,
                     bom_ref=f"{product}@{version}")
    bom = Bom(
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"urn:sealfuse:sbom:{seed}"),
        metadata=BomMetaData(timestamp=dt.datetime.fromtimestamp(epoch, dt.UTC), component=root),
    )
    components = []
    for wheel, sha in wheels:
        purl = PackageURL("pypi", name=wheel.name, version=wheel.version,
                          qualifiers={"file_name": wheel.path.name})
        component = Component(
            name=wheel.name, version=wheel.version, type=ComponentType.LIBRARY, purl=purl,
            bom_ref=purl.to_string(), hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha)])
        bom.components.add(component)
        components.append(component)
    # The lock is installed flat (--no-deps): every wheel is a direct dependency of the product.
    bom.register_dependency(root, components)
    return (JsonV1Dot6(bom).output_as_string(indent=2) + "\n").encode()


def make_lock(wheels: Sequence[tuple[Wheel, str]]) -> bytes:
    """pip requirements with hashes, for `pip install --no-index --no-deps --require-hashes -r`.

    `--find-links wheels` is resolved by pip relative to the lock file's own directory."""
    lines = ["# sealfuse wheel lock: pip install --no-index --no-deps --require-hashes -r lock.txt",
             "--find-links wheels"]
    lines += [f"{w.name}=={w.version} --hash=sha256:{sha}" for w, sha in wheels]
    return ("\n".join(lines) + "\n").encode()


def bundle_name(product: str, version: str, python_tag: str, arch: str) -> str:
    return f"{product}-{version}-{python_tag}-{arch}.bundle"


def build_bundle(inputs: BuildInputs) -> BuildResult:
    """Build the unsigned bundle into inputs.out_dir and return its path, manifest and sha256."""
    try:
        Version.parse(inputs.version)
    except ValueError as exc:
        raise BuildError(str(exc), version=inputs.version) from exc
    epoch = source_date_epoch(inputs.source_date_epoch)
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sealfuse-build-") as tmp_name:
        tmp = Path(tmp_name)
        wheel_dirs: list[Path] = []
        if inputs.wheelhouse is not None:
            if not inputs.wheelhouse.is_dir():
                raise BuildError(f"--wheelhouse {inputs.wheelhouse} is not a directory")
            wheel_dirs.append(inputs.wheelhouse)
        if inputs.requirements:
            (tmp / "pip").mkdir()
            pip_download(inputs.requirements, tmp / "pip", inputs.platform_tag,
                         inputs.python_version, inputs.pip_no_deps)
            wheel_dirs.append(tmp / "pip")
        wheels = collect_wheels(wheel_dirs, inputs.python_tag, inputs.arch)
        if not wheels:
            warnings.append("no wheels: the bundle installs no Python packages")
        (tmp / "models").mkdir()
        models = collect_models(inputs.models_dir, inputs.model_urls, inputs.licences,
                                tmp / "models", inputs.licence_grants)
        check_policy(models, LicencePolicy(inputs.licence_policy))

        files: list[tuple[str, Path, str]] = []
        hashed_wheels: list[tuple[Wheel, str]] = []
        for w in wheels:
            sha, _ = sha256_file(w.path)
            hashed_wheels.append((w, sha))
            files.append((f"payload/wheels/{w.path.name}", w.path, "wheel"))
        files += [(f"payload/models/{m.path.name}", m.path, "model") for m in models]
        files += _tree(inputs.units_dir, "payload/systemd/", "unit", warnings)
        files += _tree(inputs.hardening_dir, "payload/hardening/", "hardening", warnings)
        files += [(f"payload/config/{p.name}", p, "config") for p in inputs.configs]
        files += [(f"payload/images/{p.name}", p, "image") for p in inputs.images]
        if inputs.provenance_dir is not None:
            from sealfuse.bundle.provenance import appliance_files

            files += [(f"payload/provenance/{p.name}", p, "config") for p in appliance_files(inputs.provenance_dir)]
        inline = {
            "payload/lock.txt": (make_lock(hashed_wheels), "lock"),
            "payload/sbom.cdx.json": (make_sbom(inputs.product, inputs.version, hashed_wheels,
                                                epoch), "sbom"),
        }

        members: dict[str, Member] = {}
        payload: list[PayloadFile] = []
        for arcname, path, kind in files:
            if arcname in members or arcname in inline:
                raise BuildError(f"two inputs map to {arcname}", path=arcname)
            if not path.is_file():
                raise BuildError(f"{path} is not a regular file", path=str(path))
            sha, size = sha256_file(path)
            members[arcname] = Member(arcname, size, sha, kind)
            payload.append(PayloadFile(arcname, source=path))
        for arcname, (data, kind) in inline.items():
            members[arcname] = Member(arcname, len(data), hashlib.sha256(data).hexdigest(), kind)
            payload.append(PayloadFile(arcname, data=data))

        created = dt.datetime.fromtimestamp(epoch, dt.UTC)
        model_entries = tuple(
            ModelEntry(m.name, f"payload/models/{m.path.name}",
                       members[f"payload/models/{m.path.name}"].sha256,
                       members[f"payload/models/{m.path.name}"].size, m.licence,
                       str(m.licence_class), m.licence_grant)
            for m in models)
        lock = tuple(LockEntry(w.name, w.version, f"payload/wheels/{w.path.name}", sha)
                     for w, sha in hashed_wheels)
        manifest = Manifest(
            product=inputs.product, version=inputs.version, created=created,
            expires=created + dt.timedelta(days=inputs.expires_days),
            platform=Platform(inputs.python_tag, inputs.arch, inputs.platform_tag),
            members=tuple(sorted(members.values(), key=lambda m: m.path)),
            models=model_entries, lock=lock,
            licence_policy=str(LicencePolicy(inputs.licence_policy)))
        manifest_bytes = manifest.canonical_bytes()
        Manifest.from_bytes(manifest_bytes)  # the verifier's own schema check
        inputs.out_dir.mkdir(parents=True, exist_ok=True)
        out = inputs.out_dir / bundle_name(inputs.product, inputs.version, inputs.python_tag,
                                           inputs.arch)
        write_bundle(out, manifest_bytes, {}, payload, epoch)
    sha, _ = sha256_file(out)
    return BuildResult(out, manifest, sha, tuple(warnings))

