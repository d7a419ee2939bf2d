"""The console's security cases: no session, another user's job, CSRF, hostile upload names,
oversized and mistyped uploads, brute force, roles. Each refusal is specific and changes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.console.consolelib import PASSWORD, ConsoleEnv, multipart
from tests.watch.watchlib import WatchEnv


@pytest.fixture
def console_only(tmp_path: Path, hanks_png: Path):
    """A console on a spool without a daemon (the refusals happen before the daemon matters)."""
    watch = WatchEnv(tmp_path, hanks_png)
    env = ConsoleEnv(tmp_path, watch.spool, extra_config="[auth]\nmax_failures = 3\nlockout_seconds = 600\n")
    for name, role in (("alice", "submitter"), ("bob", "submitter"), ("audrey", "auditor"), ("adam", "admin")):
        env.add_user(name, role)
    env.start()
    yield env
    env.stop()


def _files(hanks: Path, target_name: str = "scene.png", target: bytes | None = None, ctype: str = "image/png"):
    return [("source", ("hanks.png", hanks.read_bytes(), "image/png")),
            ("target", (target_name, target if target is not None else hanks.read_bytes(), ctype))]


def _untouched(env: ConsoleEnv, before: list[str]) -> None:
    assert env.inbox_entries() == before, "a refused request left something in the inbox"
    assert not list((env.state / "jobs").glob("*.json")), "a refused request left a job record"


def test_no_session_is_refused_everywhere_but_healthz(console_only: ConsoleEnv) -> None:
    env = console_only
    assert env.request("GET", "/healthz").status == 200
    for method, path in [("GET", "/api/v1/jobs"), ("GET", "/api/v1/jobs/web-x"), ("GET", "/api/v1/me"),
                         ("GET", "/api/v1/audit"), ("DELETE", "/api/v1/jobs/web-x/media"),
                         ("GET", "/api/v1/jobs/web-x/events")]:
        r = env.request(method, path)
        assert r.status == 401 and r.json()["reason"] == "not_authenticated", (path, r.text)
    assert env.request("GET", "/api/v1/jobs", token="made-up").status == 401
    page = env.request("GET", "/jobs")
    assert page.status == 303 and page.headers["location"] == "/login"
    assert env.request("GET", "/api/v1/openapi.json").json()["openapi"].startswith("3.")


def test_another_users_job_is_not_found(console_only: ConsoleEnv, hanks_png: Path) -> None:
    env = console_only
    alice = env.login("alice")
    r = env.submit(alice, _files(hanks_png))
    assert r.status == 201, r.text
    ref = r.json()["ref"]
    bob = env.login("bob")
    for method, path in [("GET", f"/api/v1/jobs/{ref}"), ("GET", f"/api/v1/jobs/{ref}/result"),
                         ("DELETE", f"/api/v1/jobs/{ref}/media"), ("GET", f"/api/v1/jobs/{ref}/events")]:
        r = env.request(method, path, token=bob)
        assert r.status == 404 and r.json()["reason"] == "not_found", (path, r.text)
    assert (env.spool / "inbox" / f"{ref}.job.json").exists()  # bob's delete removed nothing
    # a ref that tries to leave the records folder is just not found
    assert env.request("GET", "/api/v1/jobs/..%2F..%2Fusers", token=alice).status == 404


def test_csrf_missing_or_wrong_is_refused_and_stores_nothing(console_only: ConsoleEnv, hanks_png: Path) -> None:
    env = console_only
    page = env.request("GET", "/login")
    pre = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    cookie = page.headers["set-cookie"].split(";")[0]
    # sign in through the form (the pre-login token guards it)
    bad = env.request("POST", "/login", b"csrf=wrong&username=alice&password=" + PASSWORD.replace(" ", "+").encode(),
                      {"Content-Type": "application/x-www-form-urlencoded"}, cookie=cookie)
    assert bad.status == 403
    ok = env.request("POST", "/login", f"csrf={pre}&username=alice&password={PASSWORD}".replace(" ", "+").encode(),
                     {"Content-Type": "application/x-www-form-urlencoded"}, cookie=cookie)
    assert ok.status == 303, ok.text
    set_cookie = next(c for c in ok.headers["set-cookie"].split("\n") if c.startswith("sealfuse_session="))
    assert "HttpOnly" in set_cookie and "samesite=strict" in set_cookie.lower()
    assert "Secure" not in set_cookie  # plain HTTP on 127.0.0.1 (Secure when TLS or secure_cookies)
    session = set_cookie.split(";")[0]
    before = env.inbox_entries()
    for fields in (_files(hanks_png), [("csrf", "forged"), *_files(hanks_png)]):
        body, ctype = multipart(fields)
        r = env.request("POST", "/submit", body, {"Content-Type": ctype}, cookie=session)
        assert r.status == 403 and "CSRF" in r.text
        r = env.request("POST", "/api/v1/jobs", body, {"Content-Type": ctype}, cookie=session)
        assert r.status == 403 and r.json()["reason"] == "csrf_missing_or_wrong"
    _untouched(env, before)
    # the API with the cookie needs the X-CSRF-Token header; DELETE too
    csrf = env.request("GET", "/api/v1/me", cookie=session).json()["csrf"]
    body, ctype = multipart(_files(hanks_png))
    r = env.request("POST", "/api/v1/jobs", body, {"Content-Type": ctype, "X-CSRF-Token": csrf}, cookie=session)
    assert r.status == 201, r.text
    ref = r.json()["ref"]
    assert env.request("DELETE", f"/api/v1/jobs/{ref}/media", cookie=session).status == 403
    assert (env.spool / "inbox" / f"{ref}.job.json").exists()
    # logout without the token is refused too
    assert env.request("POST", "/logout", b"", {"Content-Type": "application/x-www-form-urlencoded"},
                       cookie=session).status == 403


@pytest.mark.parametrize("name", ["../../etc/cron.d/x.png", "..\\..\\evil.png", "/etc/passwd.png", "a/../../b.png",
                                  ".hidden..png"])
def test_path_traversal_in_upload_names_is_refused(console_only: ConsoleEnv, hanks_png: Path, name: str) -> None:
    env = console_only
    token = env.login("alice")
    before = env.inbox_entries()
    r = env.submit(token, _files(hanks_png, target_name=name))
    assert r.status == 400 and r.json()["reason"] == "bad_upload_name", r.text
    _untouched(env, before)


def test_oversized_upload_is_refused_midway(console_only: ConsoleEnv, hanks_png: Path) -> None:
    env = console_only  # max_upload_mb = 4
    token = env.login("alice")
    before = env.inbox_entries()
    big = hanks_png.read_bytes() + b"\0" * (5 * 1024 * 1024)
    r = env.submit(token, _files(hanks_png, target=big))
    assert r.status == 413 and r.json()["reason"] == "upload_too_large", r.text
    _untouched(env, before)


@pytest.mark.parametrize("name,data,reason", [
    ("scene.exe", b"MZ\x90\x00", "unsupported_type"),
    ("scene.png", b"GIF89a" + b"\0" * 64, "bad_media"),  # content does not match the extension
    ("scene.mp4", b"\x00\x00\x00\x18ftypisom" + b"\0" * 64, "bad_media"),  # a truncated container
])
def test_wrong_content_type_is_refused(console_only: ConsoleEnv, hanks_png: Path, name: str, data: bytes,
                                       reason: str) -> None:
    env = console_only
    token = env.login("alice")
    before = env.inbox_entries()
    r = env.submit(token, _files(hanks_png, target_name=name, target=data))
    assert r.status in (415, 422) and r.json()["reason"] == reason, r.text
    _untouched(env, before)
    # not multipart at all
    r = env.request("POST", "/api/v1/jobs", b'{"source": "x"}', {"Content-Type": "application/json"}, token=token)
    assert r.status == 415 and r.json()["reason"] == "unsupported_type"


def test_models_not_on_this_appliance_are_refused(console_only: ConsoleEnv, hanks_png: Path) -> None:
    env = console_only
    token = env.login("alice")
    before = env.inbox_entries()
    r = env.submit(token, _files(hanks_png), options={"face_swapper_model": "inswapper_128"})
    assert r.status == 422 and "not installed" in r.json()["message"]
    r = env.submit(token, _files(hanks_png), options={"providers": ["cuda"]})
    assert r.status == 422 and r.json()["reason"] == "bad_options"
    _untouched(env, before)


def test_brute_force_is_rate_limited_and_audited(console_only: ConsoleEnv) -> None:
    env = console_only  # max_failures = 3
    def attempt(pw: str) -> int:
        return env.request("POST", "/api/v1/login", json.dumps({"username": "alice", "password": pw}).encode(),
                           {"Content-Type": "application/json"}).status
    assert [attempt(f"guess-{i}-xxxxx") for i in range(3)] == [401, 401, 401]
    assert attempt("guess-4-xxxxx") == 429
    assert attempt(PASSWORD) == 429  # even the right password waits out the lockout
    fails = [e for e in env.audit() if e["event"] == "console_login_failed"]
    assert len(fails) == 5 and {e["user"] for e in fails} == {"alice"}
    assert [e["why"] for e in fails][-2:] == ["rate_limited", "rate_limited"]
    assert not [e for e in env.audit() if e["event"] == "console_login"]


def test_roles(console_only: ConsoleEnv, hanks_png: Path) -> None:
    env = console_only
    auditor, admin, alice = env.login("audrey"), env.login("adam"), env.login("alice")
    assert env.submit(auditor, _files(hanks_png)).status == 403
    assert env.request("GET", "/api/v1/audit", token=alice).status == 403
    assert env.request("GET", "/api/v1/users", token=alice).status == 403
    assert env.request("GET", "/api/v1/users", token=auditor).status == 403
    audit = env.request("GET", "/api/v1/audit", token=auditor).json()
    assert audit["verify"]["ok"] is True and audit["entries"]
    r = env.request("POST", "/api/v1/users", json.dumps({"action": "disable", "name": "alice"}).encode(),
                    {"Content-Type": "application/json"}, token=admin)
    assert r.status == 200 and r.json()["user"]["disabled"] is True
    assert env.request("GET", "/api/v1/jobs", token=alice).status == 401  # the session ends with the account
    assert env.request("POST", "/api/v1/login", json.dumps({"username": "alice", "password": PASSWORD}).encode(),
                       {"Content-Type": "application/json"}).status == 401
    assert ("console_user_disabled", "adam") in [(e["event"], e.get("user")) for e in env.audit()]


def test_hostile_json_bodies_and_query_values_are_400_not_500(console_env: ConsoleEnv) -> None:
    env = console_env
    h = {"Content-Type": "application/json"}
    deep = b"[" * 100_000 + b"]" * 100_000
    assert env.request("POST", "/api/v1/login", deep, h).status == 400
    twice = b'{"username": "adam", "username": "alice", "password": "x"}'
    assert env.request("POST", "/api/v1/login", twice, h).status == 400
    token = env.login("adam")
    r = env.request("GET", "/api/v1/audit?limit=nan", token=token)
    assert r.status == 400 and r.json()["reason"] == "bad_request"
    dup = (b'{"action": "add", "name": "mallory", "role": "submitter", "password": "' +
           PASSWORD.encode() + b'", "name": "carol"}')
    r = env.request("POST", "/api/v1/users", dup, h, token=token)
    assert r.status == 400, r.text
    names = [u["name"] for u in env.request("GET", "/api/v1/users", token=token).json()["users"]]
    assert "mallory" not in names and "carol" not in names
