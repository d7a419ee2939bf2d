"""Typed bundle manifest: parsed from signed canonical JSON at the boundary, validated strictly.

The rest of the verifier and the installer only touch these frozen dataclasses, never raw JSON.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import rfc8785

from sealfuse.verifier.errors import (
    LicencePolicyViolationError,
    ManifestDuplicateKeyError,
    ManifestError,
)
from sealfuse.verifier.inputs import loads_strict
from sealfuse.verifier.licences import (
    DEFAULT_POLICY,
    LicenceClass,
    LicencePolicy,
    grant_problem,
    known,
    policy_class,
)

MANIFEST_TYPE = "sealfuse-manifest"
SPEC_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURES_DIR = "signatures/"
PAYLOAD_DIR = "payload/"
SIGSTORE_NAME = "signatures/manifest.sigstore.json"
KINDS = frozenset({"wheel", "model", "unit", "hardening", "image", "sbom", "config", "lock"})
# Always used with fullmatch: `$` would also match before a trailing newline.
_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8}))*")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_MANIFEST_BYTES = 16 << 20


def canonical(obj: Any) -> bytes:
    """RFC 8785 canonical JSON bytes."""
    return bytes(rfc8785.dumps(obj))


@dataclass(frozen=True, order=True)
class Version:
    """A dotted-integer version compared numerically ("1.10.0" > "1.9.3"); trailing zeros ignored."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> Version:
        if not isinstance(text, str) or not _VERSION.fullmatch(text):
            raise ValueError(f"version must be dotted integers like 1.2.3, got {text!r}")
        parts = [int(p) for p in text.split(".")]
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        return cls(tuple(parts))

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts)


def parse_time(text: str) -> dt.datetime:
    """Parse an ISO 8601 time; naive times are UTC."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_member_path(path: str) -> str | None:
    """None when `path` is a safe relative POSIX path, else the reason."""
    if not path:
        return "empty path"
    if _CONTROL.search(path) or "\\" in path:
        return "NUL, control character or backslash in path"
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if any(p == ".." for p in parts):
        return "'..' component"
    if any(p in ("", ".") for p in parts):
        return "empty or '.' component"
    return None


@dataclass(frozen=True)
class Member:
    """One payload file: archive path, size, sha256 and kind."""

    path: str
    size: int
    sha256: str
    kind: str

    @property
    def relpath(self) -> str:
        """Path below payload/ (where extract_bundle writes it inside dest_dir)."""
        return self.path[len(PAYLOAD_DIR):]


@dataclass(frozen=True)
class ModelEntry:
    """A model catalog entry; `file` is the archive path of a member of kind model.

    `licence` and `licence_class` are the model's own; `licence_grant` is the studio's reference
    for a commercial licence it holds for this file (None: no grant)."""

    name: str
    file: str
    sha256: str
    size: int
    licence: str
    licence_class: str = LicenceClass.UNKNOWN.value
    licence_grant: str | None = None

    @property
    def policy_class(self) -> str:
        """The class the licence policy counts (`commercial` under a grant)."""
        return policy_class(self.licence_class, self.licence_grant).value

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "file": self.file, "sha256": self.sha256,
                                "size": self.size, "licence": self.licence,
                                "licence_class": self.licence_class}
        if self.licence_grant is not None:  # absent without a grant: older manifests unchanged
            data["licence_grant"] = self.licence_grant
        return data


@dataclass(frozen=True)
class LockEntry:
    """A wheel to install: project name, version, archive path and sha256."""

    name: str
    version: str
    file: str
    sha256: str


@dataclass(frozen=True)
class Platform:
    """Target platform: python tag (cp311), machine arch (x86_64), wheel platform tag."""

    python: str
    arch: str
    tag: str = ""


@dataclass(frozen=True)
class Manifest:
    """The signed description of a bundle."""

    product: str
    version: str
    created: dt.datetime
    expires: dt.datetime
    platform: Platform
    members: tuple[Member, ...]
    models: tuple[ModelEntry, ...] = ()
    lock: tuple[LockEntry, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Which licence classes the bundle may carry; a manifest without the field means "any".
    licence_policy: str = DEFAULT_POLICY.value

    @property
    def version_key(self) -> Version:
        return Version.parse(self.version)

    def member(self, path: str) -> Member:
        for m in self.members:
            if m.path == path:
                return m
        raise KeyError(path)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "_type": MANIFEST_TYPE,
            "spec_version": SPEC_VERSION,
            "product": self.product,
            "version": self.version,
            "created": format_time(self.created),
            "expires": format_time(self.expires),
            "platform": {"python": self.platform.python, "arch": self.platform.arch,
                         "tag": self.platform.tag},
            "members": [{"path": m.path, "size": m.size, "sha256": m.sha256, "kind": m.kind}
                        for m in sorted(self.members, key=lambda m: m.path)],
            "models": [e.to_json() for e in self.models],
            "licence_policy": self.licence_policy,
            "lock": [{"name": e.name, "version": e.version, "file": e.file, "sha256": e.sha256}
                     for e in self.lock],
        }
        data.update(dict(self.extra))
        return data

    def canonical_bytes(self) -> bytes:
        return canonical(self.to_json())

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        """Parse and validate canonical manifest bytes (call only after signatures verified)."""
        data = loads_strict(raw, duplicate=ManifestDuplicateKeyError, invalid=ManifestError,
                            what="manifest.json", sha256=hashlib.sha256(raw).hexdigest())
        try:
            canon = canonical(data)
            if canon != raw:
                raise ManifestError("manifest.json is not RFC 8785 canonical JSON "
                                    "(re-serialising it changes its bytes)",
                                    actual_sha256=hashlib.sha256(raw).hexdigest(),
                                    canonical_sha256=hashlib.sha256(canon).hexdigest())
        except (TypeError, ValueError, rfc8785.CanonicalizationError) as exc:
            raise ManifestError(f"manifest.json cannot be canonicalised: {exc}",
                                sha256=hashlib.sha256(raw).hexdigest()) from exc
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        try:
            return _parse_manifest(data)
        except ManifestError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"manifest.json violates the schema: {exc!r}",
                                detail=repr(exc)) from exc


def _need(data: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in data:
        raise ManifestError(f"manifest field {key!r} is missing", field=key)
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"manifest field {key!r} must be {kind.__name__}", field=key)
    return value


def _sha(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ManifestError(f"{where}: sha256 must be 64 lowercase hex digits", field=where)
    return value


def _time(data: Mapping[str, Any], key: str) -> dt.datetime:
    text = _need(data, key, str)
    if not _TIME.fullmatch(text):
        raise ManifestError(f"manifest field {key!r} must be UTC like 2026-01-01T00:00:00Z, "
                            f"got {text!r}", field=key)
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ManifestError(f"manifest field {key!r}: {exc}", field=key) from exc


_KNOWN_FIELDS = {"_type", "spec_version", "product", "version", "created", "expires",
                 "platform", "members", "models", "lock", "licence_policy"}


def _parse_manifest(data: Any) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError("manifest.json must be a JSON object", actual=type(data).__name__)
    if data.get("_type") != MANIFEST_TYPE:
        raise ManifestError(f"manifest _type must be {MANIFEST_TYPE!r}, got {data.get('_type')!r}",
                            expected=MANIFEST_TYPE, actual=data.get("_type"))
    if _need(data, "spec_version", int) != SPEC_VERSION:
        raise ManifestError(f"unsupported manifest spec_version {data['spec_version']}",
                            expected=SPEC_VERSION, actual=data["spec_version"])
    product = _need(data, "product", str)
    version = _need(data, "version", str)
    try:
        Version.parse(version)
    except ValueError as exc:
        raise ManifestError(str(exc), field="version") from exc
    created = _time(data, "created")
    expires = _time(data, "expires")
    if expires <= created:
        raise ManifestError(f"manifest expires ({format_time(expires)}) before it was created "
                            f"({format_time(created)})", field="expires")
    pdata = _need(data, "platform", dict)
    platform = Platform(python=_need(pdata, "python", str), arch=_need(pdata, "arch", str),
                        tag=str(pdata.get("tag", "")))
    members: list[Member] = []
    seen: set[str] = set()
    for i, m in enumerate(_need(data, "members", list)):
        path = _need(m, "path", str)
        reason = check_member_path(path)
        if reason or not path.startswith(PAYLOAD_DIR):
            raise ManifestError(f"members[{i}].path {path!r} is unsafe or outside payload/: "
                                f"{reason or 'not under payload/'}", path=path)
        if path in seen:
            raise ManifestError(f"members lists {path!r} twice", path=path)
        seen.add(path)
        size = _need(m, "size", int)
        if size < 0:
            raise ManifestError(f"members[{i}].size is negative", path=path)
        kind = _need(m, "kind", str)
        if kind not in KINDS:
            raise ManifestError(f"members[{i}].kind {kind!r} not one of {sorted(KINDS)}", path=path)
        members.append(Member(path, size, _sha(m.get("sha256"), f"members[{i}]"), kind))
    by_path = {m.path: m for m in members}
    policy = data.get("licence_policy", DEFAULT_POLICY.value)
    if policy not in {p.value for p in LicencePolicy}:
        raise ManifestError(f"manifest licence_policy {policy!r} is not one of "
                            f"{sorted(p.value for p in LicencePolicy)}", field="licence_policy")
    models: list[ModelEntry] = []
    for i, e in enumerate(data.get("models", [])):
        file = _need(e, "file", str)
        table = known(file.rsplit("/", 1)[-1])
        # An older manifest has no licence_class: sealfuse's table (or unknown) stands in.
        cls = e.get("licence_class", table.licence_class.value if table else "unknown")
        if cls not in {c.value for c in LicenceClass}:
            raise ManifestError(f"models[{i}].licence_class {cls!r} is not one of "
                                f"{sorted(c.value for c in LicenceClass)}", path=file)
        grant = e.get("licence_grant")
        if grant is not None and (problem := grant_problem(grant)):
            raise ManifestError(f"models[{i}].licence_grant: {problem}", path=file,
                                field="licence_grant")
        entry = ModelEntry(name=_need(e, "name", str), file=file,
                           sha256=_sha(e.get("sha256"), f"models[{i}]"),
                           size=_need(e, "size", int), licence=_need(e, "licence", str),
                           licence_class=cls, licence_grant=grant)
        if not LicencePolicy(policy).allows(entry.policy_class):
            raise LicencePolicyViolationError(
                f"manifest declares licence_policy {policy} but lists {entry.file} "
                f"({entry.licence}: {cls}) without a licence grant", policy=policy,
                path=entry.file, licence_class=cls)
        m = by_path.get(entry.file)
        if m is None or m.kind != "model" or m.sha256 != entry.sha256 or m.size != entry.size:
            raise ManifestError(f"models[{i}] ({entry.name}) does not match a model member",
                                path=entry.file)
        models.append(entry)
    lock: list[LockEntry] = []
    for i, e in enumerate(data.get("lock", [])):
        entry = LockEntry(name=_need(e, "name", str), version=_need(e, "version", str),
                          file=_need(e, "file", str), sha256=_sha(e.get("sha256"), f"lock[{i}]"))
        m = by_path.get(entry.file)
        if m is None or m.kind != "wheel" or m.sha256 != entry.sha256:
            raise ManifestError(f"lock[{i}] ({entry.name}) does not match a wheel member",
                                path=entry.file)
        lock.append(entry)
    extra = {k: v for k, v in data.items() if k not in _KNOWN_FIELDS}
    return Manifest(product=product, version=version, created=created, expires=expires,
                    platform=platform, members=tuple(members), models=tuple(models),
                    lock=tuple(lock), extra=extra, licence_policy=policy)
