"""Job-end notifications leave from the console (the watch service has no network): a JSON webhook
to a receiver on 127.0.0.1 that fails once (the console retries), mail to an SMTP receiver on
127.0.0.1; and the retention purge removes a finished job's media, audited."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.console.consolelib import ConsoleEnv
from tests.watch.watchlib import WatchEnv, png_variant, wait_for


class Webhook:
    """Answers 500 to the first POST, 200 to the rest; keeps every body."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.attempts = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                outer.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.attempts == 1:
                    self.send_response(500)
                else:
                    outer.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/sealfuse"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Smtp(socketserver.ThreadingTCPServer):
    """The SMTP of a relay, just enough for smtplib: keeps each message's bytes."""

    allow_reuse_address = True

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        outer = self

        class H(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 relay ESMTP\r\n")
                while line := self.rfile.readline():
                    cmd = line.strip().upper()
                    if cmd.startswith((b"EHLO", b"HELO")):
                        self.wfile.write(b"250 relay\r\n")
                    elif cmd == b"DATA":
                        self.wfile.write(b"354 go ahead\r\n")
                        data = b""
                        while (part := self.rfile.readline()) not in (b".\r\n", b""):
                            data += part
                        outer.messages.append(data)
                        self.wfile.write(b"250 queued\r\n")
                    elif cmd == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        super().__init__(("127.0.0.1", 0), H)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def receivers() -> Iterator[tuple[Webhook, Smtp]]:
    hook, smtp = Webhook(), Smtp()
    yield hook, smtp
    hook.server.shutdown()
    smtp.shutdown()


def test_job_end_is_notified_by_webhook_and_mail_with_retry_then_purged(
        tmp_path: Path, hanks_png: Path, t1_jpg: Path, receivers: tuple[Webhook, Smtp]) -> None:
    hook, smtp = receivers
    watch = WatchEnv(tmp_path, hanks_png)
    env = ConsoleEnv(tmp_path, watch.spool, extra_config=(
        "retention_hours = 0.001\n"  # 3.6 s: the purge runs while the test watches
        "[notify]\n"
        f'webhooks = ["{hook.url}"]\nbackoff_seconds = 0.2\nmax_attempts = 4\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp.server_address[1]}\n'
        'mail_from = "sealfuse@studio.example"\nmail_to = ["desk@studio.example"]\n'
        'console_url = "https://console.studio.example"\n'))
    env.add_user("alice", "submitter")
    try:
        env.start()
        watch.start()
        token = env.login("alice")
        target = png_variant(t1_jpg, tmp_path / "scene.png", 11)
        r = env.submit(token, [("source", ("hanks.png", hanks_png.read_bytes(), "image/png")),
                               ("target", ("scene.png", target.read_bytes(), "image/png"))], label="Scene 11")
        assert r.status == 201, r.text
        ref = r.json()["ref"]
        wait_for(lambda: hook.bodies, 180, "the webhook")
        body = hook.bodies[0]
        assert hook.attempts >= 2  # the first delivery got a 500 and was retried
        assert body["sealfuse"]["ref"] == ref and body["sealfuse"]["state"] == "done"
        assert body["sealfuse"]["user"] == "alice"
        assert body["text"].startswith("sealfuse: job Scene 11 for alice is done.")
        assert body["sealfuse"]["url"] == f"https://console.studio.example/jobs/{ref}"
        mail = message_from_bytes(wait_for(lambda: smtp.messages, 30, "the mail")[0])
        assert mail["To"] == "desk@studio.example" and ref in mail["Subject"]

        job = env.request("GET", f"/api/v1/jobs/{ref}", token=token).json()
        out = env.spool / "outbox" / job["job_id"] / job["output"]
        purge = wait_for(lambda: [e for e in env.audit() if e["event"] == "console_purge"], 60,
                         "the retention purge")
        assert purge[0]["ref"] == ref and purge[0]["media_deletion_requested"] is True
        wait_for(lambda: [e for e in watch.events("media_deleted") if e["job"] == job["job_id"]], 30,
                 "the daemon to delete the purged media")
        assert not out.exists() and (out.parent / "result.json").exists()  # the record stays
        deleted = json.loads((out.parent / "result.json").read_text())["media_deleted"]
        assert deleted["by"] == "console:(retention)"
        assert env.request("GET", f"/api/v1/jobs/{ref}/result", token=token).status == 410
    finally:
        env.stop()
        watch.stop_all()
