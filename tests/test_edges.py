"""Cross-command edge cases: hostile inputs every command must refuse with a named error and
a documented exit code, never a traceback or a hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from sealfuse.cli import main


@pytest.mark.parametrize("args", [
    ["keygen", "--out", "{tmp}", "--json"],                      # a directory as the key path
    ["audit", "verify", "{tmp}", "--json"],                      # a directory as the log
    ["verify", "--json"],                                       # missing argument
    ["verify", "x.bundle", "--trust", "t.json", "--json", "--clock-skew", "-1"],
    ["audit", "verify", "x", "--json", "--anchor", "nan:00"],   # malformed option value
    ["status", "--json", "--no-such-option"],
])
def test_json_usage_errors_are_the_json_error_object(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(main, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 2 and doc["reason"] == "usage_error"
    assert doc["message"]


def test_without_json_a_usage_error_stays_click_text(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["audit", "verify", str(tmp_path)])
    assert result.exit_code == 2 and "Usage:" in result.output


@pytest.mark.parametrize("line", [
    b"[" * 100_000 + b"]" * 100_000,                  # nesting deeper than Python's stack
    b'{"seq": NaN, "hash": "x"}',                     # not JSON at all
    b'{"seq": 1, "prev": Infinity}',
])
def test_audit_verify_names_a_hostile_line_instead_of_a_traceback(tmp_path: Path,
                                                                  line: bytes) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(line + b"\n")
    result = CliRunner().invoke(main, ["audit", "verify", str(log), "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["reason"] == "not_json" and doc["bad_line"] == 1


@pytest.mark.parametrize("anchors", ["fifo", "/dev/zero"])
def test_provenance_verify_refuses_non_regular_trust_anchors_without_blocking(
        tmp_path: Path, anchors: str) -> None:
    pytest.importorskip("c2pa")
    os.mkfifo(tmp_path / "fifo")
    media = tmp_path / "x.jpg"
    media.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    path = str(tmp_path / anchors) if anchors == "fifo" else anchors
    result = CliRunner().invoke(main, ["provenance", "verify", str(media), "--json",
                                       "--trust-anchors", path])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["reason"] == "unreadable"


@pytest.mark.parametrize("option", [["--organization", "x" * 200], ["--appliance", ""]])
def test_provenance_init_names_an_unusable_name_and_writes_nothing(tmp_path: Path,
                                                                   option: list[str]) -> None:
    pytest.importorskip("cryptography")
    out = tmp_path / "pki"
    result = CliRunner().invoke(main, ["provenance", "init", "--out", str(out), "--json", *option])
    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout)["reason"] == "provenance_init_failed"
    assert not out.exists() or not any(out.rglob("*"))


# -- configs and job manifests: the types their consumers take -------------------------------------
@pytest.mark.parametrize("doc", [
    {"version": 1, "source": "s.png", "target": "t.png", "options": {"blend_ratio": float("nan")}},
    {"version": 1, "source": "s.png", "target": "t.png", "options": {"blend_ratio": float("inf")}},
    {"version": 1, "source": "s.png", "target": "t.png", "options": {"detect_every": 2.0}},
    {"version": 1, "source": "s.png", "target": "t.png", "options": {"trim_frame_start": 10 ** 30}},
    {"version": 1, "source": "s.png", "target": "t.png", "options": {"detect_every": True}},
])
def test_job_schema_refuses_nan_floats_for_integers_and_out_of_range_integers(doc: dict) -> None:
    from sealfuse.appliance.watch.config import MANIFEST_SCHEMA, validate

    assert validate(doc, MANIFEST_SCHEMA)
    assert not validate({"version": 1, "source": "s.png", "target": "t.png", "options": {"detect_every": 2}},
                        MANIFEST_SCHEMA)


@pytest.mark.parametrize("raw", [
    b'{"version": 1, "source": "s.png", "target": "t.png", "options": {"blend_ratio": NaN}}',
    b'{"version": 1, "target": "a.png", "target": "b.png"}',
])
def test_a_manifest_with_nan_or_a_repeated_key_is_invalid_json(tmp_path: Path, raw: bytes) -> None:
    from sealfuse.appliance.watch import errors
    from sealfuse.appliance.watch.admission import Admission
    from sealfuse.appliance.watch.config import WatchConfig

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "j.job.json").write_bytes(raw)
    admission = Admission(WatchConfig(), inbox, ((".png",), (".mp4",)))
    with pytest.raises(errors.InvalidJsonError):
        admission.read_manifest(inbox / "j.job.json")


@pytest.mark.parametrize("text", ["[watch]\nconcurrency = 2.0\n", "[watch]\nconcurrency = true\n",
                                  "[watch]\njob_timeout_seconds = nan\n"])
def test_watch_config_wrong_number_types_are_config_errors(tmp_path: Path, text: str) -> None:
    from sealfuse.appliance.watch.config import WatchConfigError, load_config

    cfg = tmp_path / "watch.toml"
    cfg.write_text(text)
    with pytest.raises(WatchConfigError):
        load_config(cfg)


@pytest.mark.parametrize("which", ["watch", "console"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "dir"])
def test_a_config_that_is_not_a_regular_file_is_refused_without_reading(
        tmp_path: Path, which: str, kind: str) -> None:
    if kind == "fifo":
        path = tmp_path / "cfg.toml"
        os.mkfifo(path)
    elif kind == "dir":
        path = tmp_path / "cfg.toml"
        path.mkdir()
    else:
        path = Path(kind)
    if which == "watch":
        from sealfuse.appliance.watch.config import WatchConfigError as error
        from sealfuse.appliance.watch.config import load_config
    else:
        from sealfuse.appliance.console.config import load_config
        from sealfuse.appliance.console.errors import ConfigError as error
    with pytest.raises(error, match="not a regular file"):
        load_config(path)


def test_console_config_nan_number_is_refused(tmp_path: Path) -> None:
    from sealfuse.appliance.console.config import load_config
    from sealfuse.appliance.console.errors import ConfigError

    cfg = tmp_path / "console.toml"
    cfg.write_text("[console]\nretention_hours = nan\n")
    with pytest.raises(ConfigError):
        load_config(cfg)


# -- console accounts ------------------------------------------------------------------------------
@pytest.mark.parametrize(("password", "email", "code"), [
    (b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\n", None, 5),   # not UTF-8
    (b"correct\x00horse1\n", None, 5),                                 # a control character
    (b"x" * 100_000 + b"\n", None, 5),                                 # far too long
    (b"correcthorse1\n", "a@b.example\nBcc: all@b.example", 2),        # a header injection
    (b"correcthorse1\n", "not an address", 2),
])
def test_users_add_refuses_unusable_passwords_and_addresses(tmp_path: Path, password: bytes,
                                                            email: str | None, code: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    args = ["users", "add", "bob", "--role", "submitter", "--config", str(tmp_path / "none.toml"),
            "--state-dir", str(state), "--json"]
    if email is not None:
        args += ["--email", email]
    result = CliRunner().invoke(main, args, input=password)
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["ok"] is False
    listed = CliRunner().invoke(main, ["users", "list", "--config", str(tmp_path / "none.toml"),
                                       "--state-dir", str(state), "--json"])
    assert "bob" not in listed.stdout


# -- swap: options, inputs and outputs -------------------------------------------------------------
@pytest.mark.parametrize(("option", "value"), [
    ("--max-memory", "nan"), ("--max-memory", "inf"), ("--face-detector-score", "nan"),
    ("--reference-face-distance", "nan"), ("--blend-ratio", "nan"),
])
def test_swap_refuses_nan_and_infinite_numbers_as_bad_options(tmp_path: Path, option: str,
                                                               value: str) -> None:
    result = CliRunner().invoke(main, ["swap", "--source", "a.jpg", "--target", "b.jpg", "--output",
                                       str(tmp_path / "o.jpg"), option, value, "--json"])
    assert result.exit_code == 2, result.output
    assert "finite" in json.loads(result.stdout)["message"] or value == "nan"


@pytest.mark.parametrize("option", ["--ready-timeout", "--settle"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_install_refuses_nan_infinite_or_negative_waits(tmp_path: Path, option: str, value: str) -> None:
    result = CliRunner().invoke(main, ["install", str(tmp_path / "x.bundle"), "--root", str(tmp_path),
                                       option, value])
    assert result.exit_code == 2 and option in result.output, result.output


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_the_face_cache_key_never_reads_a_non_regular_source(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("numpy")
    from sealfuse.engine.models import _digest

    path = tmp_path / "s.jpg"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path(kind)
    assert _digest(path).startswith("unreadable:")  # returns at once; read_image names the file


def test_swap_output_never_replaces_an_input_and_long_names_are_output_errors(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    from sealfuse.engine.errors import OutputError
    from sealfuse.engine.imageio import check_output_path

    target = tmp_path / "t.jpg"
    target.write_bytes(b"x")
    (tmp_path / "alias.jpg").symlink_to(target)
    for out in (target, tmp_path / "alias.jpg"):
        with pytest.raises(OutputError, match="is the input"):
            check_output_path(out, inputs=[tmp_path / "s.jpg", target])
    with pytest.raises(OutputError, match="cannot be written"):
        check_output_path(tmp_path / ("o" * 300 + ".jpg"))
    check_output_path(tmp_path / "o.jpg", inputs=[target, None])


# -- bundle build / sign, verify's options ---------------------------------------------------------
@pytest.mark.parametrize(("option", "value"), [
    ("--product", "../escaped"), ("--product", "a/b"), ("--python-version", "3.11/../../x"),
    ("--platform", "../../x"), ("--expires-days", "0"), ("--expires-days", "-5"),
    ("--expires-days", "99999999999"),
])
def test_bundle_build_refuses_names_that_leave_out_dir_and_impossible_lifetimes(
        tmp_path: Path, option: str, value: str) -> None:
    out = tmp_path / "out" / "deep"
    out.mkdir(parents=True)
    result = CliRunner().invoke(main, ["bundle", "build", "--version", "1.0", "--out-dir", str(out),
                                       "--units-dir", str(tmp_path), "--hardening-dir", str(tmp_path),
                                       option, value, "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["reason"] == "usage_error"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_verify_refuses_a_clock_skew_beyond_a_year(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "b"), "--trust", str(tmp_path / "t"),
                                       "--clock-skew", "99999999999999", "--json"])
    assert result.exit_code == 2 and "--clock-skew" in json.loads(result.stdout)["message"]


@pytest.mark.parametrize("doc", [b'{"a": 1, "a": 2}', b'{"x": NaN}', b"[" * 100_000 + b"]" * 100_000])
def test_bundle_sign_refuses_a_sigstore_bundle_verify_would_not_read(tmp_path: Path,
                                                                    doc: bytes) -> None:
    from tests.bundle.factory import BundleFactory

    factory = BundleFactory(tmp_path / "f", n_keys=1, threshold=1)
    bundle = factory.build(signers=(0,))
    before = bundle.read_bytes()
    sig = tmp_path / "sigstore.json"
    sig.write_bytes(doc)
    result = CliRunner().invoke(main, ["bundle", "sign", "--sigstore", str(sig), str(bundle)])
    assert result.exit_code == 85, result.output
    assert bundle.read_bytes() == before


# -- the installer's own state: never a traceback, never a blocked read -----------------------------
@pytest.mark.parametrize("content", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"format": 1, "current": "2", "current": "1", "order": [], "history": []}',
    b'{"format": NaN, "current": "2", "order": [], "history": []}',
    b"\xff\xfe",
    "fifo",
    "symlink",
])
def test_an_unusable_install_record_is_a_state_error(tmp_path: Path, content: bytes | str) -> None:
    from sealfuse.appliance.errors import StateError
    from sealfuse.appliance.release import InstallRecord, Layout

    layout = Layout(tmp_path)
    layout.record.parent.mkdir(parents=True)
    if content == "fifo":
        os.mkfifo(layout.record)
    elif content == "symlink":
        (tmp_path / "elsewhere.json").write_text('{"format": 1, "current": "9"}')
        layout.record.symlink_to(tmp_path / "elsewhere.json")
    else:
        assert isinstance(content, bytes)
        layout.record.write_bytes(content)
    with pytest.raises(StateError):
        InstallRecord.load(layout)


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_doctor_never_reads_a_non_regular_release_file_or_model(tmp_path: Path, kind: str) -> None:
    from sealfuse.appliance import doctor
    from sealfuse.appliance.fsutil import sha256_file
    from sealfuse.appliance.release import Layout

    layout = Layout(tmp_path)
    release = layout.release("2")
    release.mkdir(parents=True)
    model = tmp_path / "model.onnx"
    if kind == "fifo":
        os.mkfifo(release / "release.json")
        os.mkfifo(model)
    else:
        (release / "release.json").symlink_to("/dev/zero")
        model.symlink_to("/dev/zero")
    assert doctor._release_info(layout, "2") == {}
    with pytest.raises(OSError):
        sha256_file(model)


# -- models and run-job: the lock and the job request ----------------------------------------------
@pytest.mark.parametrize("lock", [b"[" * 100_000 + b"]" * 100_000, b'{"models": [], "models": []}',
                                  b'{"models": [], "licence_policy": NaN}'])
def test_models_list_names_an_unusable_lock(tmp_path: Path, lock: bytes) -> None:
    pytest.importorskip("numpy")
    (tmp_path / "models.lock.json").write_bytes(lock)
    result = CliRunner().invoke(main, ["models", "list", "--models-dir", str(tmp_path), "--json"])
    assert result.exit_code == 5, result.output
    assert json.loads(result.stdout)["reason"] == "model_error"


def test_models_pin_of_an_unknown_model_is_exit_5(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    result = CliRunner().invoke(main, ["models", "pin", "--models-dir", str(tmp_path), "nosuch"])
    assert result.exit_code == 5 and "unknown model" in result.output


@pytest.mark.parametrize("kind", ["fifo", "deep", "dup"])
def test_run_job_refuses_an_unusable_request_without_blocking(tmp_path: Path, kind: str) -> None:
    spool = tmp_path / "spool"
    for d in ("inbox", "work/j1", "outbox", "failed", "status", "slurm/j1"):
        (spool / d).mkdir(parents=True)
    (spool / "work/j1/claim.json").write_text('{"job_id": "j1"}')
    request = spool / "slurm/j1/request.json"
    if kind == "fifo":
        os.mkfifo(request)
    elif kind == "deep":
        request.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    else:
        request.write_bytes(b'{"version": 1, "job_id": "j1", "job_id": "j2"}')
    result = CliRunner().invoke(main, ["run-job", "--spool", str(spool), "--job-id", "j1"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_watch_with_a_planted_audit_log_exits_3_without_a_traceback(tmp_path: Path, kind: str) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    audit = tmp_path / "audit.jsonl"
    if kind == "symlink":
        audit.symlink_to(tmp_path / "elsewhere.jsonl")
    else:
        os.mkfifo(audit)
    result = CliRunner().invoke(main, ["watch", "--spool", str(spool), "--audit-log", str(audit),
                                       "--once", "--models-dir", str(tmp_path / "none")])
    assert result.exit_code == 3, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "elsewhere.jsonl").exists()


def test_status_last_job_skips_hostile_lines_the_service_user_wrote(tmp_path: Path) -> None:
    from sealfuse.appliance.doctor import last_job

    log = tmp_path / "audit.jsonl"
    log.write_bytes(b'{"event": "done", "job": "j1", "time": "t"}\n' + b"[1]\n" + b'"x"\n'
                    + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    assert last_job(log) == {"event": "done", "job": "j1", "time": "t"}


@pytest.mark.parametrize("tail", [b'{"seq": 1e400}', b"[" * 100_000 + b"]" * 100_000, b'{"seq": NaN}'])
def test_appending_after_a_hostile_last_audit_line_is_an_audit_error(tmp_path: Path,
                                                                     tail: bytes) -> None:
    from sealfuse.appliance.audit import AuditError, AuditLog

    log = tmp_path / "audit.jsonl"
    log.write_bytes(tail + b"\n")
    with pytest.raises(AuditError):
        AuditLog(log).append("install", version="1")
    assert log.read_bytes() == tail + b"\n"


@pytest.mark.parametrize("kind", ["fifo", "deep", "repeated", "symlink"])
def test_users_cli_refuses_a_hostile_user_store_with_exit_3(tmp_path: Path, kind: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    store = state / "users.json"
    if kind == "fifo":
        os.mkfifo(store)
    elif kind == "deep":
        store.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    elif kind == "repeated":
        store.write_text('{"users": {"a": {"role": "admin"}, "a": {"role": "submitter"}}}')
    else:
        (tmp_path / "other.json").write_text('{"users": {"root": {"role": "admin"}}}')
        store.symlink_to(tmp_path / "other.json")
    result = CliRunner().invoke(main, ["users", "list", "--config", str(tmp_path / "none.toml"),
                                       "--state-dir", str(state), "--json"])
    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout)["reason"] == "store_unusable"


@pytest.mark.parametrize("listen", ["nonsense", ":8080", "127.0.0.1:80x"])
def test_console_listen_override_is_checked_like_the_config(tmp_path: Path, listen: str) -> None:
    from sealfuse.appliance.console.config import load_config
    from sealfuse.appliance.console.errors import ConfigError

    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_config(tmp_path / "none.toml", listen=listen)
    assert load_config(tmp_path / "none.toml", listen="127.0.0.1:0").host_port == ("127.0.0.1", 0)


@pytest.mark.parametrize("which", ["key", "chain"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_provenance_key_or_chain_that_is_not_a_regular_file_is_refused(tmp_path: Path, which: str,
                                                                         kind: str) -> None:
    pytest.importorskip("numpy")
    from sealfuse.engine.provenance import Sealer, SigningKeyError

    other = tmp_path / "other.pem"
    other.write_text("not used\n")
    path = tmp_path / "p.pem"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path(kind)
    key, chain = (path, other) if which == "key" else (other, path)
    with pytest.raises(SigningKeyError, match="not a regular file"):
        Sealer.from_files(key, chain)


def test_provenance_pem_inputs_that_are_fifos_are_refused_without_blocking(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from sealfuse.bundle.errors import BuildError
    from sealfuse.bundle.provenance import StudioCAError, appliance_files, load_studio_ca

    os.mkfifo(tmp_path / "chain.pem")
    os.mkfifo(tmp_path / "signing.key")
    with pytest.raises(BuildError, match="FIFO"):
        appliance_files(tmp_path)
    with pytest.raises(StudioCAError, match="FIFO"):
        load_studio_ca(tmp_path / "chain.pem", tmp_path / "signing.key")


def test_installer_reads_of_its_own_files_never_block_on_a_fifo(tmp_path: Path) -> None:
    from sealfuse.appliance.clock import release_created
    from sealfuse.appliance.release import Layout
    from sealfuse.appliance.units import CONSOLE_CONFIG, console_enabled

    layout = Layout(tmp_path)
    layout.release("1").mkdir(parents=True)
    os.mkfifo(layout.release("1") / "manifest.json")
    assert release_created(layout, "1") is None
    (tmp_path / CONSOLE_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(tmp_path / CONSOLE_CONFIG)
    assert console_enabled(layout) is False
