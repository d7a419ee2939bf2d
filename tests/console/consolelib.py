"""Helpers for the console tests: a real `sealfuse console` process on 127.0.0.1 next to a real
watch daemon (tests/watch/watchlib.py) on a temporary spool, and a small HTTP client."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Resp:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def multipart(fields: list[tuple[str, str | tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    """Encode fields (name, text) or (name, (filename, data, content type)), in order."""
    boundary = "sealfuse" + uuid.uuid4().hex
    out = bytearray()
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        if isinstance(value, tuple):
            fname, data, ctype = value
            out += (f'Content-Disposition: form-data; name="{name}"; filename="{fname}"\r\n'
                    f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


class ConsoleEnv:
    """A console process serving `spool`, with its own state dir and config."""

    def __init__(self, root: Path, spool: Path, extra_config: str = "") -> None:
        self.root = root
        self.spool = spool
        self.state = root / "console-state"
        self.config = root / "console.toml"
        self.port = free_port()
        self.config.write_text(
            "[console]\n"
            f'listen = "127.0.0.1:{self.port}"\n'
            f'spool = "{spool}"\nstate_dir = "{self.state}"\nmodels_dir = "{root / "models"}"\n'
            "max_upload_mb = 4\n" + extra_config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "console.log"

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sealfuse", *args, "--config", str(self.config)],
                              input=stdin, capture_output=True, text=True, cwd=REPO, timeout=60)

    def add_user(self, name: str, role: str, password: str = PASSWORD) -> None:
        from sealfuse.appliance.console.users import UserStore

        UserStore(self.state).add(name, role, password)

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "sealfuse", "console", "--config", str(self.config)],
                                     cwd=REPO, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"console exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                if self.request("GET", "/healthz").status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("console did not answer /healthz within 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                token: str | None = None, cookie: str | None = None, timeout: float = 30) -> Resp:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        if cookie:
            h["Cookie"] = cookie
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            headers = {k.lower(): v for k, v in r.getheaders()}
            headers["set-cookie"] = "\n".join(r.msg.get_all("set-cookie") or [])
            return Resp(r.status, headers, r.read())
        finally:
            conn.close()

    def login(self, name: str, password: str = PASSWORD) -> str:
        r = self.request("POST", "/api/v1/login", json.dumps({"username": name, "password": password}).encode(),
                         {"Content-Type": "application/json"})
        assert r.status == 200, r.text
        return str(r.json()["token"])

    def submit(self, token: str, files: list[tuple[str, tuple[str, bytes, str]]], options: dict[str, Any] | None = None,
               label: str | None = None) -> Resp:
        fields: list[tuple[str, Any]] = []
        if label:
            fields.append(("label", label))
        if options is not None:
            fields.append(("options", json.dumps(options)))
        body, ctype = multipart(fields + list(files))
        return self.request("POST", "/api/v1/jobs", body, {"Content-Type": ctype}, token=token)

    def audit(self) -> list[dict[str, Any]]:
        path = self.state / "audit.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def inbox_entries(self) -> list[str]:
        return sorted(os.listdir(self.spool / "inbox"))
