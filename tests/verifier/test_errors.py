"""One error root per layer with the same fields, exit-code tables next to the errors, --help
epilogs generated from them, and no literal exit numbers in the verifier's or bundle's CLI code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealfuse.bundle import errors as B
from sealfuse.cli import main
from sealfuse.verifier import errors as E

REPO = Path(__file__).resolve().parents[2]


def _classes(module: object, root: type) -> list[type]:
    return [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, root)]


def test_bundle_errors_are_not_verification_errors_and_share_the_fields() -> None:
    bundle_classes = _classes(B, B.BundleError)
    assert len(bundle_classes) >= 6
    for cls in bundle_classes:
        assert not issubclass(cls, E.VerificationError), cls
        assert cls.exit_code in B.BUILD_EXIT_CODES, cls
    err = B.WheelError("bad wheel", path="x.whl")
    assert err.to_dict() == {"ok": False, "error": "WheelError", "reason": "wheel",
                             "message": "bad wheel", "evidence": {"path": "x.whl"},
                             "exit_code": 81}
    assert not isinstance(err, E.VerificationError)


@pytest.mark.parametrize("cls", _classes(E, E.VerificationError))
def test_every_verifier_error_has_a_snake_case_reason_and_the_documented_dict(cls: type) -> None:
    err = cls("message", path="p", keys={"b", "a"})
    doc = err.to_dict()
    assert set(doc) == {"ok", "error", "reason", "message", "evidence", "exit_code"}
    assert doc["reason"] == cls.reason and doc["reason"].replace("_", "").isalpha()
    assert doc["reason"] == doc["reason"].lower()
    assert doc["evidence"] == {"path": "p", "keys": ["a", "b"]}
    assert doc["exit_code"] == cls.exit_code and doc["ok"] is False


def test_reasons_are_distinct_within_each_layer() -> None:
    for classes in (_classes(E, E.VerificationError), _classes(B, B.BundleError)):
        reasons = [c.reason for c in classes]
        assert len(reasons) == len(set(reasons)), reasons


@pytest.mark.parametrize("argv,table", [
    (["verify", "--help"], E.EXIT_CODES),
    (["keygen", "--help"], E.KEYGEN_EXIT_CODES),
    (["trust", "--help"], E.TRUST_EXIT_CODES),
    (["bundle", "build", "--help"], B.BUILD_EXIT_CODES),
    (["bundle", "inspect", "--help"], B.BUILD_EXIT_CODES),
])
def test_help_epilog_lists_every_row_of_its_table(argv: list[str], table: dict[int, str]) -> None:
    text = " ".join(CliRunner().invoke(main, argv).output.split())
    for code, row in table.items():
        assert f"{code} {' '.join(row.split())}" in text, (code, row)


@pytest.mark.parametrize("path", ["verifier/cli.py", "bundle/cli.py"])
def test_cli_code_has_no_literal_exit_numbers(path: str) -> None:
    """Exit statuses come from the error classes and tables, never from a number in the CLI."""
    tree = ast.parse((REPO / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name in ("sys.exit", "exit", "ctx.exit", "SystemExit"):
                assert not any(isinstance(a, ast.Constant) for a in node.args), ast.unparse(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert "Exit codes:\n" not in node.value, "a hand-written exit code table"


def test_the_auditor_guide_documents_every_exit_code_and_class_of_verify() -> None:
    text = (REPO / "docs" / "auditor.md").read_text()
    for code in E.EXIT_CODES:
        assert f"\n| {code} |" in text, code
    for cls in _classes(E, E.VerificationError):
        if cls.exit_code in E.EXIT_CODES and cls is not E.VerificationError:
            assert f"`{cls.__name__}`" in text, cls.__name__
