"""`sealfuse provenance verify`: read and check an output's C2PA content credentials offline.

Needs only the verifier's light install plus c2pa-python (imported on use, so `sealfuse verify`
never loads it). Never fetches anything: no OCSP, no remote manifests, no timestamp authority.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from sealfuse.verifier.errors import VerificationError, exit_code_help, exit_code_table

ASSERTION_LABEL = "org.sealfuse.swap"
EDIT_ACTIONS = ("c2pa.edited", "c2pa.edited.metadata", "c2pa.created")
OFFLINE_SETTINGS: dict[str, Any] = {"verify": {"ocsp_fetch": False, "remote_manifest_fetch": False}}
TRUSTED, UNTRUSTED, INVALID, ABSENT = "trusted", "valid_untrusted", "invalid", "absent"
EXPIRED_TEXT = ("the signing certificate has expired since (signed offline, without a timestamp authority, "
                "so it is checked against today's clock); the content and manifest hashes still match: ")
STATE_TEXT = {TRUSTED: "Trusted", UNTRUSTED: "Valid, untrusted", INVALID: "Invalid", ABSENT: "No content credentials"}


class ProvenanceCheckError(VerificationError):
    """The file's content credentials cannot be checked, or are not trusted."""

    exit_code = 1
    reason = "provenance_check_failed"


class UnreadableFileError(ProvenanceCheckError):
    """The file or the trust anchors cannot be read."""

    exit_code = 2
    reason = "unreadable"


class ReaderMissingError(ProvenanceCheckError):
    """c2pa-python is not installed."""

    exit_code = 3
    reason = "c2pa_missing"


class UntrustedError(ProvenanceCheckError):
    """Valid, untrusted: the manifest is intact, but its certificate does not chain to a given trust
    anchor (or none was given)."""

    exit_code = 10
    reason = "untrusted"


class InvalidManifestError(ProvenanceCheckError):
    """Invalid: the content or its manifest was changed (a hash or signature does not match)."""

    exit_code = 11
    reason = "invalid"


class NoManifestError(ProvenanceCheckError):
    """Absent: the file carries no C2PA manifest."""

    exit_code = 12
    reason = "absent"


class UnsupportedFormatError(ProvenanceCheckError):
    """The file's format cannot carry a C2PA manifest (or the reader does not know it)."""

    exit_code = 13
    reason = "unsupported_format"


# the --help table, generated from the classes above
EXIT_CODES: dict[int, str] = exit_code_table(
    [UnreadableFileError, ReaderMissingError, UntrustedError, InvalidManifestError, NoManifestError,
     UnsupportedFormatError],
    {0: "Trusted: intact, and signed by a certificate that chains to --trust-anchors"})
_STATE_ERRORS: dict[str, type[ProvenanceCheckError]] = {UNTRUSTED: UntrustedError, INVALID: InvalidManifestError,
                                                        ABSENT: NoManifestError}


@dataclass
class Credentials:
    """What an auditor needs from a file's active manifest."""

    path: str
    state: str
    manifest_id: str | None = None
    action: str | None = None
    digital_source_type: str | None = None
    software_agent: str | None = None
    claim_generator: str | None = None
    job_id: str | None = None
    models: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] | None = None
    signer: dict[str, Any] | None = None
    failures: list[dict[str, str]] = field(default_factory=list)
    trust_anchors: str | None = None
    manifest: dict[str, Any] | None = None

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "manifest"}
        d["ok"] = self.state == TRUSTED
        if full:
            d["manifest"] = self.manifest
        return d

    def expired_only(self) -> bool:
        """Invalid only because the signing certificate has expired since (no timestamp authority offline)."""
        codes = {f.get("code") for f in self.failures}
        return "signingCredential.expired" in codes and codes <= {"signingCredential.expired",
                                                                   "signingCredential.untrusted"}

    def error(self) -> ProvenanceCheckError | None:
        cls = _STATE_ERRORS.get(self.state)
        if cls is None:
            return None
        text = {UNTRUSTED: "the manifest is intact, but its certificate "
                           + ("does not chain to the given trust anchors" if self.trust_anchors
                              else "was not checked against trust anchors (give --trust-anchors CA.pem)"),
                INVALID: (EXPIRED_TEXT if self.expired_only() else "the content or its manifest was changed: ")
                         + ", ".join(f["code"] for f in self.failures if f.get("code")),
                ABSENT: "the file carries no C2PA manifest"}[self.state]
        return cls(f"{self.path}: {text}", path=self.path, state=self.state,
                   failures=[f.get("code") for f in self.failures])


def _load_anchors(path: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from sealfuse.verifier.inputs import MAX_TRUST_BYTES, read_regular

    try:
        # regular files only, bounded: a FIFO or /dev/zero as anchors must not hang the reader
        data = read_regular(Path(path), "trust anchors", MAX_TRUST_BYTES)
        certs = x509.load_pem_x509_certificates(data)
    except VerificationError as exc:
        raise UnreadableFileError(f"{path}: cannot read trust anchors ({exc.message})",
                                  path=str(path)) from None
    except ValueError as exc:
        raise UnreadableFileError(f"{path}: not PEM certificates ({exc})", path=path) from None
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


def _agent(value: Any) -> str | None:
    if isinstance(value, dict):
        return " ".join(str(value[k]) for k in ("name", "version") if value.get(k))
    return str(value) if value else None


def read_credentials(path: Path, trust_anchors: Path | None = None) -> Credentials:
    """Read and validate the active manifest of `path` (never raises for the four states)."""
    path = Path(path)
    try:
        import c2pa
    except ImportError:
        raise ReaderMissingError("reading content credentials needs c2pa-python "
                                 "(pip install 'sealfuse[provenance]')") from None
    if not path.is_file():
        raise UnreadableFileError(f"{path}: no such file", path=path)
    settings: dict[str, Any] = {"verify": {**OFFLINE_SETTINGS["verify"], "verify_trust": trust_anchors is not None}}
    if trust_anchors is not None:
        settings["trust"] = {"trust_anchors": _load_anchors(trust_anchors)}
    anchors = str(trust_anchors) if trust_anchors else None
    try:
        with c2pa.Context.from_dict(settings) as ctx, open(path, "rb") as f:
            mime = _mime(path, f)
            with c2pa.Reader(mime, f, context=ctx) as reader:
                store = json.loads(reader.json())
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot read ({exc.strerror})", path=path) from None
    except c2pa.C2paError as exc:
        kind = type(exc).__name__.lstrip("_")
        if "ManifestNotFound" in kind or "JumbfNotFound" in str(exc):
            return Credentials(str(path), ABSENT, trust_anchors=anchors)
        if "NotSupported" in kind or "UnsupportedType" in str(exc):
            raise UnsupportedFormatError(f"{path}: this format cannot carry a C2PA manifest ({exc})",
                                         path=path) from None
        return Credentials(str(path), INVALID, failures=[{"code": kind, "explanation": str(exc)}],
                           trust_anchors=anchors)
    return _summarise(path, store, anchors)


def _mime(path: Path, f: Any) -> str:
    head = f.read(16)
    f.seek(0)
    if head.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    suffix = path.suffix.lower().lstrip(".")
    return suffix or "application/octet-stream"


def _summarise(path: Path, store: dict[str, Any], anchors: str | None) -> Credentials:
    active_id = store.get("active_manifest")
    manifest = (store.get("manifests") or {}).get(active_id) if active_id else None
    if manifest is None:
        return Credentials(str(path), ABSENT, trust_anchors=anchors)
    results = store.get("validation_results") or {}
    failures = list((results.get("activeManifest") or {}).get("failure") or [])
    raw_state = str(store.get("validation_state") or "").lower()
    if raw_state == "trusted":
        state = TRUSTED
    elif raw_state == "valid":
        state = UNTRUSTED
    else:
        state = INVALID
    creds = Credentials(str(path), state, manifest_id=active_id, trust_anchors=anchors, manifest=manifest,
                        failures=[{"code": str(f.get("code")), "explanation": str(f.get("explanation", ""))}
                                  for f in failures])
    gen = manifest.get("claim_generator_info") or []
    creds.claim_generator = _agent(gen[0]) if gen else manifest.get("claim_generator")
    sig = manifest.get("signature_info") or {}
    creds.signer = {k: sig.get(k) for k in ("issuer", "common_name", "alg", "cert_serial_number", "time")
                    if sig.get(k) is not None}
    for assertion in manifest.get("assertions") or []:
        label = str(assertion.get("label", ""))
        data = assertion.get("data") or {}
        if label.startswith("c2pa.actions"):
            for action in data.get("actions") or []:
                if action.get("action") in EDIT_ACTIONS:
                    creds.action = action.get("action")
                    creds.digital_source_type = action.get("digitalSourceType")
                    creds.software_agent = _agent(action.get("softwareAgent"))
                    creds.job_id = creds.job_id or (action.get("parameters") or {}).get("job_id")
        elif label == ASSERTION_LABEL:
            creds.job_id = data.get("job_id") or creds.job_id
            creds.models = list(data.get("models") or [])
            creds.options = data.get("options")
    return creds


_EPILOG = exit_code_help(EXIT_CODES)


@click.command("verify", epilog=_EPILOG, context_settings={"max_content_width": 100})
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--trust-anchors", type=click.Path(path_type=Path), default=None,
              help="PEM file of CA certificates to trust (the studio CA's ca.pem). Without it the best "
                   "possible answer is 'Valid, untrusted' (exit 10).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--manifest", "full", is_flag=True, help="With --json, include the whole active manifest.")
def verify(file: Path, trust_anchors: Path | None, as_json: bool, full: bool) -> None:
    """Check FILE's C2PA content credentials offline: Trusted, Valid-untrusted, Invalid or absent.

    Prints the action and its digital source type, the software agent, the models (name and
    sha256) and the job id, which ties the file to the appliance's audit log.
    """
    try:
        creds = read_credentials(file, trust_anchors)
    except ProvenanceCheckError as exc:
        if as_json:
            click.echo(json.dumps(exc.to_dict(), indent=2))
        else:
            click.echo(f"ERROR {type(exc).__name__}: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    err = creds.error()
    if as_json:
        out = creds.to_dict(full=full)
        if err is not None:
            out.update({"error": type(err).__name__, "reason": err.reason, "exit_code": err.exit_code,
                        "message": err.message})
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        click.echo(f"{creds.path}: {STATE_TEXT[creds.state]}")
        if creds.manifest_id:
            rows = [("manifest", creds.manifest_id), ("action", creds.action),
                    ("source type", creds.digital_source_type), ("software agent", creds.software_agent),
                    ("job id", creds.job_id),
                    ("signed by", ", ".join(f"{k}={v}" for k, v in (creds.signer or {}).items()))]
            for k, v in rows:
                if v:
                    click.echo(f"  {k + ':':<16}{v}")
            for m in creds.models:
                click.echo(f"  {'model:':<16}{m.get('name')} {m.get('sha256')}")
        if err is not None:
            click.echo(f"  {err.message}", err=True)
    if err is not None:
        sys.exit(err.exit_code)
