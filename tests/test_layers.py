"""The layer rule as a test, read from the source (AST): engine imports nothing of ours; verifier
nothing of ours and never numpy, cv2, onnxruntime or av; bundle only the verifier; appliance only
the engine and the verifier; and other layers reach engine and bundle only through their `__all__`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import sealfuse.bundle
import sealfuse.engine

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"numpy", "cv2", "onnxruntime", "av"}
# layer -> sealfuse packages it may import ("sealfuse" itself: the namespace's __version__ only)
ALLOWED = {
    "engine": {"sealfuse.engine"},
    "verifier": {"sealfuse.verifier"},
    "bundle": {"sealfuse.bundle", "sealfuse.verifier"},
    "appliance": {"sealfuse.appliance", "sealfuse.engine", "sealfuse.verifier", "sealfuse"},
}
SURFACES = {"sealfuse.engine": set(sealfuse.engine.__all__),
            "sealfuse.bundle": set(sealfuse.bundle.__all__)}


def imports(source: str, package: str) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) for every import anywhere in `source`."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the module's own package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            out.append((node.lineno, module, [alias.name for alias in node.names]))
    return out


def violations(layer: str, source: str, package: str, where: str) -> list[str]:
    found = []
    for line, module, names in imports(source, package):
        top = module.split(".")[0]
        at = f"{where}:{line} imports {module}"
        if layer == "verifier" and top in HEAVY:
            found.append(f"{at} (the verifier never imports {top})")
        if top != "sealfuse":
            continue
        owner = ".".join(module.split(".")[:2])
        if owner not in ALLOWED[layer]:
            found.append(f"{at} (the {layer} layer may import only {sorted(ALLOWED[layer])})")
        elif module == "sealfuse" and set(names) - {"__version__"}:
            found.append(f"{at} {names} (only __version__ from the namespace)")
        elif owner in SURFACES and owner != f"sealfuse.{layer}":
            if module != owner:
                found.append(f"{at} (use the public surface: from {owner} import ...; "
                             "a name it lacks goes into its _SURFACE)")
            elif set(names) - SURFACES[owner]:
                found.append(f"{at} {sorted(set(names) - SURFACES[owner])} (not in {owner}.__all__)")
    return found


def layer_files(layer: str) -> list[Path]:
    files = sorted((REPO / layer).rglob("*.py"))
    assert files, layer
    return files


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_the_layer_rule_allows(layer: str) -> None:
    found = []
    for path in layer_files(layer):
        rel = path.relative_to(REPO / layer).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        package = ".".join(["sealfuse", layer, *parts[:-1]] if path.name != "__init__.py"
                           else ["sealfuse", layer, *parts])
        found += violations(layer, path.read_text(), package, str(path.relative_to(REPO)))
    assert found == []


@pytest.mark.parametrize(("layer", "source", "reason"), [
    ("engine", "from sealfuse.verifier import Manifest\n", "may import only"),
    ("engine", "def f():\n    from ..appliance import audit\n", "may import only"),
    ("verifier", "def f():\n    import numpy as np\n", "never imports numpy"),
    ("verifier", "from cv2 import imread\n", "never imports cv2"),
    ("bundle", "from sealfuse.engine import Engine\n", "may import only"),
    ("appliance", "from sealfuse.bundle import build_bundle\n", "may import only"),
    ("appliance", "from sealfuse.engine.api import Engine\n", "public surface"),
    ("appliance", "from sealfuse.engine import pipeline\n", "not in sealfuse.engine.__all__"),
    ("appliance", "from sealfuse import cli\n", "only __version__"),
])
def test_the_checker_catches_each_kind_of_violation(layer: str, source: str, reason: str) -> None:
    found = violations(layer, source, f"sealfuse.{layer}", "probe.py")
    assert len(found) == 1 and reason in found[0], found


def _heavy_modules_after(code: str) -> list[str]:
    probe = (f"{code}\nimport sys\n"
             f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - a list literal we printed


def test_the_engine_surface_imports_lazily() -> None:
    assert _heavy_modules_after("import sealfuse.engine\n"
                                "from sealfuse.engine import VIDEO_EXTS, IMAGE_EXTS") == []
    assert _heavy_modules_after("from sealfuse.engine import Engine") != []  # the probe works


def test_sealfuse_verify_imports_no_numpy_cv2_onnxruntime_or_av() -> None:
    code = ("import sys\nfrom sealfuse.cli import main\nsys.argv = ['sealfuse', 'verify', '--help']\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n")
    assert _heavy_modules_after(code) == []


def test_one_list_of_media_extensions() -> None:
    from sealfuse.appliance.watch.admission import engine_extensions
    from sealfuse.engine import IMAGE_EXTS, VIDEO_EXTS
    from sealfuse.engine.api import SUPPORTED_IMAGE_EXTS, SUPPORTED_VIDEO_EXTS
    from sealfuse.engine.video_probe import VIDEO_EXTS as PROBED

    assert engine_extensions() == (IMAGE_EXTS, VIDEO_EXTS)
    assert SUPPORTED_VIDEO_EXTS is VIDEO_EXTS and PROBED is VIDEO_EXTS
    assert SUPPORTED_IMAGE_EXTS == IMAGE_EXTS
    literal = '".mp4", ".mov"'
    defined = [str(p.relative_to(REPO)) for layer in ALLOWED for p in layer_files(layer)
               if literal in p.read_text()]
    assert defined == ["engine/formats.py"]
