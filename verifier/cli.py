"""`sealfuse verify`, `sealfuse keygen` and `sealfuse trust ...`: the verifier's commands.

They import only the verifier's dependencies (click, cryptography, rfc8785; sigstore on demand).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from sealfuse.verifier.errors import (
    EXIT_CODES,
    KEYGEN_EXIT_CODES,
    TRUST_EXIT_CODES,
    OutputExistsError,
    TrustDuplicateKeyError,
    TrustFileError,
    UnusableKeyError,
    VerificationError,
    exit_code_help,
)
from sealfuse.verifier.inputs import (
    MAX_KEY_BYTES,
    MAX_TRUST_BYTES,
    file_kind,
    loads_strict,
    read_regular,
)
from sealfuse.verifier.keys import (
    KeyFormatError,
    keyid_of,
    load_private_key,
    load_public_text,
    openssh_public,
    pem_public,
    private_key_encrypted,
    serialize_private,
    short_keyid,
)
from sealfuse.verifier.licences import describe_class
from sealfuse.verifier.trust import (
    SigstorePolicy,
    Trust,
    TrustedKey,
    accept_chain,
    load_trust,
    make_trust,
    write_atomic,
)


def _fail(exc: VerificationError, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps(exc.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(f"REJECTED {type(exc).__name__} ({exc.reason}): {exc.message}", err=True)
        for key, value in sorted(exc.evidence.items()):
            click.echo(f"  {key}: {value}", err=True)
    sys.exit(exc.exit_code)


def _check_output(path: Path, *inputs: Path, as_json: bool = False) -> None:
    """Refuse (exit 3) an output that is a symlink or not a regular file, or that is one of the
    command's inputs: an output replaces a regular file or nothing, never follows a link."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        _fail(OutputExistsError(f"cannot write {path}: {exc.strerror}", path=str(path)), as_json)
    if not stat.S_ISREG(st.st_mode):
        _fail(OutputExistsError(f"{path} is a {file_kind(st.st_mode)}; an output replaces only "
                                "a regular file", path=str(path), kind=file_kind(st.st_mode)),
              as_json)
    for other in inputs:
        try:
            same = os.path.samefile(path, other)
        except OSError:
            same = False
        if same:
            _fail(OutputExistsError(f"{path} is the input {other}; refusing to overwrite it",
                                    path=str(path)), as_json)


def _write(path: Path, data: bytes | None = None, trust: Trust | None = None,
           inputs: tuple[Path, ...] = ()) -> None:
    """Write an output atomically; an OS error is OutputExistsError (exit 3), not a traceback."""
    _check_output(path, *inputs)
    try:
        if trust is not None:
            trust.write(path)
        else:
            assert data is not None
            write_atomic(path, data)
    except OSError as exc:
        _fail(OutputExistsError(f"cannot write {path}: {exc.strerror}", path=str(path)), False)


def read_small(path: Path, what: str, limit: int = MAX_KEY_BYTES) -> bytes:
    """A small input file (key, passphrase, root): regular files only, at most `limit` bytes."""
    try:
        return read_regular(path, what, limit)
    except VerificationError as exc:
        _fail(exc, False)


def read_passphrase(key_path: Path, passphrase_file: Path | None) -> bytes | None:
    """The key's passphrase: from a file, or prompted when the key is encrypted."""
    if passphrase_file is not None:
        return read_small(passphrase_file, "passphrase file").rstrip(b"\r\n")
    if private_key_encrypted(key_path):
        return click.prompt(f"Passphrase for {key_path}", hide_input=True).encode()
    return None


def load_signing_key(key_path: Path, passphrase_file: Path | None) -> Any:
    try:
        return load_private_key(key_path, read_passphrase(key_path, passphrase_file))
    except (KeyFormatError, OSError) as exc:
        _fail(UnusableKeyError(f"cannot use signing key {key_path}: {exc}",
                               path=str(key_path)), False)


# -- verify ----------------------------------------------------------------------------------------
@click.command(epilog=exit_code_help(EXIT_CODES))
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trust", "trust_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Pinned trust file (keys, threshold, product, optional sigstore policy).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report on stdout.")
@click.option("--floor-version", default=None, metavar="V",
              help="Installed version; the bundle must be strictly above it. Default: no floor.")
@click.option("--allow-downgrade", is_flag=True,
              help="Accept a version at or below --floor-version (reported as downgrade).")
@click.option("--now", default=None, metavar="ISO",
              help="Time for the expiry and clock checks, ISO 8601. Default: the system clock.")
@click.option("--clock-skew", type=click.IntRange(0, 366 * 86400), default=300, show_default=True,
              metavar="SECONDS",
              help="How far the bundle's `created` may be ahead of the clock before it is "
                   "refused (CreatedInFutureError).")
def verify(bundle: Path, trust_path: Path, as_json: bool, floor_version: str | None,
           allow_downgrade: bool, now: str | None, clock_skew: int) -> None:
    """Verify BUNDLE offline: signatures (k of n trusted Ed25519 keys, SSHSIG, optional
    sigstore) over manifest.json, then every payload byte, in one streaming pass.

    Rejects unlisted, missing, duplicate, linked or non-regular members, unsafe paths, size or
    sha256 mismatches, trailing data, truncation, expiry, rollback and a `created` time ahead
    of the clock. Nothing is written; the bundle and the trust file must be regular files.
    """
    from sealfuse.verifier.verify import verify_bundle

    try:
        trust = load_trust(trust_path)
        result = verify_bundle(bundle, trust, floor_version=floor_version,
                               allow_downgrade=allow_downgrade, now=now,
                               clock_skew=dt.timedelta(seconds=clock_skew))
    except VerificationError as exc:
        _fail(exc, as_json)
    except ValueError as exc:  # e.g. an unparseable --now
        raise click.BadParameter(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=True))
        return
    signers = ", ".join(f"{n} ({short_keyid(k)})" for k, n in zip(result.signers,
                                                                   result.signer_names,
                                                                   strict=True))
    total = sum(m.size for m in result.members)
    click.echo(f"OK {result.product} {result.version} ({result.platform.python} "
               f"{result.platform.arch}): {len(result.members)} members, {total} bytes")
    click.echo(f"  signed by {len(result.signers)} of {result.signatures.threshold} required: "
               f"{signers}")
    click.echo(f"  sigstore: {result.signatures.sigstore}; expires {result.expires.isoformat()}")
    click.echo(f"  licence policy: {result.manifest.licence_policy}; models: "
               + (", ".join(f"{m.name} ({describe_class(m.licence_class, m.licence_grant)})"
                            for m in result.models) or "none"))
    if result.downgrade:
        click.echo(f"  DOWNGRADE allowed below/at floor {floor_version}")
    click.echo(f"  manifest sha256 {result.manifest_sha256}")


# -- keygen ----------------------------------------------------------------------------------------
@click.command(epilog=exit_code_help(KEYGEN_EXIT_CODES))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key path (written 0600); the public key goes to OUT.pub.")
@click.option("--name", default="", help="Principal name for allowed_signers (one word). "
              "Default: sealfuse-<short key id>.")
@click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Encrypt the private key with the passphrase in this file.")
@click.option("--passphrase", "ask", is_flag=True, help="Prompt for a passphrase (default: none).")
@click.option("--json", "as_json", is_flag=True, help="Print key id and paths as JSON.")
def keygen(out: Path, name: str, passphrase_file: Path | None, ask: bool, as_json: bool) -> None:
    """Create an Ed25519 signing key pair.

    The private key is written mode 0600: in OpenSSH format without a passphrase (so
    `ssh-keygen -Y sign` can use it too), as encrypted PKCS#8 PEM with one. Prints the key id: sha256 of the raw 32-byte
    public key in hex; the short form is its first 16 hex digits.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    passphrase: bytes | None = None
    if passphrase_file is not None:
        passphrase = read_small(passphrase_file, "passphrase file").rstrip(b"\r\n")
        if not passphrase:
            _fail(UnusableKeyError(f"passphrase file {passphrase_file} is empty; the key would "
                                   "be written unencrypted", path=str(passphrase_file)), as_json)
    elif ask:
        passphrase = click.prompt("Passphrase", hide_input=True,
                                  confirmation_prompt=True).encode()
    key = Ed25519PrivateKey.generate()
    keyid = keyid_of(key.public_key())
    name = name or f"sealfuse-{short_keyid(keyid)}"
    if any(c.isspace() for c in name) or "," in name:
        raise click.BadParameter("must be one word without commas", param_hint="--name")
    pub_path = out.with_name(out.name + ".pub")
    for p in (out, pub_path):
        try:
            os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            _fail(OutputExistsError(f"cannot write {p}: {exc.strerror}", path=str(p)), as_json)
        _fail(OutputExistsError(f"{p} exists; refusing to overwrite a key", path=str(p)), as_json)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(serialize_private(key, passphrase))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(out, 0o600)
        write_atomic(pub_path, (openssh_public(key.public_key(), name) + "\n").encode())
    except OSError as exc:
        _fail(OutputExistsError(f"cannot write key: {exc}", path=str(out)), as_json)
    if as_json:
        click.echo(json.dumps({"keyid": keyid, "short": short_keyid(keyid), "name": name,
                               "private_key": str(out), "public_key": str(pub_path),
                               "encrypted": passphrase is not None}, indent=2))
    else:
        click.echo(f"key id {keyid} (short {short_keyid(keyid)}), name {name}")
        click.echo(f"private key {out} (0600{', encrypted' if passphrase else ''}); "
                   f"public key {pub_path}")


# -- trust -----------------------------------------------------------------------------------------
def _trusted_key_from_file(path: Path) -> TrustedKey:
    try:
        text = read_small(path, "public key file").decode("ascii")
        key = load_public_text(text)
    except (KeyFormatError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--key") from exc
    parts = text.split()
    name = parts[2] if text.startswith("ssh-ed25519 ") and len(parts) > 2 else ""
    return TrustedKey.from_public(key, name)


@click.group(epilog=exit_code_help(TRUST_EXIT_CODES))
def trust() -> None:
    """Create, sign, rotate and export trust files.

    A trust file pins the Ed25519 keys that sign bundles, the threshold k of n, the product,
    and optionally a sigstore identity policy. Rotation: a new trust file (higher version) is
    accepted only when signed by `threshold` keys of the current one.
    """


@trust.command("create")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", "keys", multiple=True, required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Public key file (OpenSSH .pub from `sealfuse keygen`, or PEM). Repeat.")
@click.option("--threshold", type=int, required=True, help="Signatures required (k of n).")
@click.option("--product", default="sealfuse", show_default=True)
@click.option("--version", "trust_version", type=int, default=1, show_default=True,
              help="Trust file version; a rotation must raise it.")
@click.option("--sigstore-identity", default=None, help="Required certificate identity (SAN).")
@click.option("--sigstore-issuer", default=None, help="Required OIDC issuer.")
@click.option("--sigstore-root", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="trusted_root.json for offline sigstore verification (stored inline).")
@click.option("--sigstore-optional", is_flag=True,
              help="Accept bundles without a sigstore bundle (default: required when configured).")
def trust_create(out: Path, keys: tuple[Path, ...], threshold: int, product: str,
                 trust_version: int, sigstore_identity: str | None, sigstore_issuer: str | None,
                 sigstore_root: Path | None, sigstore_optional: bool) -> None:
    """Write a new (unsigned) trust file. Refuses to overwrite OUT."""
    policy = None
    if any((sigstore_identity, sigstore_issuer, sigstore_root)):
        if not (sigstore_identity and sigstore_issuer and sigstore_root):
            raise click.UsageError("--sigstore-identity, --sigstore-issuer and --sigstore-root "
                                   "go together")
        try:
            root = loads_strict(read_small(sigstore_root, "sigstore trusted_root",
                                           MAX_TRUST_BYTES),
                                duplicate=TrustDuplicateKeyError, invalid=TrustFileError,
                                what=f"sigstore trusted_root {sigstore_root}",
                                path=str(sigstore_root))
        except VerificationError as exc:
            _fail(exc, False)
        policy = SigstorePolicy(sigstore_identity, sigstore_issuer, root, not sigstore_optional)
    if os.path.lexists(out):
        _fail(OutputExistsError(f"{out} exists; refusing to overwrite a trust file",
                                path=str(out)), False)
    try:
        t = make_trust(product, [_trusted_key_from_file(p) for p in keys], threshold,
                       trust_version, policy)
    except VerificationError as exc:
        _fail(exc, False)
    _write(out, trust=t)
    click.echo(f"trust file {out}: product {product}, version {trust_version}, "
               f"{threshold} of {len(t.keys)} keys")


@trust.command("sign")
@click.argument("trust_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--key", "key_path", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path))
def trust_sign(trust_file: Path, key_path: Path, passphrase_file: Path | None) -> None:
    """Add KEY's signature to TRUST_FILE (a rotation candidate); holders of the current keys
    sign in turn. Refuses a second signature by the same key."""
    key = load_signing_key(key_path, passphrase_file)
    try:
        t = load_trust(trust_file).with_signature(key)
    except VerificationError as exc:
        _fail(exc, False)
    _write(trust_file, trust=t)
    click.echo(f"signed {trust_file} with {short_keyid(keyid_of(key.public_key()))}; "
               f"{len(t.signatures)} signature(s)")


@trust.command("accept")
@click.argument("current", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("new", nargs=-1, required=True,
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--replace", is_flag=True,
              help="Atomically replace CURRENT with the last accepted trust file.")
def trust_accept(current: Path, new: tuple[Path, ...], replace: bool) -> None:
    """Check a chain of rotations CURRENT -> NEW... ; each must raise the version and carry
    signatures of the previous file's threshold. Exit 11 (RotationError) otherwise."""
    try:
        last = accept_chain(load_trust(current), [load_trust(p) for p in new])
    except VerificationError as exc:
        _fail(exc, False)
    if replace:
        _write(current, read_small(new[-1], "trust file", MAX_TRUST_BYTES), inputs=new)
    click.echo(f"accepted: trust version {last.version}, {last.threshold} of {len(last.keys)} keys"
               + (f"; {current} replaced" if replace else ""))


@trust.command("allowed-signers")
@click.argument("trust_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of stdout.")
def trust_allowed_signers(trust_file: Path, out: Path | None) -> None:
    """Print an OpenSSH allowed_signers file for `ssh-keygen -Y verify -n sealfuse-bundle`."""
    try:
        text = load_trust(trust_file).allowed_signers()
    except VerificationError as exc:
        _fail(exc, False)
    if out:
        _write(out, text.encode(), inputs=(trust_file,))
    else:
        click.echo(text, nl=False)


@trust.command("pem")
@click.argument("trust_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-d", "--out-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write <keyid>.pem per key here instead of printing.")
def trust_pem(trust_file: Path, out_dir: Path | None) -> None:
    """Export each trusted key as a PEM public key (for `openssl pkeyutl -verify -rawin`)."""
    try:
        t = load_trust(trust_file)
    except VerificationError as exc:
        _fail(exc, False)
    for k in sorted(t.keys.values(), key=lambda k: k.keyid):
        pem = pem_public(k.public_key)
        if out_dir:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                _fail(OutputExistsError(f"cannot create {out_dir}: {exc.strerror}",
                                        path=str(out_dir)), False)
            _write(out_dir / f"{k.keyid}.pem", pem.encode(), inputs=(trust_file,))
        else:
            click.echo(f"# {k.name} {k.keyid}\n{pem}", nl=False)


@trust.command("show")
@click.argument("trust_file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def trust_show(trust_file: Path, as_json: bool) -> None:
    """Print a trust file's product, version, threshold, keys and sigstore policy."""
    try:
        t = load_trust(trust_file)
    except VerificationError as exc:
        _fail(exc, as_json)
    if as_json:
        doc = t.signed_json()
        if t.sigstore is not None:
            doc["sigstore"] = {"identity": t.sigstore.identity, "issuer": t.sigstore.issuer,
                               "required": t.sigstore.required}
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    click.echo(f"product {t.product}, trust version {t.version}, threshold {t.threshold} of "
               f"{len(t.keys)}")
    for k in sorted(t.keys.values(), key=lambda k: k.name):
        click.echo(f"  {k.name}  {k.keyid}")
    if t.sigstore:
        click.echo(f"  sigstore: {t.sigstore.identity} via {t.sigstore.issuer} "
                   f"({'required' if t.sigstore.required else 'optional'})")


__all__ = ["EXIT_CODES", "keygen", "trust", "verify"]
