"""The watch daemon's TOML configuration and the job manifest, each checked against a JSON schema.

A missing config file means defaults; an invalid one is a `WatchConfigError` naming the key.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.validators

from sealfuse.appliance.watch.errors import ConfigError

# Swap options a job (manifest or preset) may set. Paths, providers, threads and the
# decompression-bomb limits stay with the operator's [engine] table.
JOB_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "frame_processors": {"type": "array", "minItems": 1, "uniqueItems": True,
                             "items": {"enum": ["face_swapper", "face_enhancer"]}},
        "face_swapper_model": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        "face_enhancer_model": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        "face_enhancer_blend": {"type": "number", "minimum": 0, "maximum": 1},
        "face_enhancer_weight": {"type": "number", "minimum": 0, "maximum": 1},
        "face_detector_model": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        "face_detector_score": {"type": "number", "minimum": 0, "maximum": 1},
        "blend_ratio": {"type": "number", "minimum": 0, "maximum": 1},
        "face_mask_types": {"type": "array", "minItems": 1, "uniqueItems": True,
                            "items": {"enum": ["box", "ellipse", "region"]}},
        # what the region mask keeps (FaceFusion's names; left/right: the subject's own; glasses: parser only)
        "face_mask_regions": {"type": "array", "minItems": 1, "uniqueItems": True,
                              "items": {"enum": ["skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye",
                                                 "glasses", "nose", "mouth", "upper-lip", "lower-lip"]}},
        "face_mask_blur": {"type": "number", "minimum": 0, "maximum": 1},
        "face_mask_padding": {"type": "array", "minItems": 4, "maxItems": 4,
                              "items": {"type": "integer", "minimum": 0, "maximum": 100}},
        "face_selector_mode": {"enum": ["many", "one", "reference"]},
        "reference_face_distance": {"type": "number", "minimum": 0, "maximum": 4},
        # which face of a multi-face source image, counted from the left from 0 (absent: the largest)
        "source_face_position": {"type": "integer", "minimum": 0},
        "detect_every": {"type": "integer", "minimum": 1, "maximum": 100},
        "output_video_encoder": {"enum": ["libx264", "libx265", "h264_nvenc", "hevc_nvenc"]},
        "output_video_quality": {"type": "integer", "minimum": 0, "maximum": 100},
        "output_video_preset": {"enum": ["ultrafast", "superfast", "veryfast", "faster", "fast",
                                         "medium", "slow", "slower", "veryslow"]},
        "trim_frame_start": {"type": "integer", "minimum": 0},
        "trim_frame_end": {"type": "integer", "minimum": 1},
        # the visible disclosure (EU AI Act Article 50(4)) drawn into the output; not the job's own `label`
        "label": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[ -~]*[!-~][ -~]*$"},
        "label_corner": {"enum": ["bottom-right", "bottom-left", "top-right", "top-left"]},
    },
}

ENGINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **JOB_OPTIONS_SCHEMA["properties"],
        "execution_providers": {"type": "array", "minItems": 1,
                                "items": {"enum": ["cuda", "tensorrt", "cpu"]}},
        "execution_threads": {"type": "integer", "minimum": 1, "maximum": 256},
        "max_pixels": {"type": "integer", "minimum": 1},
        "max_frames": {"type": "integer", "minimum": 1},
    },
}

NAME = {"type": "string", "minLength": 1, "maxLength": 255}



def _face_map_schema(path: dict[str, Any]) -> dict[str, Any]:
    """Face mapping pairs (each target face matched to a reference gets that reference's source)."""
    return {"type": "array", "minItems": 1, "maxItems": 16,
            "items": {"type": "object", "additionalProperties": False, "required": ["reference", "source"],
                      "properties": {"reference": path, "source": path}}}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "sealfuse watch-folder job manifest (*.job.json)",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "target"],
    "properties": {
        "version": {"const": 1},
        "source": NAME,
        "target": NAME,
        "reference": NAME,
        "preset": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(?![\\s\\S])"},
        "label": {"type": "string", "maxLength": 200},
        "client_ref": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}(?![\\s\\S])"},
        # names of images in the drop folder, claimed with the job like source and reference
        "face_map": _face_map_schema(NAME),
        "options": JOB_OPTIONS_SCHEMA,
    },
    "anyOf": [{"required": ["source"]}, {"required": ["preset"]}],
}

# A producer's request to remove a job: inbox/<name>.cancel.json (see docs/watch-folder.md).
CANCEL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "sealfuse watch-folder removal request (*.cancel.json)",
    "type": "object",
    "additionalProperties": False,
    "required": ["version"],
    "properties": {
        "version": {"const": 1},
        "job_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}(?![\\s\\S])"},
        "client_ref": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}(?![\\s\\S])"},
        "requested_by": {"type": "string", "minLength": 1, "maxLength": 128},
        # true: delete a finished job's media (the record stays); see docs/watch-folder.md
        "delete_media": {"type": "boolean"},
    },
    "oneOf": [{"required": ["job_id"]}, {"required": ["client_ref"]}],
}

# [dispatch.slurm]: see sealfuse.appliance.watch.slurm_cli.SlurmSettings and docs/cluster.md.
SLURM_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_.:,=+-]{1,128}$"}
SLURM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "partition": SLURM_NAME,
        "account": SLURM_NAME,
        "qos": SLURM_NAME,
        "gres": SLURM_NAME,  # per job, e.g. "gpu:1"
        "cpus_per_task": {"type": "integer", "minimum": 1, "maximum": 4096},
        "mem_mb": {"type": "integer", "minimum": 1},
        "time_limit_minutes": {"type": "integer", "minimum": 1},
        "extra_args": {"type": "array", "items": {"type": "string", "pattern": "^--[a-z]"}},
        "max_jobs": {"type": "integer", "minimum": 1, "maximum": 100000},
        "retries": {"type": "integer", "minimum": 0, "maximum": 100},
        "retry_on": {"type": "array", "uniqueItems": True,
                     "items": {"enum": ["node_fail", "preempted", "cancelled", "killed"]}},
        "poll_seconds": {"type": "number", "minimum": 0.1, "maximum": 600},
        "submit_timeout_seconds": {"type": "number", "minimum": 0},
        "command": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "node_tmp_dir": {"type": "string", "pattern": "^/"},
        "bin_dir": {"type": "string", "pattern": "^/"},
        "job_name_prefix": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"},
        "command_timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
    },
}

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "watch": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "stable_seconds": {"type": "number", "minimum": 0, "maximum": 3600},
                "scan_interval": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
                "concurrency": {"type": "integer", "minimum": 1, "maximum": 64},
                "job_timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
                "max_rss_mb": {"type": "integer", "minimum": 0},
                "rss_poll_seconds": {"type": "number", "minimum": 0.05, "maximum": 60},
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
                "retain_inputs": {"type": "boolean"},
                "max_input_mb": {"type": "integer", "minimum": 1},
                "manifest_max_bytes": {"type": "integer", "minimum": 64, "maximum": 16777216},
                "manifest_wait_seconds": {"type": "number", "minimum": 0},
                "orphan_seconds": {"type": "number", "minimum": 0},
                "shutdown_grace_seconds": {"type": "number", "minimum": 0},
                "worker_start_timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "engine": ENGINE_SCHEMA,
        "gpu": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                # -> SwapOptions.max_memory_gb -> CUDA gpu_mem_limit / TensorRT workspace
                "memory_limit_gb": {"type": "number", "exclusiveMinimum": 0},
                # -> CUDA arena_extend_strategy (kSameAsRequested by default)
                "arena_extend_strategy": {"enum": ["kSameAsRequested", "kNextPowerOfTwo"]},
                "device_id": {"type": "integer", "minimum": 0, "maximum": 63},
            },
        },
        "dispatch": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                # local: supervised worker processes here; slurm: one Slurm job per claimed job
                "backend": {"enum": ["local", "slurm"]},
                "slurm": SLURM_SCHEMA,
            },
        },
        # C2PA content credentials: key and chain default to the installed release's provenance/
        "provenance": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "require": {"type": "boolean"},
                "key": {"type": "string", "minLength": 1},
                "chain": {"type": "string", "minLength": 1},
            },
        },
        "presets": {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["source"],
                "properties": {
                    "source": {"type": "string", "minLength": 1},
                    "reference": {"type": "string", "minLength": 1},
                    "face_map": _face_map_schema({"type": "string", "minLength": 1}),  # absolute paths
                    "options": JOB_OPTIONS_SCHEMA,
                },
            },
        },
    },
}


class WatchConfigError(ConfigError):
    """The configuration file is unreadable, not TOML, or breaks the schema."""


@dataclass(frozen=True)
class Preset:
    """A preset folder inbox/<name>/: the source face (and reference) and the job options."""

    name: str
    source: Path
    reference: Path | None
    options: dict[str, Any]


@dataclass(frozen=True)
class WatchConfig:
    """The [watch], [engine], [gpu] and [presets] tables, with their defaults."""

    stable_seconds: float = 5.0
    scan_interval: float = 2.0
    concurrency: int = 1
    job_timeout_seconds: float = 900.0
    max_rss_mb: int = 8192
    rss_poll_seconds: float = 0.25
    max_attempts: int = 3
    retain_inputs: bool = False
    max_input_mb: int = 4096
    manifest_max_bytes: int = 65536
    manifest_wait_seconds: float = 300.0
    orphan_seconds: float = 3600.0
    shutdown_grace_seconds: float = 30.0
    worker_start_timeout_seconds: float = 600.0
    engine: dict[str, Any] = field(default_factory=dict)
    gpu_memory_limit_gb: float | None = None
    gpu_arena_extend_strategy: str | None = None
    gpu_device_id: int | None = None
    presets: dict[str, Preset] = field(default_factory=dict)
    source_file: str | None = None
    dispatch_backend: str = "local"  # [dispatch] backend
    slurm: dict[str, Any] = field(default_factory=dict)  # [dispatch.slurm]
    provenance_require: bool = False  # [provenance] require: refuse jobs whose output cannot be signed
    provenance_key: str | None = None  # [provenance] key (default: the installed release's)
    provenance_chain: str | None = None

    def provenance(self) -> dict[str, Any]:
        """The signing key, chain and policy for the engine (JSON-ready, for workers and Slurm jobs)."""
        from sealfuse.engine import ProvenanceConfig

        if self.provenance_key or self.provenance_chain:
            cfg = ProvenanceConfig(Path(self.provenance_key) if self.provenance_key else None,
                                   Path(self.provenance_chain) if self.provenance_chain else None,
                                   self.provenance_require)
        else:
            cfg = ProvenanceConfig.from_environment(require=self.provenance_require)
        return cfg.to_dict()

    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments for the worker's base SwapOptions."""
        opts = dict(self.engine)
        if self.gpu_memory_limit_gb is not None:
            opts["max_memory_gb"] = self.gpu_memory_limit_gb
        if self.gpu_arena_extend_strategy is not None:
            opts["gpu_arena_extend_strategy"] = self.gpu_arena_extend_strategy
        if self.gpu_device_id is not None:
            opts["gpu_device_id"] = self.gpu_device_id
        return opts


def _schema_message(err: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    return f"{where}: {err.message}"


MAX_CONFIG_BYTES = 1 << 20


def _is_integer(checker: Any, instance: Any) -> bool:
    """An int (not a bool, not 2.0) that fits in 64 bits: what every consumer can take."""
    return isinstance(instance, int) and not isinstance(instance, bool) and -(1 << 63) <= instance < (1 << 63)


def _is_number(checker: Any, instance: Any) -> bool:
    """A finite number: NaN passes every minimum/maximum check, so it is not a number here."""
    if isinstance(instance, bool):
        return False
    return _is_integer(checker, instance) or (isinstance(instance, float) and math.isfinite(instance))


# Draft 2020-12 counts 2.0 as an integer and NaN/inf as numbers; sealfuse's configs and job
# manifests do not (a float concurrency or a NaN blend ratio would reach the code as such).
StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}))


def read_config_file(path: Path, what: str, error: Callable[..., Exception]) -> str:
    """The UTF-8 text of a config file: a regular file of at most 1 MiB, else `error` naming it
    (a FIFO or /dev/zero given as a config must not block or exhaust the reader)."""
    from sealfuse.verifier.errors import VerificationError
    from sealfuse.verifier.inputs import read_regular

    try:
        return read_regular(path, what, MAX_CONFIG_BYTES).decode("utf-8")
    except VerificationError as exc:
        raise error(f"cannot read {what} {path}: {exc.message}", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8: {exc}", path=str(path)) from None


def validate(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Every schema violation as 'dotted.path: message', most specific first; [] when valid."""
    validator = StrictValidator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(e.absolute_path), e.message))
    return [_schema_message(e) for e in errors]


def load_config(path: Path | None) -> WatchConfig:
    """Read and validate `path`; a missing file (or None) means the defaults."""
    if path is None or not os.path.lexists(path):
        return WatchConfig()
    try:
        data = tomllib.loads(read_config_file(path, "config", WatchConfigError))
    except tomllib.TOMLDecodeError as exc:
        raise WatchConfigError(f"config {path} is not valid TOML: {exc}", path=str(path)) from exc
    problems = validate(data, CONFIG_SCHEMA)
    if problems:
        raise WatchConfigError(f"config {path} is invalid: " + "; ".join(problems),
                               path=str(path), problems=problems)
    watch = data.get("watch", {})
    presets = {}
    for name, table in data.get("presets", {}).items():
        src = Path(table["source"])
        ref = Path(table["reference"]) if "reference" in table else None
        if not src.is_absolute() or (ref is not None and not ref.is_absolute()):
            raise WatchConfigError(f"config {path}: presets.{name}: source and reference must be absolute paths",
                                   path=str(path), preset=name)
        options = dict(table.get("options", {}))
        if "face_map" in table:  # passed to the engine like any job option
            pairs = [[e["reference"], e["source"]] for e in table["face_map"]]
            if not all(Path(p).is_absolute() for pair in pairs for p in pair):
                raise WatchConfigError(f"config {path}: presets.{name}: face_map paths must be absolute",
                                       path=str(path), preset=name)
            options["face_map"] = pairs
        presets[name] = Preset(name, src, ref, options)
    return WatchConfig(**watch, engine=dict(data.get("engine", {})),
                       gpu_memory_limit_gb=data.get("gpu", {}).get("memory_limit_gb"),
                       gpu_arena_extend_strategy=data.get("gpu", {}).get("arena_extend_strategy"),
                       gpu_device_id=data.get("gpu", {}).get("device_id"),
                       presets=presets, source_file=str(path),
                       dispatch_backend=data.get("dispatch", {}).get("backend", "local"),
                       slurm=dict(data.get("dispatch", {}).get("slurm", {})),
                       provenance_require=bool(data.get("provenance", {}).get("require", False)),
                       provenance_key=data.get("provenance", {}).get("key"),
                       provenance_chain=data.get("provenance", {}).get("chain"))
