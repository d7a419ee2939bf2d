"""The appliance's one error root and its exit-code tables: every error has the shared shape, the
tables are what --help prints and what docs/operator.md documents, and no CLI code holds a number."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealfuse.appliance import errors
from sealfuse.appliance.audit import verify_cmd
from sealfuse.appliance.cli import doctor, install, rollback, status, uninstall
from sealfuse.appliance.errors import ApplianceError, StateError

REPO = Path(__file__).resolve().parents[2]
APPLIANCE = REPO / "appliance"


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


ALL_ERRORS = _subclasses(ApplianceError)


def test_every_appliance_error_has_a_snake_case_reason_a_code_and_the_shared_dict() -> None:
    assert len(ALL_ERRORS) >= 13
    reasons = [cls.reason for cls in ALL_ERRORS]
    assert len(set(reasons)) == len(reasons), "reasons must be unique"
    for cls in ALL_ERRORS:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", cls.reason), cls
        assert cls.__doc__, cls
        err = cls("it broke", path=Path("/x"), items={3, 1})
        doc = err.to_dict()
        assert list(doc) == ["ok", "error", "reason", "message", "evidence", "exit_code"]
        assert doc["ok"] is False and doc["error"] == cls.__name__
        assert doc["reason"] == cls.reason and doc["exit_code"] == cls.exit_code
        assert doc["evidence"] == {"path": "/x", "items": [1, 3]} and str(err) == "it broke"


def test_documented_installer_codes_keep_their_numbers() -> None:
    # README and docs/operator.md document these numbers: they must never move.
    expected = {"StateError": 80, "LockBusyError": 80, "RolledBackError": 81,
                "ServiceDownError": 82, "NothingToRollBackError": 83, "NotInstalledError": 84,
                "TrustRequiredError": 85, "ReleaseRunningError": 86,
                "PlatformMismatchError": 87, "InsufficientSpaceError": 88, "VenvError": 89,
                "SystemdError": 90}
    assert {name: getattr(errors, name).exit_code for name in expected} == expected


def test_two_errors_sharing_a_code_are_both_in_the_table() -> None:
    line = errors.INSTALL_EXIT_CODES[StateError.exit_code]
    assert "StateError" in line and "LockBusyError" in line


@pytest.mark.parametrize(("command", "table"), [
    (install, errors.INSTALL_EXIT_CODES), (rollback, errors.ROLLBACK_EXIT_CODES),
    (uninstall, errors.UNINSTALL_EXIT_CODES), (status, errors.STATUS_EXIT_CODES),
    (doctor, errors.DOCTOR_EXIT_CODES), (verify_cmd, errors.AUDIT_VERIFY_EXIT_CODES)])
def test_help_lists_every_code_of_the_commands_table(command, table: dict[int, str]) -> None:
    res = CliRunner().invoke(command, ["--help"], terminal_width=400)
    assert res.exit_code == 0
    help_lines = [line.strip() for line in res.output.splitlines()]
    for code, text in table.items():
        assert f"{code:>3}  {text}".strip() in help_lines, (code, res.output)


def test_operator_docs_document_every_code_of_the_appliance_commands() -> None:
    doc = (REPO / "docs" / "operator.md").read_text()
    section = doc.split("## Exit codes of install", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+)(?:-\d+)? \|", section, re.M)}
    tables = (errors.INSTALL_EXIT_CODES, errors.ROLLBACK_EXIT_CODES,
              errors.UNINSTALL_EXIT_CODES, errors.STATUS_EXIT_CODES, errors.DOCTOR_EXIT_CODES)
    assert set().union(*tables) == documented


def _literal_exits(path: Path) -> list[str]:
    """sys.exit(<number>) calls and `exit_code = <number>` assignments in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "exit" and node.args):
            arg = node.args[0]
            values = [arg.body, arg.orelse] if isinstance(arg, ast.IfExp) else [arg]
            if any(isinstance(v, ast.Constant) for v in values):
                found.append(f"{path.name}:{node.lineno} sys.exit({ast.unparse(arg)})")
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "exit_code" for t in targets) \
                    and isinstance(node.value, ast.Constant):
                found.append(f"{path.name}:{node.lineno} exit_code = {node.value.value}")
    return found


def test_no_literal_exit_numbers_in_the_appliance_command_code() -> None:
    modules = ["cli.py", "audit.py", "install.py", "uninstall.py", "staging.py", "units.py",
               "release.py", "doctor.py"]
    found = [hit for name in modules for hit in _literal_exits(APPLIANCE / name)]
    assert found == []
    assert _literal_exits(APPLIANCE / "errors.py")  # the check does see numbers where they live
