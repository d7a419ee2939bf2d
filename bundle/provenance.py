"""`sealfuse provenance init`: the studio CA and the appliance's C2PA signing certificate (build host).

The CA (created here, or the studio's own) issues an X.509 v3 end-entity certificate with the
digitalSignature key usage and the emailProtection extended key usage, the profile that C2PA
validators accept for content credentials. The appliance key and chain go into the next bundle.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from sealfuse.bundle.errors import BundleError
from sealfuse.verifier.errors import exit_code_help, exit_code_table

CA_DAYS = 3650
APPLIANCE_DAYS = 397  # about 13 months: rotate yearly with a new bundle, one month of overlap
KEY_ALGS = ("ed25519", "es256")
CA_CERT, CA_KEY = "ca.pem", "ca.key"
APPLIANCE_DIR, CHAIN, KEY = "appliance", "chain.pem", "signing.key"


class ProvenanceInitError(BundleError):
    """The CA or the appliance certificate cannot be made from these inputs."""

    exit_code = 3
    reason = "provenance_init_failed"


class OutputExistsError(ProvenanceInitError):
    """A file `init` would write already exists (nothing is overwritten)."""

    exit_code = 4
    reason = "output_exists"


class StudioCAError(ProvenanceInitError):
    """The studio's own CA certificate or key is unreadable, mismatched, or not a CA."""

    exit_code = 5
    reason = "studio_ca_unusable"


# the --help table, generated from the classes above
INIT_EXIT_CODES: dict[int, str] = exit_code_table(
    [ProvenanceInitError, OutputExistsError, StudioCAError],
    {0: "success: CA (if created), appliance key and chain written", 2: "usage error"})


def _new_key(alg: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    return ed25519.Ed25519PrivateKey.generate() if alg == "ed25519" else ec.generate_private_key(ec.SECP256R1())


def _hash_for(key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(common_name: str, organization: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])


def _key_usage(*, sign: bool, ca: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def issue_ca(organization: str, *, alg: str = "ed25519", days: int = CA_DAYS,
             now: dt.datetime | None = None) -> tuple[Any, Any]:
    """A self-signed studio CA (path length 0: it signs appliance certificates only)."""
    from cryptography import x509

    now = now or dt.datetime.now(dt.UTC)
    key = _new_key(alg)
    name = _name(f"{organization} content credentials CA", organization)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(sign=False, ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, _hash_for(key)))
    return cert, key


def issue_appliance(ca_cert: Any, ca_key: Any, appliance: str, *, alg: str = "ed25519",
                    days: int = APPLIANCE_DAYS, now: dt.datetime | None = None) -> tuple[Any, Any]:
    """An end-entity signing certificate for one appliance, issued by the studio CA."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = now or dt.datetime.now(dt.UTC)
    key = _new_key(alg)
    orgs = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    organization = str(orgs[0].value) if orgs else "sealfuse"
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (x509.CertificateBuilder().subject_name(_name(appliance, organization))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(sign=True, ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, _hash_for(ca_key)))
    return cert, key


def pem_cert(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(cert.public_bytes(serialization.Encoding.PEM))


def pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def _pem(path: Path) -> bytes:
    """A PEM file: a regular file of at most 1 MiB (a FIFO or /dev/zero is a ValueError naming it,
    never a blocked or endless read)."""
    from sealfuse.verifier.errors import VerificationError
    from sealfuse.verifier.inputs import read_regular

    try:
        return read_regular(Path(path), "PEM file", 1 << 20)
    except VerificationError as exc:
        raise ValueError(exc.message) from None


def load_studio_ca(cert_path: Path, key_path: Path, passphrase: bytes | None = None) -> tuple[Any, Any]:
    """The studio's own CA: it must be a CA, unexpired, and the key must match its certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(_pem(cert_path))
    except (OSError, ValueError) as exc:
        raise StudioCAError(f"{cert_path}: not a readable PEM certificate ({exc})", path=cert_path) from None
    try:
        key = serialization.load_pem_private_key(_pem(key_path), password=passphrase)
    except (OSError, ValueError, TypeError) as exc:
        raise StudioCAError(f"{key_path}: not a readable PEM private key ({exc})", path=key_path) from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):  # type: ignore[union-attr]
        raise StudioCAError(f"{key_path} is not the key of {cert_path}", cert=cert_path, key=key_path)
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise StudioCAError(f"{cert_path} is not a CA certificate (basicConstraints CA:TRUE missing)",
                            cert=cert_path)
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise StudioCAError(f"{cert_path} expired on {cert.not_valid_after_utc.isoformat()}", cert=cert_path)
    return cert, key


def appliance_files(directory: Path) -> list[Path]:
    """chain.pem and signing.key of an appliance directory, checked to belong together."""
    from sealfuse.bundle.errors import BuildError

    chain, key = Path(directory) / CHAIN, Path(directory) / KEY
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        leaf = x509.load_pem_x509_certificates(_pem(chain))[0]
        private = serialization.load_pem_private_key(_pem(key), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BuildError(f"--provenance {directory}: needs readable {CHAIN} and an unencrypted {KEY} ({exc})",
                         path=directory) from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, spki) != private.public_key().public_bytes(der, spki):  # type: ignore[union-attr]
        raise BuildError(f"--provenance {directory}: {KEY} is not the key of {CHAIN}'s first certificate",
                         path=directory)
    if leaf.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise BuildError(f"--provenance {directory}: the appliance certificate expired on "
                         f"{leaf.not_valid_after_utc.isoformat()}", path=directory)
    return [chain, key]


@dataclass
class InitResult:
    ca_cert: Path
    ca_key: Path | None
    chain: Path
    key: Path
    subject: str
    not_after: str
    alg: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "ca_cert": str(self.ca_cert), "ca_key": str(self.ca_key) if self.ca_key else None,
                "chain": str(self.chain), "key": str(self.key), "subject": self.subject,
                "not_after": self.not_after, "alg": self.alg}


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def init(out_dir: Path, *, organization: str, appliance: str, alg: str = "ed25519",
         days: int = APPLIANCE_DAYS, ca_cert_path: Path | None = None, ca_key_path: Path | None = None,
         ca_passphrase: bytes | None = None) -> InitResult:
    """Create (or take) the studio CA and issue the appliance certificate into `out_dir`."""
    out_dir = Path(out_dir)
    own_ca = ca_cert_path is not None
    targets = [out_dir / APPLIANCE_DIR / CHAIN, out_dir / APPLIANCE_DIR / KEY, out_dir / CA_CERT]
    if not own_ca:
        targets.append(out_dir / CA_KEY)
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise OutputExistsError(f"refusing to overwrite {', '.join(existing)}", paths=existing)
    if own_ca:
        assert ca_key_path is not None
        ca_cert, ca_key = load_studio_ca(ca_cert_path, ca_key_path, ca_passphrase)  # type: ignore[arg-type]
    try:
        if not own_ca:
            ca_cert, ca_key = issue_ca(organization, alg=alg)
        cert, key = issue_appliance(ca_cert, ca_key, appliance, alg=alg, days=days)
    except ValueError as exc:  # X.509 refuses the names (empty, over 64 characters, ...)
        raise ProvenanceInitError(f"cannot issue the certificates: {exc}",
                                  organization=organization, appliance=appliance) from None
    try:
        (out_dir / APPLIANCE_DIR).mkdir(parents=True, exist_ok=True)
        _write_new(out_dir / CA_CERT, pem_cert(ca_cert), 0o644)
        if not own_ca:
            _write_new(out_dir / CA_KEY, pem_key(ca_key), 0o600)
        _write_new(out_dir / APPLIANCE_DIR / KEY, pem_key(key), 0o600)
        _write_new(out_dir / APPLIANCE_DIR / CHAIN, pem_cert(cert) + pem_cert(ca_cert), 0o644)
    except OSError as exc:
        raise ProvenanceInitError(f"{out_dir}: cannot write ({exc.strerror})", path=out_dir) from None
    return InitResult(out_dir / CA_CERT, None if own_ca else out_dir / CA_KEY, out_dir / APPLIANCE_DIR / CHAIN,
                      out_dir / APPLIANCE_DIR / KEY, cert.subject.rfc4514_string(),
                      cert.not_valid_after_utc.isoformat(), alg)


_EPILOG = exit_code_help(INIT_EXIT_CODES)


@click.command("init", epilog=_EPILOG, context_settings={"max_content_width": 100})
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write ca.pem, ca.key (0600, only when the CA is created here) and "
                   "appliance/chain.pem + appliance/signing.key (0600).")
@click.option("--organization", default="sealfuse studio", show_default=True,
              help="Organization name in the CA and appliance certificates (shown by C2PA readers).")
@click.option("--appliance", default="sealfuse appliance", show_default=True,
              help="Common name of the appliance certificate (one per appliance or fleet).")
@click.option("--alg", type=click.Choice(KEY_ALGS), default="ed25519", show_default=True,
              help="Key algorithm of the new keys (Ed25519 or ECDSA P-256 / ES256).")
@click.option("--days", type=click.IntRange(1, 3650), default=APPLIANCE_DAYS, show_default=True,
              help="Lifetime of the appliance certificate (capped at the CA's own expiry). Rotate with a new "
                   "bundle before it ends: manifests are checked against the reader's clock (no timestamp authority).")
@click.option("--ca-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The studio's own CA certificate (PEM) instead of creating one (needs --ca-key).")
@click.option("--ca-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Its private key (PEM; if encrypted, the passphrase is read from $SEALFUSE_CA_PASSPHRASE).")
@click.option("--json", "as_json", is_flag=True)
def init_command(out_dir: Path, organization: str, appliance: str, alg: str, days: int,
                 ca_cert: Path | None, ca_key: Path | None, as_json: bool) -> None:
    """Create the studio CA (or take yours) and issue the appliance's C2PA signing certificate.

    Run on the build host. Give ca.pem to auditors (`sealfuse provenance verify --trust-anchors
    ca.pem`), keep ca.key offline, and pass appliance/ to `sealfuse bundle build --provenance`.
    """
    if (ca_cert is None) != (ca_key is None):
        raise click.UsageError("--ca-cert and --ca-key go together")
    passphrase = os.environ.get("SEALFUSE_CA_PASSPHRASE")
    try:
        res = init(out_dir, organization=organization, appliance=appliance, alg=alg, days=days,
                   ca_cert_path=ca_cert, ca_key_path=ca_key,
                   ca_passphrase=passphrase.encode() if passphrase else None)
    except ProvenanceInitError as exc:
        if as_json:
            click.echo(json.dumps(exc.to_dict(), indent=2))
        else:
            click.echo(f"ERROR {type(exc).__name__}: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
        return
    click.echo(f"studio CA:        {res.ca_cert}" + ("" if res.ca_key is None else f" (key {res.ca_key}: keep offline)"))
    click.echo(f"appliance chain:  {res.chain}")
    click.echo(f"appliance key:    {res.key} (0600)")
    click.echo(f"subject:          {res.subject}, {res.alg}, valid until {res.not_after}")
