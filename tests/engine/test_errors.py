"""The engine's one error root: attributes, to_dict, the exit-code table and the CLI built from it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from click.testing import CliRunner

from sealfuse.cli import main
from sealfuse.engine import errors
from sealfuse.engine.errors import EXIT_CODES, EngineError

ENGINE = Path(errors.__file__).parent


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_all_subclasses(sub)]
    return out


def test_every_engine_error_has_a_documented_exit_code_and_a_snake_case_reason():
    classes = [EngineError, *_all_subclasses(EngineError)]
    assert len(classes) > 15
    for cls in classes:
        assert cls.exit_code in EXIT_CODES, cls
        assert cls.reason.replace("_", "").isalpha() and cls.reason.islower(), cls


def test_to_dict_has_the_shared_keys_and_json_ready_evidence(tmp_path):
    err = errors.ModelDigestMismatchError("bad pin", file=tmp_path / "m.onnx", expected="a" * 64,
                                          sizes=(1, 2), nested={"p": tmp_path})
    doc = err.to_dict()
    assert set(doc) == {"ok", "error", "reason", "message", "evidence", "exit_code"}
    assert doc["ok"] is False and doc["error"] == "ModelDigestMismatchError"
    assert doc["reason"] == "model_digest_mismatch" and doc["exit_code"] == 5 == err.exit_code
    assert doc["evidence"] == {"file": str(tmp_path / "m.onnx"), "expected": "a" * 64, "sizes": [1, 2],
                               "nested": {"p": str(tmp_path)}}
    assert json.loads(json.dumps(doc)) == doc and str(err) == "bad pin"


def test_swap_help_epilog_lists_the_whole_table_in_order():
    res = CliRunner().invoke(main, ["swap", "--help"], terminal_width=200)
    lines = [ln.strip() for ln in res.output.split("Exit codes:")[1].strip().splitlines()]
    assert lines == [f"{code}  {text}" for code, text in EXIT_CODES.items()]


def test_no_literal_exit_numbers_in_the_engine_cli():
    tree = ast.parse((ENGINE / "cli.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "exit" and node.args:
            assert not isinstance(node.args[0], ast.Constant), ast.unparse(node)


def test_the_cli_json_error_is_to_dict(hanks_png, tmp_path, empty_models):
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    res = CliRunner().invoke(main, ["swap", "-s", str(hanks_png), "-t", str(bad), "-o", str(tmp_path / "o.jpg"),
                                    "--models-dir", str(empty_models), "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == doc["exit_code"] == 3
    assert set(doc) == {"ok", "error", "reason", "message", "evidence", "exit_code"}
    assert doc["reason"] == "empty_file" and not (tmp_path / "o.jpg").exists()


def test_the_older_code_name_stays_equal_to_exit_code_on_classes_and_instances():
    class Legacy(EngineError):
        code = 9

    assert Legacy.exit_code == Legacy.code == 9 and Legacy("x").to_dict()["exit_code"] == 9
    assert errors.ModelMissingError.code == errors.ModelMissingError("x").code == 5
