"""The models a bundle ships: from a models directory or pinned URLs, each with its licence text and
licence class (sealfuse.verifier.licences), checked against the bundle's licence policy.

Licence text: `--licence FILE=TEXT`, else the directory's catalog.json, else sealfuse's table.
Licence class: sealfuse's table for a file it knows with a known class; for any other file the
catalog.json `licence_class` the operator states, else `unknown`. A licence grant
(`--licence-grant FILE=REFERENCE`) keeps both and makes the policy count the file as commercial.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sealfuse.bundle.errors import (
    BuildError,
    LicenceGrantError,
    LicenceMissingError,
    LicencePolicyError,
    ModelDigestError,
)
from sealfuse.verifier.inputs import MAX_TRUST_BYTES, loads_strict, read_regular
from sealfuse.verifier.licences import (
    LicenceClass,
    LicencePolicy,
    grant_problem,
    known,
    policy_class,
)
from sealfuse.verifier.model import check_member_path

CATALOG_NAME = "catalog.json"
CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelSource:
    """A model file to ship, with its catalog name, licence text and licence class."""

    path: Path
    name: str
    licence: str
    licence_class: LicenceClass = LicenceClass.UNKNOWN
    licence_grant: str | None = None  # the studio's reference for a commercial licence it holds

    @property
    def policy_class(self) -> LicenceClass:
        return policy_class(self.licence_class, self.licence_grant)


def parse_model_url(spec: str) -> tuple[str, str, str]:
    """`URL#sha256=HEX` -> (url, filename, sha256)."""
    url, _, fragment = spec.partition("#")
    params = urllib.parse.parse_qs(fragment)
    digest = (params.get("sha256") or [""])[0].lower()
    if not _HEX64.fullmatch(digest):
        raise BuildError(f"--model-url {spec!r} needs a pinned digest: URL#sha256=<64 hex>",
                         url=url)
    name = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
    if not name or check_member_path(name) or "/" in name:
        raise BuildError(f"cannot take a safe file name from {url!r}", url=url)
    return url, name, digest


def fetch_model(spec: str, dest_dir: Path) -> Path:
    """Download a pinned model; refuse (and remove the download) if its sha256 differs."""
    url, name, expected = parse_model_url(spec)
    target = dest_dir / name
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(target, "wb") as out:  # noqa: S310
            while chunk := resp.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise BuildError(f"cannot download {url}: {exc}", url=url) from exc
    actual = h.hexdigest()
    if actual != expected:
        target.unlink(missing_ok=True)
        raise ModelDigestError(f"{url}: sha256 {actual} does not match the pinned {expected}",
                               url=url, expected=expected, actual=actual)
    return target


def read_catalog(models_dir: Path | None) -> dict[str, dict[str, str]]:
    """The models directory's catalog.json: file -> {name, licence, licence_class}."""
    if models_dir is None or not (models_dir / CATALOG_NAME).is_file():
        return {}
    path = models_dir / CATALOG_NAME
    data = loads_strict(read_regular(path, "models catalog", MAX_TRUST_BYTES),
                        duplicate=BuildError, invalid=BuildError, what=str(path), path=str(path))
    try:
        catalog = {str(e["file"]): {k: str(v) for k, v in e.items()} for e in data["models"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"{path} is not a valid models catalog: {exc!r}", path=str(path)) from exc
    classes = {c.value for c in LicenceClass}
    for file, entry in catalog.items():
        if entry.get("licence_class", "unknown") not in classes:
            raise BuildError(f"{path}: {file} has licence_class {entry['licence_class']!r}, not "
                             f"one of {sorted(classes)}", path=str(path), file=file)
    return catalog


def licence_of(file: str, override: str | None, entry: Mapping[str, str]
               ) -> tuple[str, LicenceClass]:
    """(licence text, licence class) of one model file; LicenceMissingError without a text."""
    table = known(file)
    text = override or entry.get("licence") or (table.licence if table else None)
    if not text:
        raise LicenceMissingError(
            f"no licence recorded for model {file}; pass --licence {file}=<licence> or add it "
            f"to {CATALOG_NAME} in the models directory", file=file)
    if table is not None and table.licence_class is not LicenceClass.UNKNOWN:
        return text, table.licence_class  # what sealfuse knows is not the operator's to change
    return text, LicenceClass(entry.get("licence_class", LicenceClass.UNKNOWN))


def check_grants(grants: Mapping[str, str], files: Sequence[str]) -> None:
    """LicenceGrantError unless every grant names a model file of the bundle and has a valid
    reference (every problem at once)."""
    problems = [f"{file}: {why}" for file, ref in sorted(grants.items())
                if (why := grant_problem(ref))]
    missing = sorted(set(grants) - set(files))
    if missing:
        problems.append(f"no model file {', '.join(missing)} in this bundle (its models: "
                        f"{', '.join(sorted(files)) or 'none'})")
    if problems:
        raise LicenceGrantError("--licence-grant refused: " + "; ".join(problems),
                                problems=problems, missing=missing)


def collect_models(models_dir: Path | None, model_urls: Sequence[str],
                   licences: Mapping[str, str], download_dir: Path,
                   grants: Mapping[str, str] | None = None) -> list[ModelSource]:
    """Every model file to ship, named and licensed (and granted, per `grants`: file -> ref)."""
    grants = grants or {}
    catalog = read_catalog(models_dir)
    paths: list[Path] = []
    if models_dir is not None:
        if not models_dir.is_dir():
            raise BuildError(f"--models {models_dir} is not a directory")
        paths += [p for p in sorted(models_dir.iterdir())
                  if p.is_file() and not p.name.startswith(".") and p.name != CATALOG_NAME]
    paths += [fetch_model(spec, download_dir) for spec in model_urls]
    models: list[ModelSource] = []
    seen: set[str] = set()
    for p in paths:
        if p.name in seen:
            raise BuildError(f"model file name {p.name} given twice", file=p.name)
        seen.add(p.name)
        entry = catalog.get(p.name, {})
        text, cls = licence_of(p.name, licences.get(p.name), entry)
        table = known(p.name)
        name = entry.get("name") or (table.name if table else p.stem)
        models.append(ModelSource(p, name, text, cls, grants.get(p.name)))
    check_grants(grants, [m.path.name for m in models])
    return models


def check_policy(models: Sequence[ModelSource], policy: LicencePolicy) -> None:
    """Refuse, naming every file, licence and class, the models `policy` does not allow."""
    refused = [m for m in models if not policy.allows(m.policy_class)]
    if refused:
        listing = "; ".join(f"{m.path.name} ({m.licence}: {m.licence_class})" for m in refused)
        raise LicencePolicyError(
            f"--licence-policy {policy} refuses {len(refused)} model(s) whose licence does not "
            f"allow commercial use or is unknown: {listing}. A studio that holds a commercial "
            f"licence for one of them records it with --licence-grant FILE=REFERENCE",
            policy=str(policy),
            refused=[{"file": m.path.name, "licence": m.licence,
                      "licence_class": str(m.licence_class)} for m in refused])

