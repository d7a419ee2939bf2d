"""The Console object every request uses (config, accounts, sessions, spool, audit) and helpers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import anyio
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import Response

from sealfuse import __version__
from sealfuse.appliance.audit import AuditLog
from sealfuse.appliance.console import errors
from sealfuse.appliance.console.auth import (
    COOKIE,
    RateLimiter,
    Session,
    Sessions,
    address_in,
    csrf_ok,
)
from sealfuse.appliance.console.config import ConsoleConfig
from sealfuse.appliance.console.feed import ChangeFeed
from sealfuse.appliance.console.jobs import (
    FINAL_STATES,
    IMAGE_EXTS,
    VIDEO_EXTS,
    JobRecord,
    Spool,
    utcnow,
)
from sealfuse.appliance.console.notify import Notifier
from sealfuse.appliance.console.users import User, UserStore
from sealfuse.verifier.inputs import loads_strict

log = logging.getLogger("sealfuse.console")
HERE = Path(__file__).parent
STATE_WORDS = {"submitted": "Submitted", "queued": "Queued", "running": "Running", "done": "Done",
               "failed": "Failed", "removed": "Removed"}


class Console:
    """Everything a request needs: config, users, sessions, spool, audit, notifications."""

    def __init__(self, cfg: ConsoleConfig) -> None:
        self.cfg = cfg
        self.users = UserStore(cfg.state_dir)
        self.sessions = Sessions(cfg.session_hours * 3600)
        self.header_sessions: dict[str, Session] = {}
        self.limiter = RateLimiter(cfg.max_failures, cfg.lockout_seconds)
        self.spool = Spool(cfg.spool, cfg.state_dir, max_upload_mb=cfg.max_upload_mb, max_pixels=cfg.max_pixels)
        self.audit_log = AuditLog(cfg.audit_log)
        self.feed = ChangeFeed(cfg.spool)
        self.notifier = Notifier(cfg, on_give_up=self._notify_given_up)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(state_words=STATE_WORDS, version=__version__)
        self._tasks: list[asyncio.Task[None]] = []

    # -- audit ---------------------------------------------------------------------------------
    def audit(self, event: str, **fields: Any) -> None:
        try:
            self.audit_log.append(event, **fields)
        except Exception:  # an unusable audit log must be seen, never silently skipped
            log.exception("cannot append %s to the audit log %s", event, self.cfg.audit_log)
            raise

    def _notify_given_up(self, kind: str, target: str, body: dict[str, Any], error: str) -> None:
        with contextlib.suppress(Exception):
            self.audit("console_notify_failed", channel=kind, target=target, ref=body["sealfuse"]["ref"],
                       error=error[:200])

    # -- identity ------------------------------------------------------------------------------
    def identify(self, request: Request) -> tuple[User, Session] | None:
        cfg = self.cfg
        client = request.client.host if request.client else None
        if cfg.trusted_header and address_in(client, cfg.trusted_proxies):
            name = request.headers.get(cfg.trusted_header)
            if name:
                user = self.users.get(name.strip())
                if user is None or user.disabled:
                    return None
                s = self.header_sessions.get(user.name)
                if s is None:
                    s = Session(secrets.token_urlsafe(32), user.name, secrets.token_urlsafe(32), "header", 0)
                    self.header_sessions[user.name] = s
                return user, s
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            s = self.sessions.get(auth[7:].strip())
            if s is None or s.kind != "bearer":
                return None
        else:
            s = self.sessions.get(request.cookies.get(COOKIE))
            if s is None or s.kind != "cookie":
                return None
        user = self.users.get(s.user)
        if user is None or user.disabled:
            self.sessions.drop(s.token)
            return None
        return user, s

    def require(self, request: Request, perm: str | None = None) -> tuple[User, Session]:
        who = self.identify(request)
        if who is None:
            raise errors.NotAuthenticatedError("sign in first")
        if perm and not who[0].can(perm):
            raise errors.ForbiddenError(f"the {who[0].role} role may not do this", role=who[0].role, needs=perm)
        return who

    def check_csrf(self, request: Request, session: Session, supplied: str | None) -> None:
        if session.kind == "bearer":
            return  # no ambient credential: a bearer token cannot be forged by another site
        if not csrf_ok(session, supplied or request.headers.get("x-csrf-token")):
            raise errors.CsrfError("the form's CSRF token is missing or wrong; reload the page and try again")

    # -- jobs ----------------------------------------------------------------------------------
    def visible(self, user: User, rec: JobRecord) -> bool:
        return user.can("jobs_all") or (user.can("jobs_own") and rec.user == user.name)

    def job(self, user: User, ref: str) -> JobRecord:
        rec = self.spool.load(ref)
        if not self.visible(user, rec):
            raise errors.NotFoundError(f"no job {ref!r}", ref=ref)  # another user's job looks like no job
        return rec

    def view(self, user: User, rec: JobRecord) -> dict[str, Any]:
        v = self.spool.view(rec)
        v["can_media"] = user.can("media") and not rec.media_deleted
        return v

    def list_views(self, user: User) -> list[dict[str, Any]]:
        return [self.view(user, r) for r in self.spool.records() if self.visible(user, r)]

    async def sweep(self) -> None:
        """Notify when a job ends; purge media past the retention time. Woken by the change feed."""
        loop = asyncio.get_running_loop()
        retention_s = self.cfg.retention_hours * 3600
        purge_every = min(3600.0, max(1.0, retention_s / 10)) if retention_s > 0 else 3600.0
        last_purge = 0.0
        while True:
            since = self.feed.version
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(self._sweep_once)
            if retention_s > 0 and loop.time() - last_purge >= purge_every:
                last_purge = loop.time()
                try:
                    await anyio.to_thread.run_sync(self._purge)
                except Exception:  # noqa: BLE001 - logged; the next round tries again
                    log.exception("retention purge failed")
            await self.feed.wait(since, min(60.0, purge_every))

    def _sweep_once(self) -> None:
        for rec in self.spool.records():
            if rec.ended:
                continue
            v = self.spool.view(rec)
            if v["state"] in FINAL_STATES:
                rec.ended = v.get("finished") or utcnow()
                rec.notified = True
                self.spool.save(rec)
                user = self.users.get(rec.user)
                self.notifier.notify(v, email=user.email if user else None)

    def _purge(self) -> None:
        for rec in self.spool.expired(self.cfg.retention_hours):
            removed, asked = self.spool.delete_media(rec, "console:(retention)")
            self.audit("console_purge", user="(retention)", ref=rec.ref, job=rec.job_id, removed=removed,
                       media_deletion_requested=asked, retention_hours=self.cfg.retention_hours)

    # -- share ---------------------------------------------------------------------------------
    def share_files(self, limit: int = 500) -> list[str]:
        root = self.cfg.share
        if root is None or not root.is_dir():
            return []
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            depth = len(Path(dirpath).relative_to(root).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and depth < 3)
            for n in sorted(filenames):
                if n.startswith(".") or os.path.splitext(n)[1].lower() not in IMAGE_EXTS + VIDEO_EXTS:
                    continue
                p = Path(dirpath) / n
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.lstat(p).st_mode):
                        out.append(str(p.relative_to(root)))
                if len(out) >= limit:
                    return out
        return out

    def open_share(self, rel: str) -> tuple[int, str]:
        root = self.cfg.share
        if root is None:
            raise errors.BadRequestError("no share is configured on this console")
        if not rel or rel.startswith("/") or "\0" in rel or any(p in ("..", "") for p in rel.split("/")):
            raise errors.BadUploadNameError(f"share path {rel!r} is not a plain relative path", path=ascii(rel))
        real_root = os.path.realpath(root)
        path = os.path.realpath(os.path.join(real_root, rel))
        if os.path.commonpath([real_root, path]) != real_root or path != os.path.join(real_root, rel):
            raise errors.BadUploadNameError(f"share path {rel!r} leaves the share or passes a link", path=ascii(rel))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise errors.NotFoundError(f"share file {rel!r} cannot be opened: {exc.strerror}", path=ascii(rel)) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise errors.BadUploadNameError(f"share path {rel!r} is not a regular file", path=ascii(rel))
        return fd, os.path.basename(path)

    # -- rendering -----------------------------------------------------------------------------
    def page(self, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        who = self.identify(request)
        ctx.setdefault("user", who[0] if who else None)
        ctx.setdefault("csrf", who[1].csrf if who else "")
        html = self.env.get_template(name).render(request=request, **ctx)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})


def console_of(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]


async def json_body(request: Request) -> Any:
    """The request's JSON body, read strictly: a repeated key, NaN, or nesting deeper than the
    stack is a bad request (400), never two readings of one body or a 500."""
    return loads_strict(await request.body(), duplicate=errors.BadRequestError, invalid=errors.BadRequestError,
                        what="the request body")
