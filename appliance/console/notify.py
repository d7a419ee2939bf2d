"""Job-end notifications from the console side (the watch service stays without network): a JSON
webhook to the studio's intranet URLs and optional mail through an SMTP relay, sent by one
background thread with retries and exponential backoff, so a slow receiver never blocks a request.
"""

from __future__ import annotations

import json
import logging
import queue
import smtplib
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from sealfuse.appliance.console.config import ConsoleConfig

log = logging.getLogger("sealfuse.console.notify")


def message_for(view: dict[str, Any], console_url: str | None) -> dict[str, Any]:
    """The webhook body: `text` (what Mattermost, Slack-compatible and Teams incoming webhooks
    show) plus the job's fields for receivers that read JSON."""
    state = view["state"]
    what = view.get("label") or view["files"].get("target", {}).get("name") or view["ref"]
    if state == "done":
        text = f"sealfuse: job {what} for {view['user']} is done."
    else:
        text = f"sealfuse: job {what} for {view['user']} failed: {view.get('reason_text') or view.get('reason')}"
    link = f"{console_url.rstrip('/')}/jobs/{view['ref']}" if console_url else None
    if link:
        text += f" {link}"
    return {"text": text, "sealfuse": {"ref": view["ref"], "job_id": view.get("job_id"), "state": state,
                                       "user": view["user"], "reason": view.get("reason"), "url": link}}


@dataclass
class _Item:
    kind: str  # "webhook" | "mail"
    target: str
    body: dict[str, Any]
    attempt: int = 0
    not_before: float = field(default_factory=time.monotonic)


class Notifier:
    """Queue of deliveries; `notify(view)` returns at once."""

    def __init__(self, cfg: ConsoleConfig, on_give_up: Any = None) -> None:
        self.cfg = cfg
        self.on_give_up = on_give_up
        self._q: queue.Queue[_Item | None] = queue.Queue()
        self._retry: list[_Item] = []
        self._thread: threading.Thread | None = None
        self.delivered = 0

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.webhooks or self.cfg.mail_to)

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sealfuse-notify", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def notify(self, view: dict[str, Any], email: str | None = None) -> None:
        if not self.enabled:
            return
        body = message_for(view, self.cfg.console_url)
        for url in self.cfg.webhooks:
            self._q.put(_Item("webhook", url, body))
        for addr in (*self.cfg.mail_to, *([email] if email and self.cfg.smtp_host else [])):
            self._q.put(_Item("mail", addr, body))

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            due = [i for i in self._retry if i.not_before <= now]
            self._retry = [i for i in self._retry if i.not_before > now]
            for item in due:
                self._attempt(item)
            wait = min((i.not_before for i in self._retry), default=now + 3600) - time.monotonic()
            try:
                item = self._q.get(timeout=max(0.05, wait))
            except queue.Empty:
                continue
            if item is None:
                return
            self._attempt(item)

    def _attempt(self, item: _Item) -> None:
        item.attempt += 1
        try:
            if item.kind == "webhook":
                self._post(item.target, item.body)
            else:
                self._mail(item.target, item.body)
            self.delivered += 1
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then reported
            if item.attempt >= self.cfg.notify_max_attempts:
                log.warning("notification to %s given up after %d attempts: %s", item.target, item.attempt, exc)
                if self.on_give_up:
                    self.on_give_up(item.kind, item.target, item.body, str(exc))
                return
            item.not_before = time.monotonic() + self.cfg.notify_backoff_seconds * 2 ** (item.attempt - 1)
            self._retry.append(item)

    def _post(self, url: str, body: dict[str, Any]) -> None:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "sealfuse-console"})
        # No proxy from the environment: the receivers are on the studio's intranet.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=self.cfg.notify_timeout_seconds) as resp:
            if resp.status >= 300:
                raise urllib.error.HTTPError(url, resp.status, "unexpected status", resp.headers, None)

    def _mail(self, to: str, body: dict[str, Any]) -> None:
        assert self.cfg.smtp_host and self.cfg.mail_from
        msg = EmailMessage()
        msg["From"], msg["To"] = self.cfg.mail_from, to
        msg["Subject"] = f"sealfuse job {body['sealfuse']['state']}: {body['sealfuse']['ref']}"
        msg.set_content(body["text"] + "\n")
        with smtplib.SMTP(self.cfg.smtp_host, self.cfg.smtp_port, timeout=self.cfg.notify_timeout_seconds) as s:
            if self.cfg.smtp_starttls:
                s.starttls()
            s.send_message(msg)
