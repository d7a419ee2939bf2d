"""The wheel ships every package of the tree (a missing subpackage breaks the installed daemon)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = cfg["package-dir"]
    found = set()
    for pkg, directory in mapping.items():
        if "." in pkg and pkg.rsplit(".", 1)[0] in mapping and mapping[pkg.rsplit(".", 1)[0]] != "sealfuse":
            continue
        for init in (ROOT / directory).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / directory)
            found.add(".".join([pkg, *rel.parts]))
    assert found == listed
