"""`sealfuse bundle build|sign|inspect|manifest`: the build host's and signing machine's commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from sealfuse.bundle.errors import BUILD_EXIT_CODES, BundleError, OutputWriteError
from sealfuse.verifier.errors import VerificationError, exit_code_help
from sealfuse.verifier.licences import (
    DEFAULT_POLICY,
    MAX_GRANT_CHARS,
    LicencePolicy,
    describe_class,
)

_EPILOG = exit_code_help(BUILD_EXIT_CODES) + (
    "\n20-62  a bundle read by sign or inspect fails a structural check "
    "(see `sealfuse verify --help`)")
# What the bundle commands catch: their own errors and the verifier's (reading a bundle).
_ERRORS = (BundleError, VerificationError)


def _fail(exc: BundleError | VerificationError, as_json: bool = False) -> NoReturn:
    if as_json:
        click.echo(json.dumps(exc.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(f"ERROR {type(exc).__name__} ({exc.reason}): {exc.message}", err=True)
        for key, value in sorted(exc.evidence.items()):
            click.echo(f"  {key}: {value}", err=True)
    sys.exit(exc.exit_code)


@click.group(epilog=_EPILOG)
def bundle() -> None:
    """Build, sign and inspect bundles (build host and offline signing machine)."""


def _licence(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, text = v.partition("=")
        if not sep or not name or not text:
            raise click.BadParameter(f"{v!r} is not FILE=LICENCE", param_hint="--licence")
        out[name] = text
    return out


def _grants(values: tuple[str, ...]) -> dict[str, str]:
    """FILE=REFERENCE pairs; the reference itself is checked by the builder (exit 88)."""
    out: dict[str, str] = {}
    for v in values:
        name, sep, ref = v.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{v!r} is not FILE=REFERENCE", param_hint="--licence-grant")
        if name in out:
            raise click.BadParameter(f"{name} is granted twice", param_hint="--licence-grant")
        out[name] = ref
    return out


def _matching(pattern: str, what: str) -> Any:
    """A click callback: the value must fully match `pattern` (it becomes part of a file name)."""
    import re

    regex = re.compile(pattern)

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        if not regex.fullmatch(value):
            raise click.BadParameter(f"{value!r}: must be {what}")
        return value

    return check


@bundle.command("build", epilog=_EPILOG)
@click.option("--version", "version", required=True, help="Bundle version, dotted integers.")
@click.option("--out-dir", default=".", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--product", default="sealfuse", show_default=True,
              callback=_matching(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "1-64 characters of A-Z a-z 0-9 . _ -"),
              help="Product name (the trust file's); also the bundle file name's first part.")
@click.option("--python-version", default="3.11", show_default=True,
              callback=_matching(r"3\.[0-9]{1,3}", "CPython 3.X, e.g. 3.11"),
              help="Target CPython X.Y (the appliance's /usr/bin/python3).")
@click.option("--platform", "platform_tag", default="manylinux_2_17_x86_64", show_default=True,
              callback=_matching(r"[a-z0-9_]{1,64}", "a wheel platform tag: a-z 0-9 _"),
              help="Target wheel platform tag; its suffix gives the arch.")
@click.option("--wheelhouse", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Directory of prepared wheels.")
@click.option("-r", "--requirement", "requirements", multiple=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Also `pip download --only-binary=:all:` these for the target platform.")
@click.option("--pip-no-deps", is_flag=True,
              help="Pass --no-deps to pip download (list every wheel in the requirements).")
@click.option("--models", "models_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Directory of model files (optional catalog.json: name and licence per file).")
@click.option("--model-url", "model_urls", multiple=True, metavar="URL#sha256=HEX",
              help="Download a model with a pinned sha256; a wrong digest is refused. Repeat.")
@click.option("--licence", "licences", multiple=True, metavar="FILE=LICENCE",
              help="Licence of a model file (overrides the catalog). Repeat.")
@click.option("--licence-policy", type=click.Choice([p.value for p in LicencePolicy]),
              default=DEFAULT_POLICY.value, show_default=True,
              help="`commercial`: refuse (exit 84) any model whose licence class is "
                   "noncommercial, research or unknown, naming each file and licence. The "
                   "policy is recorded in the signed manifest.")
@click.option("--licence-grant", "licence_grants", multiple=True, metavar="FILE=REFERENCE",
              help="The studio holds a commercial licence for model FILE: REFERENCE (your "
                   f"contract or licence reference, 1-{MAX_GRANT_CHARS} printable characters) is "
                   "recorded in the signed manifest next to the model's own licence, and the "
                   "policy counts FILE as commercial. Your attestation: sealfuse does not check "
                   "the contract. A FILE not in the bundle or an empty REFERENCE is refused "
                   "(exit 88). Repeat.")
@click.option("--units-dir", default="systemd", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="systemd units (missing or empty: warned, bundle has none).")
@click.option("--hardening-dir", default="hardening", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--config", "configs", multiple=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Extra config file, shipped as payload/config/<name>. Repeat.")
@click.option("--image", "images", multiple=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Image file (e.g. container image tar), shipped as payload/images/<name>.")
@click.option("--provenance", "provenance_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="The appliance/ directory of `sealfuse provenance init` (chain.pem, signing.key): the "
                   "installer installs the key for C2PA signing. The bundle then holds a private key: "
                   "handle it as confidentially as the key.")
@click.option("--expires-days", default=365, show_default=True, type=click.IntRange(1, 36500),
              help="Days from `created` to `expires` (1-36500).")
@click.option("--json", "as_json", is_flag=True)
def build(version: str, out_dir: Path, product: str, python_version: str, platform_tag: str,
          wheelhouse: Path | None, requirements: tuple[Path, ...], pip_no_deps: bool,
          models_dir: Path | None, model_urls: tuple[str, ...], licences: tuple[str, ...],
          licence_policy: str, licence_grants: tuple[str, ...], units_dir: Path, hardening_dir: Path, configs: tuple[Path, ...],
          images: tuple[Path, ...], provenance_dir: Path | None, expires_days: int,
          as_json: bool) -> None:
    """Build an unsigned, reproducible bundle <product>-<version>-<cpXY>-<arch>.bundle.

    created = SOURCE_DATE_EPOCH (default: now), expires = created + --expires-days. Building
    twice from the same inputs and SOURCE_DATE_EPOCH gives the same sha256. Prints every
    model's licence. Sign it afterwards with `sealfuse bundle sign` on the signing machine.
    """
    from sealfuse.bundle.build import BuildInputs, build_bundle

    inputs = BuildInputs(
        version=version, out_dir=out_dir, product=product, python_version=python_version,
        platform_tag=platform_tag, wheelhouse=wheelhouse, requirements=requirements,
        pip_no_deps=pip_no_deps, models_dir=models_dir, model_urls=model_urls,
        licences=_licence(licences), licence_policy=LicencePolicy(licence_policy),
        licence_grants=_grants(licence_grants),
        units_dir=units_dir, hardening_dir=hardening_dir, configs=configs, images=images,
        provenance_dir=provenance_dir, expires_days=expires_days)
    try:
        result = build_bundle(inputs)
    except OSError as exc:
        _fail(OutputWriteError(f"cannot write: {exc}", path=str(exc.filename)), as_json)
    except _ERRORS as exc:
        _fail(exc, as_json)
    m = result.manifest
    if as_json:
        click.echo(json.dumps({
            "ok": True, "bundle": str(result.path), "sha256": result.sha256,
            "version": m.version, "members": len(m.members), "warnings": list(result.warnings),
            "licence_policy": m.licence_policy,
            "models": [{"name": e.name, "file": e.file, "licence": e.licence,
                        "licence_class": e.licence_class, "licence_grant": e.licence_grant,
                        "policy_class": e.policy_class} for e in m.models],
        }, indent=2, sort_keys=True))
        return
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(f"built {result.path} ({len(m.members)} members)")
    click.echo(f"  sha256 {result.sha256}")
    click.echo(f"  licence policy: {m.licence_policy}")
    for e in m.models:
        click.echo(f"  model {e.name} ({e.file}): licence {e.licence} "
                   f"[{describe_class(e.licence_class, e.licence_grant)}]")
    click.echo(f"  {len(m.lock)} wheels locked; expires {m.expires.isoformat()}; unsigned")


@bundle.command("sign", epilog=_EPILOG)
@click.argument("bundle_path", metavar="BUNDLE",
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--key", "key_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Ed25519 private key (from `sealfuse keygen`).")
@click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Passphrase for an encrypted key (default: prompt when needed).")
@click.option("--sshsig", "sshsig_path", type=click.Path(dir_okay=False, exists=True,
                                                         path_type=Path),
              help="Attach an SSHSIG made with `ssh-keygen -Y sign -n sealfuse-bundle` over "
                   "the bundle's manifest.json instead of signing with --key.")
@click.option("--sigstore", "sigstore_path", type=click.Path(dir_okay=False, exists=True,
                                                             path_type=Path),
              help="Attach a sigstore bundle over manifest.json.")
def sign(bundle_path: Path, key_path: Path | None, passphrase_file: Path | None,
         sshsig_path: Path | None, sigstore_path: Path | None) -> None:
    """Add one signature to BUNDLE (rewritten in place, reproducibly).

    Checks every payload hash against the manifest first. Writes signatures/<keyid>.sig (raw
    Ed25519, 64 bytes) and signatures/<keyid>.sshsig (SSHSIG, namespace sealfuse-bundle) over
    the canonical manifest bytes. k holders sign in turn; a second signature by the same key is
    refused (exit 86).
    """
    from sealfuse.bundle.sign import add_sigstore, add_sshsig, sign_bundle
    from sealfuse.verifier.inputs import MAX_SIGNATURE_INPUT_BYTES, read_regular

    if sum(x is not None for x in (key_path, sshsig_path, sigstore_path)) != 1:
        raise click.UsageError("give exactly one of --key, --sshsig, --sigstore")
    try:
        if key_path is not None:
            from sealfuse.verifier.cli import load_signing_key

            key = load_signing_key(key_path, passphrase_file)
            added = sign_bundle(bundle_path, key)
        elif sshsig_path is not None:
            added = [add_sshsig(bundle_path, read_regular(sshsig_path, "SSHSIG file",
                                                          MAX_SIGNATURE_INPUT_BYTES))]
        else:
            assert sigstore_path is not None
            added = [add_sigstore(bundle_path, read_regular(sigstore_path, "sigstore bundle",
                                                            MAX_SIGNATURE_INPUT_BYTES))]
    except OSError as exc:
        _fail(OutputWriteError(f"cannot write {bundle_path}: {exc}", path=str(exc.filename)))
    except _ERRORS as exc:
        _fail(exc)
    click.echo(f"signed {bundle_path}: added {', '.join(added)}")


@bundle.command("inspect", epilog=_EPILOG)
@click.argument("bundle_path", metavar="BUNDLE",
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--trust", "trust_path", type=click.Path(dir_okay=False, exists=True,
                                                       path_type=Path),
              help="Also say which signatures verify against this trust file.")
@click.option("--json", "as_json", is_flag=True)
def inspect(bundle_path: Path, trust_path: Path | None, as_json: bool) -> None:
    """Print BUNDLE's manifest, model licences and signatures.

    Payload hashes are checked against the manifest; signatures are only listed unless --trust
    is given (this is not verification: use `sealfuse verify` for that).
    """
    from sealfuse.verifier.model import SIGSTORE_NAME
    from sealfuse.verifier.signatures import Classification, classify, signer_keyids
    from sealfuse.verifier.verify import read_bundle

    try:
        contents = read_bundle(bundle_path)
        found: Classification | None = None
        threshold = 0
        if trust_path is not None:
            from sealfuse.verifier.signatures import bundle_signatures
            from sealfuse.verifier.trust import load_trust

            t = load_trust(trust_path)
            threshold = t.threshold
            # The verifier's own classification: raw .sig and SSHSIG alike.
            found = classify(t.public_keys, bundle_signatures(contents.signature_files),
                             contents.manifest_bytes)
    except _ERRORS as exc:
        _fail(exc, as_json)
    m = contents.manifest
    signers = sorted(signer_keyids(contents.signature_files))
    if as_json:
        doc = m.to_json()
        doc["signatures"] = {"files": sorted(contents.signature_files), "keyids": signers,
                             "sigstore": SIGSTORE_NAME in contents.signature_files}
        if found is not None:
            doc["signatures"].update({
                "valid_keyids": sorted(found.valid), "invalid_keyids": sorted(found.invalid),
                "untrusted_keyids": sorted(found.untrusted), "threshold": threshold,
                "threshold_met": len(found.valid) >= threshold})
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    click.echo(f"{m.product} {m.version} for {m.platform.python} {m.platform.arch} "
               f"({m.platform.tag}); created {m.created.isoformat()}, "
               f"expires {m.expires.isoformat()}")
    for mem in m.members:
        click.echo(f"  {mem.kind:<9} {mem.size:>12}  {mem.sha256[:16]}  {mem.path}")
    click.echo(f"licences (policy {m.licence_policy}):")
    for e in m.models:
        click.echo(f"  {e.name}: {e.licence} [{describe_class(e.licence_class, e.licence_grant)}]")
    if not m.models:
        click.echo("  (no models)")
    click.echo(f"signatures ({len(signers)} key(s)):")
    for k in signers:
        state = ""
        if found is not None:
            state = ("  valid" if k in found.valid else
                     "  INVALID" if k in found.invalid else "  not in the trust file")
        click.echo(f"  {k}{state}")
    if found is not None:
        click.echo(f"  {len(found.valid)} valid of {threshold} required")
    if SIGSTORE_NAME in contents.signature_files:
        click.echo("  + sigstore bundle")


@bundle.command("manifest")
@click.argument("bundle_path", metavar="BUNDLE",
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def manifest(bundle_path: Path, out: Path) -> None:
    """Write BUNDLE's exact signed manifest bytes to OUT (for `ssh-keygen -Y sign`)."""
    from sealfuse.bundle.sign import manifest_bytes

    try:
        out.write_bytes(manifest_bytes(bundle_path))
    except OSError as exc:
        _fail(OutputWriteError(f"cannot write {out}: {exc}", path=str(out)))
    except _ERRORS as exc:
        _fail(exc)
