"""`sealfuse swap` and `sealfuse models`: the engine's command line."""

from __future__ import annotations

import json
import json as jsonlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sealfuse.engine.errors import EXIT_INTERRUPTED, EngineError, exit_code_help
from sealfuse.engine.facemap import parse_face_map
from sealfuse.engine.families import ENHANCER_FAMILIES
from sealfuse.engine.formats import VIDEO_EXTS
from sealfuse.engine.options import (
    EXECUTION_PROVIDERS,
    FRAME_PROCESSORS,
    LABEL_CORNERS,
    MASK_REGIONS,
    MASK_TYPES,
    SELECTOR_MODES,
    VIDEO_ENCODERS,
    SwapOptions,
    default_models_dir,
)
from sealfuse.engine.registry import CATALOG
from sealfuse.engine.swappers import swapper_names

D = SwapOptions()
# The demo's colour source: t1.jpg's right-most face (frontal, evenly lit, no hair across the cheeks)
DEMO_SOURCE, DEMO_SOURCE_POSITION = "t1.jpg", 5
EXIT_HELP = "\b\n" + exit_code_help()


class FiniteFloat(click.FloatRange):
    """click.FloatRange that also refuses NaN and infinities (NaN passes every range comparison)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


def _csv(choices: tuple[str, ...]) -> Any:
    def convert(_ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = [v for v in items if v not in choices]
        if bad or not items:
            raise click.BadParameter(f"{value!r}: choose a comma list of {', '.join(choices)}", param=param)
        return items
    return convert


def _padding(_ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int, int, int]:
    try:
        vals = [int(v) for v in value.replace(",", " ").split()]
    except ValueError:
        raise click.BadParameter("give 1, 2 or 4 integers (percent)", param=param) from None
    if len(vals) == 1:
        vals = vals * 4
    elif len(vals) == 2:
        vals = [vals[0], vals[1], vals[0], vals[1]]
    if len(vals) != 4 or any(not 0 <= v <= 100 for v in vals):
        raise click.BadParameter("give 1, 2 or 4 integers within 0..100", param=param)
    return vals[0], vals[1], vals[2], vals[3]


SWAPPERS = ["auto", "mesh"] + [n for n in swapper_names() if n != "mesh"]
ENHANCERS = sorted(n for n, s in CATALOG.items() if s.family in ENHANCER_FAMILIES)


def _licences(names: list[str]) -> str:
    """'name licence; ...' for the catalog entries among `names`, grouped by family."""
    groups: dict[str, list[str]] = {}
    for n in names:
        if n in CATALOG:
            groups.setdefault(f"{CATALOG[n].family}\0{CATALOG[n].licence}", []).append(n)
    return "; ".join(f"{', '.join(ns)}: {key.split(chr(0))[1]}" for key, ns in groups.items())


DETECTORS = ["auto", "blazeface", "mtcnn"] + sorted(n for n, s in CATALOG.items() if s.family == "scrfd")
RECOGNIZERS = sorted(n for n, s in CATALOG.items() if s.family == "arcface")


@click.command(epilog=f"Exit codes:\n\n{EXIT_HELP}", context_settings={"max_content_width": 100})
@click.option("-s", "--source", "sources", type=click.Path(path_type=Path), multiple=True,
              help="Image with the face to put in (the largest face, or the one at --source-face-position). "
                   "Give it several times for several images of one person: their embeddings are averaged "
                   "into one identity and the report says how alike they were. Default: insightface's "
                   "six-face sample photo t1.jpg, its right-most face (position 5).")
@click.option("--source-face-position", type=click.IntRange(0), default=None,
              help="Use the source image's face at this position, counted from the left from 0 (default: "
                   "the largest). When the source and target are the same image, that face is left as is.")
@click.option("--face-map", "face_map", multiple=True, metavar="REFERENCE=SOURCE",
              help="Repeatable. Each target face is matched to the nearest REFERENCE face (cosine distance "
                   "under --reference-face-distance) and gets that reference's SOURCE; unmatched faces stay "
                   "untouched. In video the match is made per track. Needs a face recognizer; replaces --source.")
@click.option("-t", "--target", type=click.Path(path_type=Path), default=None,
              help="Image (jpg, png, webp) or video (mp4, mov, mkv, webm) to change. "
                   "Default: the six-face sample photo t1.jpg shipped with insightface.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Where to write the result (same kind as the target); written atomically. "
                   "Default: sealfuse-swap.<target extension> in the current directory.")
@click.option("--frame-processors", default="face_swapper", show_default=True,
              callback=_csv(FRAME_PROCESSORS), help="Comma list: face_swapper[,face_enhancer].")
@click.option("--face-swapper-model", type=click.Choice(SWAPPERS), default=D.face_swapper_model, show_default=True,
              help="auto = inswapper_128 when its file is in the models directory, else mesh. "
                   "mesh is DEMO GRADE: the source face's texture warped onto each target's FaceMesh, colour "
                   "matched and Poisson-blended, with the starter models only; identity transfer is partial "
                   "(the face shape stays the target's). The learned families are the product and need an "
                   f"ArcFace recognizer. Licences: {_licences(SWAPPERS)}.")
@click.option("--face-enhancer-model", type=click.Choice(ENHANCERS), default=D.face_enhancer_model, show_default=True,
              help=f"Licences: {_licences(ENHANCERS)}.")
@click.option("--face-enhancer-blend", type=FiniteFloat(0, 1), default=D.face_enhancer_blend, show_default=True)
@click.option("--face-enhancer-weight", type=FiniteFloat(0, 1), default=D.face_enhancer_weight, show_default=True,
              help="codeformer's fidelity weight: 0 favours restoration, 1 fidelity to the input.")
@click.option("--face-detector-model", type=click.Choice(DETECTORS), default=D.face_detector_model, show_default=True,
              help="auto = scrfd_10g when present, else the starter blazeface (full range on the whole "
                   "image plus 640-px tiles for small faces, short range for close-ups). Behind BlazeFace, FaceMesh 468 gives every face its "
                   "mesh and five alignment points. mtcnn is the older starter detector (slower).")
@click.option("--face-detector-score", type=FiniteFloat(0, 1), default=D.face_detector_score, show_default=True)
@click.option("--face-recognizer-model", type=click.Choice(RECOGNIZERS), default=D.face_recognizer_model,
              show_default=True, help="Needed by the inswapper family and by reference selection.")
@click.option("--blend-ratio", type=FiniteFloat(0, 1), default=D.blend_ratio, show_default=True,
              help="0 leaves the target unchanged, 1 shows the swapped face fully inside the mask.")
@click.option("--face-mask-types", default=",".join(D.face_mask_types), show_default=True,
              callback=_csv(MASK_TYPES),
              help="Comma list of box, ellipse, region. region keeps --face-mask-regions: from the "
                   "bisenet_resnet_34 face parser when supplied, else from the face's FaceMesh points.")
@click.option("--face-mask-regions", default=",".join(D.face_mask_regions), show_default=True,
              callback=_csv(MASK_REGIONS),
              help=f"Comma list of {', '.join(MASK_REGIONS)} (left/right: the subject's own). Leave out "
                   "eyes and mouth to keep the target's (glasses: parser only).")
@click.option("--face-mask-blur", type=FiniteFloat(0, 1), default=D.face_mask_blur, show_default=True)
@click.option("--face-mask-padding", default="0,0,0,0", show_default=True, callback=_padding,
              help="Percent of the crop cut from top,right,bottom,left (1, 2 or 4 values).")
@click.option("--face-selector-mode", type=click.Choice(SELECTOR_MODES), default=D.face_selector_mode, show_default=True,
              help="many = every face; one = the largest; reference = faces close to --reference-face-image.")
@click.option("--reference-face-image", type=click.Path(path_type=Path), default=None)
@click.option("--reference-face-distance", type=FiniteFloat(0, 2), default=D.reference_face_distance,
              show_default=True, help="Cosine distance below which a face matches the reference.")
@click.option("--execution-providers", default=",".join(D.execution_providers), show_default=True,
              callback=_csv(EXECUTION_PROVIDERS),
              help="Priority list of cuda, tensorrt, cpu. Missing accelerators fall back to CPU with a warning.")
@click.option("--execution-threads", type=click.IntRange(1, 256), default=D.execution_threads, show_default=True)
@click.option("--max-memory", "max_memory_gb", type=FiniteFloat(min=0.1), default=None,
              help="GPU memory limit in GB for the CUDA/TensorRT arena (gpu_mem_limit). Default: no limit.")
@click.option("--models-dir", type=click.Path(path_type=Path), default=None,
              help=f"Directory of operator-supplied models and models.lock.json. Default: $SEALFUSE_MODELS_DIR, "
                   f"else /opt/sealfuse/current/models, else ~/.local/share/sealfuse/models (now: {default_models_dir()}).")
@click.option("--max-pixels", type=click.IntRange(1), default=D.max_pixels, show_default=True,
              help="Refuse images and video frames with more pixels (decompression-bomb guard).")
@click.option("--detect-every", type=click.IntRange(1), default=D.detect_every, show_default=True,
              help="Video: detect faces every N frames and track landmarks in between.")
@click.option("--output-video-encoder", type=click.Choice(VIDEO_ENCODERS), default=D.output_video_encoder, show_default=True)
@click.option("--output-video-quality", type=click.IntRange(0, 100), default=D.output_video_quality, show_default=True)
@click.option("--output-video-preset", default=D.output_video_preset, show_default=True)
@click.option("--trim-frame-start", type=click.IntRange(0), default=None)
@click.option("--trim-frame-end", type=click.IntRange(1), default=None)
@click.option("--label", default=None,
              help="Disclosure text drawn in a corner of the image or of every video frame, e.g. "
                   "'AI-generated (face swap)': the visible deepfake disclosure of EU AI Act Article 50(4). "
                   "Printable ASCII, 1-100 characters. Default: no label.")
@click.option("--label-corner", type=click.Choice(LABEL_CORNERS), default=D.label_corner, show_default=True)
@click.option("--provenance-key", type=click.Path(path_type=Path), default=None,
              help="PEM private key (Ed25519 or ECDSA P-256) that signs the output's C2PA manifest. Default: "
                   "$SEALFUSE_PROVENANCE_KEY, else signing.key in /opt/sealfuse/current/provenance or "
                   "/etc/sealfuse/provenance when present, else unsigned.")
@click.option("--provenance-chain", type=click.Path(path_type=Path), default=None,
              help="PEM certificate chain of that key (appliance certificate first, then the studio CA). "
                   "Default: $SEALFUSE_PROVENANCE_CHAIN, else chain.pem beside the key.")
@click.option("--require-signed", is_flag=True,
              help="Fail (exit 9) instead of writing an output without C2PA content credentials.")
@click.option("--job-id", default=None, help="Job id recorded in the manifest. Default: a new random id.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report (or error) on stdout.")
def swap(sources: tuple[Path, ...], face_map: tuple[str, ...], target: Path | None, output: Path | None,
         as_json: bool,
         max_memory_gb: float | None, models_dir: Path | None, provenance_key: Path | None,
         provenance_chain: Path | None, require_signed: bool, job_id: str | None, **kw: Any) -> None:
    """Swap the face from SOURCE into every selected face of TARGET.

    Runs fully offline on ONNX Runtime; never downloads a model. Models are checked against their
    sha256 pins before any session is created. With no arguments, takes the right-most face of the
    sample group photo t1.jpg and swaps it into the other five, writing ./sealfuse-swap.jpg.
    """
    if face_map and sources:
        raise click.UsageError("give --source or --face-map, not both (with a face map, unmatched faces stay "
                               "untouched)")
    source: list[Path] | None = list(sources) or None
    if (source is None and not face_map) or target is None:
        samples = sample_images()
        if source is None and not face_map:
            source = [samples / DEMO_SOURCE]
            if kw.get("source_face_position") is None:
                kw["source_face_position"] = DEMO_SOURCE_POSITION
        target = target or samples / "t1.jpg"
    if output is None:
        output = Path(f"sealfuse-swap{Path(target).suffix.lower()}")
    try:
        mapping = parse_face_map(face_map)
    except EngineError as exc:
        raise click.BadParameter(exc.message, param_hint="--face-map") from None
    options = SwapOptions(max_memory_gb=max_memory_gb, models_dir=models_dir or default_models_dir(),
                          face_map=mapping, **kw)
    cancel = threading.Event()
    progress = None
    if Path(target).suffix.lower() in VIDEO_EXTS:
        progress = progress_printer(json=as_json)

    def on_term(_signum: int, _frame: Any) -> None:
        cancel.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    from sealfuse.engine.api import swap_file

    try:
        from sealfuse.engine.provenance import Provenance, ProvenanceConfig

        if provenance_key or provenance_chain:
            pconfig = ProvenanceConfig(provenance_key, provenance_chain, require_signed)
        else:
            pconfig = ProvenanceConfig.from_environment(require=require_signed)
        one = source[0] if source and len(source) == 1 else source
        report = swap_file(one, target, output, options, progress=progress, cancel=cancel,
                           provenance=Provenance(pconfig), job_id=job_id)
    except EngineError as exc:
        if as_json:
            click.echo(json.dumps(exc.to_dict(), indent=2))
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        cancel.set()
        click.echo("interrupted: no output written", err=True)
        sys.exit(EXIT_INTERRUPTED)
    for w in report.get("warnings", []):
        click.echo(f"warning: {w}", err=True)
    if as_json:
        click.echo(json.dumps({"ok": True, **report}, indent=2, default=str))
    else:
        n = sum(1 for f in report.get("faces", []) if f.get("selected"))
        what = f"{report.get('frames', 0)} frames" if report.get("kind") == "video" else f"{n} face(s) swapped"
        click.echo(f"{output}: {what} with {report['swapper']} in {report['timings_ms']['total'] / 1000:.2f}s")


def progress_printer(json: bool = False, stream: Any = None) -> Callable[[dict[str, Any]], None]:
    """A progress callback for the CLI: JSON lines with `json`, else a bar on a TTY, else a line every 2 s.

    Output goes to stderr (stdout keeps the final report). The bar is tqdm's when it is installed.
    """
    out = stream or sys.stderr
    if json:
        def emit_json(p: dict[str, Any]) -> None:
            out.write(jsonlib.dumps({"progress": p}) + "\n")
            out.flush()
        return emit_json
    tty = hasattr(out, "isatty") and out.isatty()
    if tty:
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with insightface
            tqdm = None
        if tqdm is not None:
            bar: dict[str, Any] = {}

            def emit_bar(p: dict[str, Any]) -> None:
                if "bar" not in bar:
                    bar["bar"] = tqdm(total=p.get("total") or None, unit="frame", file=out, dynamic_ncols=True)
                b = bar["bar"]
                b.update(p["frame"] - b.n)
                if p.get("done"):
                    b.close()
            return emit_bar
    last = [0.0]

    def emit_line(p: dict[str, Any]) -> None:
        now = time.monotonic()
        if not p.get("done") and now - last[0] < (0.25 if tty else 2.0):
            return
        last[0] = now
        total = p.get("total") or 0
        pct = f" ({100 * p['frame'] / total:.0f}%)" if total else ""
        eta = f", eta {p['eta_s']:.0f}s" if p.get("eta_s") is not None else ""
        lead = "\r" if tty else ""
        tail = "" if tty and not p.get("done") else "\n"
        out.write(f"{lead}frame {p['frame']}/{total or '?'}{pct} {p['fps']:.1f} fps{eta}{tail}")
        out.flush()
    return emit_line



def sample_images() -> Path:
    """insightface's bundled sample photos (located without importing insightface)."""
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        raise click.UsageError("no --source/--target given and insightface's sample photos are not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


@click.group()
def models() -> None:
    """List the model catalog, and pin model files in a models directory."""


@models.command("list")
@click.option("--models-dir", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True)
def list_models(models_dir: Path | None, as_json: bool) -> None:
    """Show every known model, its licence, and whether it is present and pinned."""
    from sealfuse.engine.registry import licence_class_of, read_licence_policy, read_lock

    mdir = models_dir or default_models_dir()
    try:
        lock = read_lock(mdir) if mdir.is_dir() else {}
        policy = read_licence_policy(mdir) if mdir.is_dir() else "any"
    except EngineError as exc:
        if as_json:
            click.echo(json.dumps(exc.to_dict(), indent=2))
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    rows = []
    for spec in CATALOG.values():
        path = mdir / spec.file if not spec.packaged else None
        cls = licence_class_of(spec, lock.get(spec.file))
        rows.append({"name": spec.name, "family": spec.family, "role": _role(spec.name, spec.family),
                     "file": spec.file, "licence": spec.licence, "licence_class": cls,
                     "licence_grant": (lock.get(spec.file) or {}).get("licence_grant"),
                     "allowed": policy == "any" or cls == "commercial",
                     "present": spec.packaged or bool(path and path.is_file()),
                     "pinned": bool(spec.sha256) or spec.file in lock})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"licence policy: {policy} ({mdir / 'models.lock.json'})")
    for r in rows:
        state = "present" if r["present"] else "missing"
        state += ", pinned" if r["pinned"] else ""
        state += "" if r["allowed"] else ", refused"
        grant = f" (commercial by grant {r['licence_grant']})" if r["licence_grant"] else ""
        click.echo(f"{r['name']:<24} {r['role']:<20} {state:<25} {r['licence']}{grant}")


def _role(name: str, family: str) -> str:
    if name in SWAPPERS:
        return "face_swapper"
    if family in ENHANCER_FAMILIES:
        return "face_enhancer"
    if family == "embedding_converter":
        return family
    return {"arcface": "face_recognizer", "bisenet": "face_parser", "facemesh": "face_landmarker"}.get(
        family, "face_detector")


@models.command("pin")
@click.option("--models-dir", type=click.Path(path_type=Path), default=None)
@click.argument("names", nargs=-1, required=True)
def pin(models_dir: Path | None, names: tuple[str, ...]) -> None:
    """Record the sha256 of model files in MODELS_DIR/models.lock.json (development machines).

    On an appliance the installer writes this file from the signed bundle manifest.
    """
    from sealfuse.engine.registry import ModelRegistry, read_lock, sha256_file, write_lock

    mdir = models_dir or default_models_dir()
    try:
        entries = read_lock(mdir)
        specs = [(name, ModelRegistry.spec(name)) for name in names]
    except EngineError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    for name, spec in specs:
        path = mdir / spec.file
        if spec.packaged or not path.is_file():
            raise click.ClickException(f"{name}: no file {path} to pin")
        entries[spec.file] = {"name": name, "file": spec.file, "sha256": sha256_file(path),
                              "size": path.stat().st_size, "licence": spec.licence}
        click.echo(f"pinned {spec.file} {entries[spec.file]['sha256']}")
    write_lock(mdir, entries.values())


@models.command("fetch-starter", epilog=f"Exit codes:\n\n{EXIT_HELP}")
@click.option("--dest", type=click.Path(path_type=Path), default=None,
              help="Directory to put the starter models in. Default: the models directory "
                   f"($SEALFUSE_MODELS_DIR, ...; now: {default_models_dir()}).")
@click.option("--wheel", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Read this local mediapipe-0.10.21 wheel instead of downloading it with pip.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report (or error) on stdout.")
def fetch_starter_cmd(dest: Path | None, wheel: Path | None, as_json: bool) -> None:
    """Fetch the starter models (BlazeFace full and short range, FaceMesh 468; Apache-2.0).

    Downloads the pinned wheel mediapipe==0.10.21 with pip (a connected machine only: the
    appliance gets these files in its bundle), reads only the three .tflite files out of it,
    checks each against its sha256 pin and writes them atomically; nothing unverified is written
    and mediapipe itself is never installed. Files already present are checked, not replaced.
    """
    from sealfuse.engine.starter import fetch_starter

    try:
        report = fetch_starter(dest or default_models_dir(), wheel=wheel)
    except EngineError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, **exc.to_dict()}, indent=2))
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.code)
    if as_json:
        click.echo(json.dumps({"ok": True, **report}, indent=2))
        return
    for row in report["models"]:
        click.echo(f"{row['action']:<8} {report['dest']}/{row['file']}  sha256 {row['sha256']}  {row['licence']}")
