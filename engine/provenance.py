"""C2PA content credentials on every output: a manifest signed with the appliance's certificate.

Signing runs on the finished temporary file inside the atomic write (`fsio.commit_partial`), so
the file that appears is already signed. The manifest says what was done and by which models; it
never holds the source face, a thumbnail, an embedding, or a source or target file name.
"""

from __future__ import annotations

import errno
import importlib.metadata
import io
import os
import stat
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sealfuse.engine.errors import EXIT_PROVENANCE, EngineError
from sealfuse.engine.fsio import sha256_file

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
ASSERTION_LABEL = "org.sealfuse.swap"
# Output formats that can carry an embedded C2PA manifest (c2pa-rs). Matroska/WebM cannot.
SIGNABLE: dict[str, str] = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                            ".webp": "image/webp", ".mp4": "video/mp4", ".mov": "video/quicktime"}
# the installed release's key (from its bundle), else one the operator put in /etc
DEFAULT_DIRS = (Path("/opt/sealfuse/current/provenance"), Path("/etc/sealfuse/provenance"))
KEY_FILE, CHAIN_FILE = "signing.key", "chain.pem"
IN_MEMORY_BYTES = 64 << 20
# Reading back never leaves the machine: no OCSP, no remote manifests.
OFFLINE_SETTINGS: dict[str, Any] = {"verify": {"ocsp_fetch": False, "remote_manifest_fetch": False}}
SIGN_SETTINGS: dict[str, Any] = {
    **OFFLINE_SETTINGS,
    # the source face must never be embedded: no claim or ingredient thumbnails
    "builder": {"thumbnail": {"enabled": False}},
}
# Options that shaped the pixels; paths, threads and memory limits do not and stay out.
SHAPING_OPTIONS = ("frame_processors", "face_swapper_model", "face_enhancer_model", "face_enhancer_blend",
                   "face_enhancer_weight",
                   "face_detector_model", "face_detector_score", "blend_ratio", "face_mask_types",
                   "face_mask_blur", "face_mask_padding", "face_selector_mode", "reference_face_distance",
                   "detect_every", "output_video_encoder", "output_video_quality", "output_video_preset",
                   "trim_frame_start", "trim_frame_end", "label", "label_corner")


class ProvenanceError(EngineError):
    """The output must carry content credentials and cannot (exit 9)."""

    exit_code = EXIT_PROVENANCE
    reason = "provenance_error"


class UnsignedOutputRefusedError(ProvenanceError):
    """Signed output is required and no signing key is configured."""

    reason = "unsigned_output_refused"


class UnsignableFormatError(ProvenanceError):
    """Signed output is required and the output format cannot carry a C2PA manifest."""

    reason = "unsignable_format"


class SigningKeyError(ProvenanceError):
    """The configured key or certificate chain is unreadable, mismatched or expired."""

    reason = "signing_key_unusable"


class SigningUnavailableError(ProvenanceError):
    """A key is configured but c2pa-python is not installed."""

    reason = "signing_unavailable"


class SigningFailedError(ProvenanceError):
    reason = "signing_failed"


def sealfuse_version() -> str:
    try:
        return importlib.metadata.version("sealfuse")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


@dataclass(frozen=True)
class ProvenanceConfig:
    """Where the signing key and chain are, and whether unsigned output is allowed."""

    key: Path | None = None
    chain: Path | None = None
    require: bool = False

    @classmethod
    def from_environment(cls, *, require: bool = False) -> ProvenanceConfig:
        """$SEALFUSE_PROVENANCE_KEY/_CHAIN, else {signing.key,chain.pem} in /opt/sealfuse/current/provenance
        or /etc/sealfuse/provenance, whichever has a key this process can read first; else no key (unsigned)."""
        key = os.environ.get("SEALFUSE_PROVENANCE_KEY")
        chain = os.environ.get("SEALFUSE_PROVENANCE_CHAIN")
        if key or chain:
            return cls(Path(key) if key else None, Path(chain) if chain else None, require)
        for d in DEFAULT_DIRS:
            # a key this process may not read (0400 for the service user) is not ours to use: unsigned
            if (d / KEY_FILE).exists() and os.access(d / KEY_FILE, os.R_OK):
                return cls(d / KEY_FILE, d / CHAIN_FILE, require)
        return cls(None, None, require)

    def to_dict(self) -> dict[str, Any]:
        return {"key": str(self.key) if self.key else None, "chain": str(self.chain) if self.chain else None,
                "require": self.require}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ProvenanceConfig:
        """The inverse of `to_dict`; None means `from_environment()` (the installed key, if any)."""
        if d is None:
            return cls.from_environment()
        return cls(Path(d["key"]) if d.get("key") else None, Path(d["chain"]) if d.get("chain") else None,
                   bool(d.get("require", False)))


@dataclass(frozen=True)
class Claim:
    """What a manifest says about one output (never a file name or anything of the faces)."""

    job_id: str
    models: tuple[dict[str, str], ...]
    options: dict[str, Any]
    kind: str  # "image" | "video"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_job(cls, job_id: str | None, kind: str, models: list[dict[str, Any]], options: Any) -> Claim:
        opts = asdict(options) if hasattr(options, "__dataclass_fields__") else dict(options)
        shaping = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items() if k in SHAPING_OPTIONS}
        shaping["reference_face"] = opts.get("reference_face_image") is not None
        shaping["face_map_pairs"] = len(opts.get("face_map") or ())  # how many, never which files
        if "face_mask_padding" in shaping:  # CBOR would turn a list of small ints into a byte string
            shaping["face_mask_padding"] = dict(zip(("top", "right", "bottom", "left"),
                                                    shaping["face_mask_padding"], strict=True))
        used = tuple({"name": str(m["name"]), "file": Path(str(m["file"])).name, "sha256": str(m["sha256"])}
                     for m in models)
        return cls(job_id or uuid.uuid4().hex, used, shaping, kind)


def manifest_definition(claim: Claim, mime: str, manifest_id: str) -> dict[str, Any]:
    """The C2PA manifest definition for one output."""
    version = sealfuse_version()
    agent = {"name": "sealfuse", "version": version}
    return {
        "label": manifest_id,
        "claim_generator_info": [agent],
        "title": f"sealfuse {claim.kind} output",
        "format": mime,
        # the parent is "the target"; its name, pixels and thumbnail are left out on purpose
        "ingredients": [{"title": "target", "format": mime, "relationship": "parentOf", "label": "target"}],
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.opened", "parameters": {"ingredientIds": ["target"]}},
                {"action": "c2pa.edited", "digitalSourceType": DIGITAL_SOURCE_TYPE, "softwareAgent": agent,
                 "description": "faces replaced by a face-swap model",
                 "parameters": {"job_id": claim.job_id}},
            ]}},
            {"label": ASSERTION_LABEL, "data": {
                "job_id": claim.job_id, "kind": claim.kind, "software": agent,
                "models": [dict(m) for m in claim.models], "options": claim.options, **claim.extra}},
        ],
    }


def _algorithm(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name in algs:
            return algs[key.curve.name]
    raise ValueError(f"unsupported key type {type(key).__name__} (use Ed25519 or ECDSA P-256)")


def _read_small(path: Path, limit: int = 1 << 20) -> bytes:
    """A key or chain file: a regular file (a FIFO must not block, /dev/zero not run forever),
    at most `limit` bytes; anything else is an OSError naming why."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return data


class Sealer:
    """A loaded signing key and certificate chain; signs finished files in place."""

    def __init__(self, key_pem: bytes, chain_pem: bytes, *, origin: str = "") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
            alg = _algorithm(key)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"signing key {origin}: {exc}", key=origin) from None
        try:
            certs = x509.load_pem_x509_certificates(chain_pem)
        except ValueError as exc:
            raise SigningKeyError(f"certificate chain {origin}: {exc}", chain=origin) from None
        leaf = certs[0]
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(serialization.Encoding.DER, pub) != \
                key.public_key().public_bytes(serialization.Encoding.DER, pub):  # type: ignore[union-attr]
            raise SigningKeyError(f"{origin}: the signing key does not belong to the chain's first certificate",
                                  subject=leaf.subject.rfc4514_string())
        self.alg = alg
        self.key_pem, self.chain_pem = key_pem, chain_pem
        self.subject = leaf.subject.rfc4514_string()
        self.issuer = leaf.issuer.rfc4514_string()
        self.not_after = leaf.not_valid_after_utc
        self.fingerprint = leaf.fingerprint(hashes.SHA256()).hex()

    @classmethod
    def from_files(cls, key: Path, chain: Path) -> Sealer:
        try:
            key_pem = _read_small(Path(key))
        except OSError as exc:
            raise SigningKeyError(f"signing key {key}: cannot read ({exc.strerror})", key=key) from None
        try:
            chain_pem = _read_small(Path(chain))
        except OSError as exc:
            raise SigningKeyError(f"certificate chain {chain}: cannot read ({exc.strerror})", chain=chain) from None
        return cls(key_pem, chain_pem, origin=f"{key} / {chain}")

    def describe(self) -> dict[str, Any]:
        return {"alg": self.alg, "subject": self.subject, "issuer": self.issuer,
                "not_after": self.not_after.isoformat(), "sha256_fingerprint": self.fingerprint}

    def seal(self, tmp: Path, mime: str, claim: Claim) -> dict[str, Any]:
        """Sign the finished file `tmp` in place (via a second temp file); returns what was signed."""
        try:
            import c2pa
        except ImportError:
            raise SigningUnavailableError("signing needs c2pa-python, which this installation lacks "
                                          "(pip install 'sealfuse[provenance]')") from None
        t0 = time.perf_counter()
        manifest_id = f"urn:c2pa:{uuid.uuid4()}"
        signed = tmp.with_name(tmp.name.removesuffix(".partial") + ".signed.partial")
        try:
            info = c2pa.C2paSignerInfo(self.alg.upper().encode(), self.chain_pem, self.key_pem, None)
            with c2pa.Signer.from_info(info) as signer, c2pa.Context.from_dict(SIGN_SETTINGS) as ctx, \
                    c2pa.Builder(manifest_definition(claim, mime, manifest_id), ctx) as builder:
                if mime.startswith("image/") and tmp.stat().st_size <= IN_MEMORY_BYTES:
                    # images: sign in memory (the SDK's many small stream calls cost more on files)
                    out = io.BytesIO()
                    builder.sign(signer, mime, io.BytesIO(tmp.read_bytes()), out)
                    with open(signed, "wb") as dst:
                        dst.write(out.getbuffer())
                else:
                    with open(tmp, "rb") as src, open(signed, "w+b") as dst:
                        builder.sign(signer, mime, src, dst)
            # commit_partial fsyncs the result before the rename
            os.replace(signed, tmp)
        except c2pa.C2paError as exc:
            signed.unlink(missing_ok=True)
            raise SigningFailedError(f"C2PA signing failed: {exc}", format=mime) from None
        except BaseException:
            signed.unlink(missing_ok=True)
            raise
        return {"signed": True, "manifest_id": manifest_id, "format": mime, "job_id": claim.job_id,
                "certificate": self.subject, "sign_ms": round((time.perf_counter() - t0) * 1000, 2)}


class Provenance:
    """The policy for one engine: a loaded key (or none) and whether unsigned output is allowed."""

    def __init__(self, config: ProvenanceConfig | None = None) -> None:
        self.config = config or ProvenanceConfig()
        self.sealer: Sealer | None = None
        if self.config.key is not None:
            if self.config.chain is None:
                raise SigningKeyError(f"signing key {self.config.key} is configured without its certificate chain",
                                      key=self.config.key)
            self.sealer = Sealer.from_files(self.config.key, self.config.chain)
        elif self.config.chain is not None:
            raise SigningKeyError(f"certificate chain {self.config.chain} is configured without its key",
                                  chain=self.config.chain)

    @property
    def signing(self) -> bool:
        return self.sealer is not None

    def status(self) -> dict[str, Any]:
        if self.sealer is None:
            msg = ("outputs are UNSIGNED: no provenance signing key is configured"
                   + (" and signed output is required, so jobs will fail" if self.config.require else ""))
            return {"signing": False, "require": self.config.require, "message": msg}
        return {"signing": True, "require": self.config.require, "certificate": self.sealer.describe(),
                "message": f"outputs are signed as {self.sealer.subject} (C2PA)"}

    def check(self, output: Path) -> str | None:
        """Before any work: refuse what cannot be signed when signing is required; else a warning or None."""
        mime = SIGNABLE.get(Path(output).suffix.lower())
        if self.sealer is None:
            if self.config.require:
                raise UnsignedOutputRefusedError(
                    "signed output is required ([provenance] require = true) but no signing key is configured; "
                    "install a bundle that carries the appliance certificate", output=Path(output).name)
            return "output is UNSIGNED: no provenance signing key is configured"
        if mime is None:
            if self.config.require:
                raise UnsignableFormatError(
                    f"signed output is required and {Path(output).suffix} cannot carry a C2PA manifest "
                    f"(use {', '.join(sorted(SIGNABLE))})", suffix=Path(output).suffix)
            return f"output is UNSIGNED: the {Path(output).suffix} format cannot carry a C2PA manifest"
        return None

    def sealing(self, output: Path, claim: Claim, report: dict[str, Any]) -> Callable[[Path], None]:
        """A `before_commit` hook for `fsio.commit_partial`: sign when possible, then hash the final bytes.

        Fills `report` with `signed`, `manifest_id` (or `unsigned_reason`), `job_id` and `output_sha256`.
        """
        mime = SIGNABLE.get(Path(output).suffix.lower())
        sealer = self.sealer

        def seal(tmp: Path) -> None:
            if sealer is not None and mime is not None:
                report.update(sealer.seal(tmp, mime, claim))
            else:
                report.update({"signed": False, "manifest_id": None, "job_id": claim.job_id,
                               "unsigned_reason": "no signing key configured" if sealer is None
                               else f"{Path(output).suffix} cannot carry a C2PA manifest"})
            report["output_sha256"] = sha256_file(tmp)

        return seal
