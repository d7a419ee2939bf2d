"""`sealfuse users` (store, exit codes, audit), the trusted IAM header, TLS with an operator
certificate, and targets picked from the read-only share."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.console.consolelib import PASSWORD, REPO, ConsoleEnv, multipart
from tests.watch.watchlib import WatchEnv


def users(state: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sealfuse", "users", *args, "--state-dir", str(state),
                           "--config", str(state / "none.toml"), "--json"],
                          input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60)


def test_users_cli_stores_argon2id_hashes_atomically_and_audits(tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = users(state, "add", "alice", "--role", "submitter", stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    doc = json.loads((state / "users.json").read_text())
    assert doc["users"]["alice"]["hash"].startswith("$argon2id$")
    assert PASSWORD not in (state / "users.json").read_text()
    assert stat.S_IMODE(os.stat(state / "users.json").st_mode) == 0o640
    assert not [p for p in state.iterdir() if p.name.startswith(".users.json")]  # no temp residue
    # exit codes: exists 4, short password 5, bad name 2, no such user 4
    assert users(state, "add", "alice", "--role", "admin", stdin=PASSWORD + "\n").returncode == 4
    short = users(state, "add", "bob", "--role", "admin", stdin="short\n")
    assert short.returncode == 5 and json.loads(short.stdout)["reason"] == "bad_password"
    assert users(state, "add", "Bad/Name", "--role", "admin", stdin=PASSWORD + "\n").returncode == 2
    assert users(state, "passwd", "nobody", stdin=PASSWORD + "\n").returncode == 4
    assert users(state, "passwd", "alice", stdin="another long password\n").returncode == 0
    assert users(state, "disable", "alice").returncode == 0
    listed = json.loads(users(state, "list").stdout)["users"]
    assert [(u["name"], u["role"], u["disabled"]) for u in listed] == [("alice", "submitter", True)]
    assert "hash" not in listed[0]
    events = [json.loads(x) for x in (state / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e["target"]) for e in events] == [
        ("console_user_added", "alice"), ("console_user_passwd", "alice"), ("console_user_disabled", "alice")]
    assert all(e["user"].startswith("cli:") for e in events)
    from sealfuse.appliance.console.users import UserStore

    store = UserStore(state)
    assert store.authenticate("alice", "another long password") is None  # disabled
    store.set_disabled("alice", False)
    assert store.authenticate("alice", "another long password") is not None
    assert store.authenticate("alice", PASSWORD) is None


@pytest.fixture
def spool(tmp_path: Path, hanks_png: Path) -> Path:
    return WatchEnv(tmp_path, hanks_png).spool


def test_trusted_header_only_from_the_configured_proxy(tmp_path: Path, spool: Path) -> None:
    for proxies, expect in ((["127.0.0.1/32"], 200), (["10.9.9.9"], 401)):
        env = ConsoleEnv(tmp_path, spool, extra_config=(
            f'[auth]\ntrusted_header = "X-Remote-User"\ntrusted_proxies = {json.dumps(proxies)}\n'))
        if not (env.state / "users.json").exists():
            env.add_user("alice", "submitter")
        env.start()
        try:
            r = env.request("GET", "/api/v1/me", headers={"X-Remote-User": "alice"})
            assert r.status == expect, r.text
            if expect == 200:
                assert r.json()["name"] == "alice"
                assert env.request("GET", "/api/v1/me", headers={"X-Remote-User": "mallory"}).status == 401
        finally:
            env.stop()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "console.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    c, k = tmp_path / "console.pem", tmp_path / "console.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def test_tls_with_an_operator_certificate_sets_secure_cookies(tmp_path: Path, spool: Path) -> None:
    cert, key = _self_signed(tmp_path)
    env = ConsoleEnv(tmp_path, spool, extra_config=f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    env.add_user("alice", "submitter")
    import subprocess as sp

    env.proc = sp.Popen([sys.executable, "-m", "sealfuse", "console", "--config", str(env.config)], cwd=REPO,
                        stdout=env.log.open("wb"), stderr=sp.STDOUT)
    ctx = ssl.create_default_context(cafile=str(cert))
    try:
        from tests.watch.watchlib import wait_for

        def get(path: str, method: str = "GET", body: bytes | None = None,
                headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
            conn = http.client.HTTPSConnection("127.0.0.1", env.port, context=ctx, timeout=10)
            conn.request(method, path, body=body, headers=headers or {})
            return conn.getresponse()

        def up() -> bool:
            try:
                return get("/healthz").status == 200
            except OSError:
                return False

        wait_for(up, 30, "the console over TLS")
        page = get("/login")
        assert page.getheader("Strict-Transport-Security")
        assert "Secure" in page.getheader("Set-Cookie")
        with pytest.raises(OSError):  # plain HTTP on the TLS port gets no answer it can read
            env.request("GET", "/healthz", timeout=5)
    finally:
        env.stop()


def test_target_from_the_read_only_share_and_no_escape(tmp_path: Path, spool: Path, hanks_png: Path) -> None:
    share = tmp_path / "share"
    (share / "reel").mkdir(parents=True)
    (share / "reel" / "shot.png").write_bytes(hanks_png.read_bytes())
    (share / "link.png").symlink_to(hanks_png)
    (tmp_path / "secret.png").write_bytes(hanks_png.read_bytes())
    env = ConsoleEnv(tmp_path, spool, extra_config=f'share = "{share}"\n')
    env.add_user("alice", "submitter")
    env.start()
    try:
        token = env.login("alice")
        assert env.request("GET", "/api/v1/options", token=token).json()["share"] == ["reel/shot.png"]
        src = ("source", ("hanks.png", hanks_png.read_bytes(), "image/png"))
        for bad in ("../secret.png", "/etc/passwd", "link.png", "reel/../../secret.png"):
            body, ctype = multipart([src, ("share_target", bad)])
            r = env.request("POST", "/api/v1/jobs", body, {"Content-Type": ctype}, token=token)
            assert r.status in (400, 404), (bad, r.text)
        assert not [n for n in os.listdir(spool / "inbox") if "web-" in n]
        body, ctype = multipart([src, ("share_target", "reel/shot.png")])
        r = env.request("POST", "/api/v1/jobs", body, {"Content-Type": ctype}, token=token)
        assert r.status == 201, r.text
        job = r.json()
        assert job["files"]["target"]["name"] == "shot.png"
        assert (spool / "inbox" / f"{job['ref']}-target.png").read_bytes() == hanks_png.read_bytes()
        assert (share / "reel" / "shot.png").exists()  # the share is only read
    finally:
        env.stop()
