"""Job options: the models this appliance offers, the options a job names, and their checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sealfuse.appliance.console import errors
from sealfuse.verifier.inputs import loads_strict

ENHANCER_FAMILIES = ("gfpgan", "codeformer", "restoreformer", "gpen")


def models_available(models_dir: Path) -> dict[str, list[str]]:
    """Which swapper and enhancer models a job may name: those pinned in models.lock.json (the
    console reads the lock, never a model file), plus swappers that need only starter models."""
    from sealfuse.engine import CATALOG, MASK_REGIONS, read_lock, swapper_names

    try:
        lock = read_lock(models_dir) if models_dir.is_dir() else {}
    except Exception:  # noqa: BLE001 - an unusable lock offers only the starter models
        lock = {}

    def present(spec: Any) -> bool:
        return bool(spec is None or spec.packaged or spec.sha256 or spec.file in lock)

    swappers = [n for n in swapper_names() if present(CATALOG.get(n))]
    enhancers = [s.name for s in CATALOG.values() if s.family in ENHANCER_FAMILIES and present(s)]
    # the region mask runs on the face parser when present, else on the FaceMesh points (which
    # do not see glasses)
    parser = any(s.family == "bisenet" and present(s) for s in CATALOG.values())
    return {"face_swapper_model": ["auto", *swappers], "face_enhancer_model": enhancers,
            "face_mask_types": ["box", "ellipse", "region"],
            "face_mask_regions": [r for r in MASK_REGIONS if parser or r != "glasses"],
            "frame_processors": ["face_swapper", *(["face_enhancer"] if enhancers else [])],
            "face_selector_mode": ["many", "one", "reference"]}


def check_options(options: dict[str, Any], available: dict[str, list[str]]) -> dict[str, Any]:
    """The job options checked against the daemon's schema and the models present here."""
    from sealfuse.appliance.watch.config import JOB_OPTIONS_SCHEMA, validate

    if not isinstance(options, dict):
        raise errors.BadOptionsError("options must be a JSON object")
    problems = validate(options, JOB_OPTIONS_SCHEMA)
    if problems:
        raise errors.BadOptionsError(f"invalid options: {problems[0]}", problems=problems[:10])
    for key in ("face_swapper_model", "face_enhancer_model"):
        if key in options and options[key] not in available[key]:
            raise errors.BadOptionsError(f"{key} {options[key]!r} is not installed on this appliance "
                                  f"(available: {', '.join(available[key]) or 'none'})", option=key)
    for key in ("face_mask_types", "face_mask_regions", "frame_processors"):
        for v in options.get(key, []):
            if v not in available[key]:
                raise errors.BadOptionsError(f"{key} {v!r} needs a model this appliance lacks", option=key)
    return options


def _float(v: str, name: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise errors.BadOptionsError(f"{name} must be a number, not {v!r}", option=name) from None


def options_from_fields(fields: dict[str, list[str]], available: dict[str, list[str]]) -> dict[str, Any]:
    """Job options from the HTML form's fields and/or an `options` JSON field (API)."""
    opts: dict[str, Any] = {}
    one = {k: v[-1] for k, v in fields.items() if v}
    if "frame_processors" in fields:
        opts["frame_processors"] = list(dict.fromkeys(fields["frame_processors"]))
    if one.get("face_swapper_model"):
        opts["face_swapper_model"] = one["face_swapper_model"]
    if one.get("face_enhancer_model") and "face_enhancer" in opts.get("frame_processors", []):
        opts["face_enhancer_model"] = one["face_enhancer_model"]
    if one.get("blend_ratio"):
        opts["blend_ratio"] = _float(one["blend_ratio"], "blend_ratio")
    if "face_mask_types" in fields:
        opts["face_mask_types"] = list(dict.fromkeys(fields["face_mask_types"]))
    if "face_mask_regions" in fields and "region" in opts.get("face_mask_types", []):
        # the form's empty marker field makes "region with no region ticked" an error, not the default
        opts["face_mask_regions"] = list(dict.fromkeys(v for v in fields["face_mask_regions"] if v))
    if one.get("face_selector_mode"):
        opts["face_selector_mode"] = one["face_selector_mode"]
    if one.get("options"):
        extra = loads_strict(one["options"], duplicate=errors.BadOptionsError, invalid=errors.BadOptionsError,
                             what="options")
        if not isinstance(extra, dict):
            raise errors.BadOptionsError("options must be a JSON object")
        opts.update(extra)
    return check_options(opts, available)
