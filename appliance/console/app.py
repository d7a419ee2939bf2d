"""The console's HTTP application (Starlette): server-rendered pages for people and a JSON API under
/api/v1 for scripts, both over the same spool producer, accounts and audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from jinja2 import Environment, FileSystemLoader, select_autoescape
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sealfuse import __version__
from sealfuse.appliance.audit import AuditLog, verify_log
from sealfuse.appliance.console import errors as E
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
    ACTIVE_STATES,
    FINAL_STATES,
    IMAGE_EXTS,
    MANIFEST_SUFFIX,
    MEDIA_TYPES,
    VIDEO_EXTS,
    JobRecord,
    Spool,
    UploadSink,
    check_options,
    models_available,
    utcnow,
)
from sealfuse.appliance.console.notify import Notifier
from sealfuse.appliance.console.openapi import OPENAPI
from sealfuse.appliance.console.users import ROLES, User, UserStore
from sealfuse.verifier.inputs import loads_strict

log = logging.getLogger("sealfuse.console")
HERE = Path(__file__).parent
PRELOGIN = "sealfuse_prelogin"
MAX_FIELDS_BYTES = 64 * 1024
KEEPALIVE_SECONDS = 15.0
STATE_WORDS = {"submitted": "Submitted", "queued": "Queued", "running": "Running", "done": "Done",
               "failed": "Failed", "removed": "Removed"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; media-src 'self'; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


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
            raise E.NotAuthenticatedError("sign in first")
        if perm and not who[0].can(perm):
            raise E.ForbiddenError(f"the {who[0].role} role may not do this", role=who[0].role, needs=perm)
        return who

    def check_csrf(self, request: Request, session: Session, supplied: str | None) -> None:
        if session.kind == "bearer":
            return  # no ambient credential: a bearer token cannot be forged by another site
        if not csrf_ok(session, supplied or request.headers.get("x-csrf-token")):
            raise E.CsrfError("the form's CSRF token is missing or wrong; reload the page and try again")

    # -- jobs ----------------------------------------------------------------------------------
    def visible(self, user: User, rec: JobRecord) -> bool:
        return user.can("jobs_all") or (user.can("jobs_own") and rec.user == user.name)

    def job(self, user: User, ref: str) -> JobRecord:
        rec = self.spool.load(ref)
        if not self.visible(user, rec):
            raise E.NotFoundError(f"no job {ref!r}", ref=ref)  # another user's job looks like no job
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
            raise E.BadRequestError("no share is configured on this console")
        if not rel or rel.startswith("/") or "\0" in rel or any(p in ("..", "") for p in rel.split("/")):
            raise E.BadUploadNameError(f"share path {rel!r} is not a plain relative path", path=ascii(rel))
        real_root = os.path.realpath(root)
        path = os.path.realpath(os.path.join(real_root, rel))
        if os.path.commonpath([real_root, path]) != real_root or path != os.path.join(real_root, rel):
            raise E.BadUploadNameError(f"share path {rel!r} leaves the share or passes a link", path=ascii(rel))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise E.NotFoundError(f"share file {rel!r} cannot be opened: {exc.strerror}", path=ascii(rel)) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise E.BadUploadNameError(f"share path {rel!r} is not a regular file", path=ascii(rel))
        return fd, os.path.basename(path)

    # -- rendering -----------------------------------------------------------------------------
    def page(self, request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
        who = self.identify(request)
        ctx.setdefault("user", who[0] if who else None)
        ctx.setdefault("csrf", who[1].csrf if who else "")
        html = self.env.get_template(name).render(request=request, **ctx)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})


# -- multipart upload, streamed straight into the inbox -------------------------------------------
class _Upload:
    """python-multipart callbacks: text fields into memory (bounded), files into inbox dot files."""

    def __init__(self, c: Console, ref: str, session: Session) -> None:
        self.c, self.ref, self.session = c, ref, session
        self.fields: dict[str, list[str]] = {}
        self.staged: dict[str, Path] = {}
        self.sizes: dict[str, int] = {}
        self.names: dict[str, str] = {}
        self.digests: dict[str, str] = {}
        self._headers: dict[str, bytes] = {}
        self._hfield = b""
        self._hvalue = b""
        self._name: str | None = None
        self._filename: str | None = None
        self._buf = bytearray()
        self._sink: UploadSink | None = None
        self._hash: Any = None
        self._text_bytes = 0
        self._first = True

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {"on_part_begin": self.part_begin, "on_part_data": self.part_data, "on_part_end": self.part_end,
                "on_header_field": self.header_field, "on_header_value": self.header_value,
                "on_header_end": self.header_end, "on_headers_finished": self.headers_finished}

    def part_begin(self) -> None:
        self._headers, self._name, self._filename = {}, None, None
        self._buf = bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._hfield += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def header_end(self) -> None:
        self._headers[self._hfield.decode("latin-1").lower()] = self._hvalue
        self._hfield, self._hvalue = b"", b""

    def headers_finished(self) -> None:
        _disp, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        self._name = name
        if self._first:
            self._first = False
            if name != "csrf" and self.session.kind != "bearer":
                raise E.CsrfError("the CSRF token must be the form's first field; nothing was stored")
        if filename is None:
            return
        fname = filename.decode("utf-8", "replace")
        if fname == "" and name in ("reference",):
            self._filename = ""  # an empty optional file input
            return
        ext = self.c.spool.check_upload_name(name, fname)
        if name in self.staged:
            raise E.BadRequestError(f"more than one {name} file", field=name)
        self._filename = fname
        self._sink = self.c.spool.open_upload(self.ref, name, ext)
        self.staged[name] = self._sink.path
        self.names[name] = fname
        self._hash = hashlib.sha256()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._sink is not None:
            self._sink.write(chunk)
            self._hash.update(chunk)
        elif self._filename is None:
            self._text_bytes += len(chunk)
            if self._text_bytes > MAX_FIELDS_BYTES:
                raise E.UploadTooLargeError("the form's text fields are larger than 64 KiB")
            self._buf += chunk
        elif chunk:
            raise E.BadRequestError("an empty file field carried data")

    def part_end(self) -> None:
        if self._sink is not None:
            self._sink.close()
            if self._sink.size == 0:
                raise E.BadMediaError(f"the {self._name} file is empty", role=self._name)
            assert self._name is not None
            self.sizes[self._name] = self._sink.size
            self.digests[self._name] = self._hash.hexdigest()
            self._sink = None
        elif self._name is not None and self._filename is None:
            if self._name == "csrf" and self.session.kind != "bearer" and not csrf_ok(self.session, self._buf.decode()):
                raise E.CsrfError("the form's CSRF token is missing or wrong; nothing was stored")
            self.fields.setdefault(self._name, []).append(self._buf.decode("utf-8", "replace"))

    def abort(self) -> None:
        if self._sink is not None:
            self._sink.abort()
            self._sink = None
        self.c.spool.discard(self.staged)


def _float(v: str, name: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise E.BadOptionsError(f"{name} must be a number, not {v!r}", option=name) from None


def options_from_fields(fields: dict[str, list[str]], available: dict[str, list[str]]) -> dict[str, Any]:
    """Job options from the HTML form's fields and/or an `options` JSON field (API)."""
    opts: dict[str, Any] = {}
    one = {k: v[-1] for k, v in fields.items() if v}
    if "frame_processors" in fields:
        opts["frame_processors"] = list(dict.fromkeys(fields["frame_processors"]))
    if one.get("face_swapper_model"):
        opts["face_swapper_model"] = one["face_swapper_model"]
    if one.get("face_enhancer_model") and "face_enhancer" in opts.get("frame_processors", []):
        opts["face_enhancer_model"] = one["face_enhancer_model"]
    if one.get("blend_ratio"):
        opts["blend_ratio"] = _float(one["blend_ratio"], "blend_ratio")
    if "face_mask_types" in fields:
        opts["face_mask_types"] = list(dict.fromkeys(fields["face_mask_types"]))
    if "face_mask_regions" in fields and "region" in opts.get("face_mask_types", []):
        # the form's empty marker field makes "region with no region ticked" an error, not the default
        opts["face_mask_regions"] = list(dict.fromkeys(v for v in fields["face_mask_regions"] if v))
    if one.get("face_selector_mode"):
        opts["face_selector_mode"] = one["face_selector_mode"]
    if one.get("options"):
        extra = loads_strict(one["options"], duplicate=E.BadOptionsError, invalid=E.BadOptionsError,
                             what="options")
        if not isinstance(extra, dict):
            raise E.BadOptionsError("options must be a JSON object")
        opts.update(extra)
    return check_options(opts, available)


async def receive_job(c: Console, request: Request, user: User, session: Session) -> JobRecord:
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise E.UnsupportedTypeError(f"submit a job as multipart/form-data, not {ctype or 'nothing'}",
                                     content_type=ctype)
    _ct, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        raise E.BadRequestError("the multipart body has no boundary")
    limit = c.spool.max_bytes * 3 + MAX_FIELDS_BYTES + 65536
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise E.UploadTooLargeError(f"the upload is larger than {c.cfg.max_upload_mb} MiB per file",
                                    limit_bytes=c.spool.max_bytes)
    ref = c.spool.new_ref()
    up = _Upload(c, ref, session)
    parser = MultipartParser(boundary, up.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            if chunk:
                await anyio.to_thread.run_sync(parser.write, chunk)
        await anyio.to_thread.run_sync(parser.finalize)
        if up._first and session.kind != "bearer":
            raise E.CsrfError("the form carries no CSRF token; nothing was stored")
        share_rel = (up.fields.get("share_target") or [""])[-1]
        if share_rel and "target" not in up.staged:
            await anyio.to_thread.run_sync(_copy_from_share, c, up, share_rel)
        if "source" not in up.staged or "target" not in up.staged:
            missing = [r for r in ("source", "target") if r not in up.staged]
            raise E.BadRequestError(f"missing {' and '.join(missing)} (a source face and a target are needed)",
                                    missing=missing)
        available = models_available(c.cfg.models_dir)
        options = options_from_fields(up.fields, available)
        if options.get("face_selector_mode") == "reference" and "reference" not in up.staged:
            raise E.BadOptionsError("face selector mode 'reference' needs a reference face image")
        if "reference" in up.staged and options.get("face_selector_mode") != "reference":
            options["face_selector_mode"] = "reference"
        for role, path in up.staged.items():
            await anyio.to_thread.run_sync(c.spool.check_media, path, role)
        label = (up.fields.get("label") or [""])[-1].strip()[:200] or None
        rec = JobRecord(ref=ref, user=user.name, created=utcnow(), label=label,
                        files={r: {"name": _display(up.names[r]), "size": up.sizes[r], "sha256": up.digests[r]}
                               for r in up.staged},
                        options=options, manifest=f"{ref}{MANIFEST_SUFFIX}")
        await anyio.to_thread.run_sync(c.spool.commit, rec, up.staged)
    except BaseException:
        up.abort()
        raise
    c.audit("console_submit", user=user.name, ref=ref, manifest=rec.manifest,
            inputs={r: up.digests[r] for r in up.staged}, sizes=up.sizes, options=options,
            via=session.kind)
    return rec


def _display(name: str) -> str:
    return "".join(ch if ch.isprintable() else "_" for ch in name)[:120]


def _copy_from_share(c: Console, up: _Upload, rel: str) -> None:
    fd, base = c.open_share(rel)
    try:
        ext = c.spool.check_upload_name("target", base)
        sink = c.spool.open_upload(up.ref, "target", ext)
        up.staged["target"] = sink.path
        h = hashlib.sha256()
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                while chunk := f.read(1 << 20):
                    sink.write(chunk)
                    h.update(chunk)
            sink.close()
        except BaseException:
            sink.abort()
            raise
        up.names["target"], up.sizes["target"], up.digests["target"] = base, sink.size, h.hexdigest()
    finally:
        os.close(fd)


# -- handlers ---------------------------------------------------------------------------------------
def _c(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _login(c: Console, request: Request, name: str, password: str, kind: str) -> Session:
    addr = _client(request)
    keys = (f"user:{name[:64]}", f"addr:{addr}")
    wait = c.limiter.blocked(*keys)
    if wait > 0:
        c.audit("console_login_failed", user=name[:64], client=addr, why="rate_limited")
        raise E.RateLimitedError(f"too many failed sign-ins; try again in {int(wait) + 1} s",
                                 retry_after=int(wait) + 1)
    user = c.users.authenticate(name, password)
    if user is None:
        c.limiter.fail(*keys)
        c.audit("console_login_failed", user=name[:64], client=addr, why="bad_credentials")
        raise E.LoginFailedError("wrong user name or password, or the account is disabled")
    c.limiter.success(*keys)
    s = c.sessions.create(user.name, kind)
    c.audit("console_login", user=user.name, client=addr, via=kind)
    return s


async def healthz(request: Request) -> Response:
    c = _c(request)
    ok = c.spool.inbox.is_dir()
    return JSONResponse({"ok": ok, "version": __version__}, status_code=200 if ok else 503)


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)


# pages ---------------------------------------------------------------------------------------------
async def index(request: Request) -> Response:
    return RedirectResponse("/jobs", status_code=303)


async def login_page(request: Request) -> Response:
    c = _c(request)
    token = secrets.token_urlsafe(24)
    resp = c.page(request, "login.html", prelogin=token, error=request.query_params.get("error"))
    resp.set_cookie(PRELOGIN, token, httponly=True, samesite="strict", secure=c.cfg.cookies_secure, path="/login")
    return resp


async def login_submit(request: Request) -> Response:
    c = _c(request)
    form = await request.form()
    supplied, expected = str(form.get("csrf", "")), request.cookies.get(PRELOGIN, "")
    if not supplied or not expected or not secrets.compare_digest(supplied, expected):
        raise E.CsrfError("the sign-in form expired; reload the page and try again")
    try:
        s = await anyio.to_thread.run_sync(_login, c, request, str(form.get("username", "")).strip(),
                                           str(form.get("password", "")), "cookie")
    except (E.LoginFailedError, E.RateLimitedError) as err:
        token = secrets.token_urlsafe(24)
        resp = c.page(request, "login.html", status=err.status, prelogin=token, error=err.message,
                      username=str(form.get("username", ""))[:64])
        resp.set_cookie(PRELOGIN, token, httponly=True, samesite="strict", secure=c.cfg.cookies_secure,
                        path="/login")
        return resp
    resp = RedirectResponse("/jobs", status_code=303)
    resp.set_cookie(COOKIE, s.token, max_age=int(c.cfg.session_hours * 3600), httponly=True,
                    samesite="strict", secure=c.cfg.cookies_secure, path="/")
    resp.delete_cookie(PRELOGIN, path="/login")
    return resp


async def logout(request: Request) -> Response:
    c = _c(request)
    user, s = c.require(request)
    form = await request.form()
    c.check_csrf(request, s, str(form.get("csrf", "")))
    c.sessions.drop(s.token)
    c.audit("console_logout", user=user.name)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


async def jobs_page(request: Request) -> Response:
    c = _c(request)
    user, _s = c.require(request)
    views = await anyio.to_thread.run_sync(c.list_views, user)
    return c.page(request, "jobs.html", jobs=views)


async def submit_page(request: Request) -> Response:
    c = _c(request)
    c.require(request, "submit")
    available = models_available(c.cfg.models_dir)
    return c.page(request, "submit.html", available=available, share=c.share_files(),
                  max_mb=c.cfg.max_upload_mb, error=None)


async def submit_form(request: Request) -> Response:
    c = _c(request)
    user, s = c.require(request, "submit")
    try:
        rec = await receive_job(c, request, user, s)
    except (E.CsrfError, E.NotAuthenticatedError):
        raise
    except E.ConsoleError as err:
        available = models_available(c.cfg.models_dir)
        return c.page(request, "submit.html", status=err.status, available=available, share=c.share_files(),
                      max_mb=c.cfg.max_upload_mb, error=err.message)
    return RedirectResponse(f"/jobs/{rec.ref}", status_code=303)


async def job_page(request: Request) -> Response:
    c = _c(request)
    user, _s = c.require(request)
    rec = c.job(user, request.path_params["ref"])
    v = await anyio.to_thread.run_sync(c.view, user, rec)
    return c.page(request, "job.html", job=v)


async def job_delete_form(request: Request) -> Response:
    c = _c(request)
    user, s = c.require(request, "media")
    form = await request.form()
    c.check_csrf(request, s, str(form.get("csrf", "")))
    rec = c.job(user, request.path_params["ref"])
    await _delete(c, user, rec)
    return RedirectResponse(f"/jobs/{rec.ref}", status_code=303)


async def _delete(c: Console, user: User, rec: JobRecord) -> dict[str, Any]:
    """Delete a job's media. A job still queued or running is first removed by the watch daemon (a
    removal request); a finished job's media is deleted by the daemon on a `delete_media` request
    (only the daemon may change its folders): the view shows `media_deleted` once it did."""
    view = await anyio.to_thread.run_sync(c.spool.view, rec)
    if view["state"] in ACTIVE_STATES:
        request = await anyio.to_thread.run_sync(c.spool.request_removal, rec, f"console:{user.name}")
        c.audit("console_remove", user=user.name, ref=rec.ref, job=rec.job_id, state=view["state"],
                request=f"inbox/{request}")
        return {"removed": [], "removal_requested": True, "media_deletion_requested": False}
    removed, asked = await anyio.to_thread.run_sync(c.spool.delete_media, rec, f"console:{user.name}")
    c.audit("console_delete", user=user.name, ref=rec.ref, job=rec.job_id, removed=removed,
            media_deletion_requested=asked)
    return {"removed": removed, "removal_requested": False, "media_deletion_requested": asked}


async def result(request: Request) -> Response:
    c = _c(request)
    user, _s = c.require(request, "media")
    rec = c.job(user, request.path_params["ref"])
    v = await anyio.to_thread.run_sync(c.spool.view, rec)
    if rec.media_deleted:
        raise E.GoneError("this job's media was deleted", deleted=rec.media_deleted)
    path = c.spool.output_path(rec, v)
    if path is None:
        raise E.NotFoundError("this job has no result (yet)", state=v["state"])
    inline = request.query_params.get("inline") == "1"
    ext = path.suffix.lower()
    name = f"{rec.ref}{ext}"
    c.audit("console_download", user=user.name, ref=rec.ref, job=rec.job_id, sha256=v.get("output_sha256"),
            inline=inline)
    disp = "inline" if inline else "attachment"
    return FileResponse(path, media_type=MEDIA_TYPES.get(ext, "application/octet-stream"),
                        headers={"Content-Disposition": f"{disp}; filename=\"{name}\"; filename*=UTF-8''{quote(name)}",
                                 "Cache-Control": "private, no-store"})


async def audit_page(request: Request) -> Response:
    c = _c(request)
    c.require(request, "audit")
    entries, verdict = await anyio.to_thread.run_sync(_audit_tail, c, 200)
    return c.page(request, "audit.html", entries=entries, verdict=verdict)


def _audit_tail(c: Console, n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    path = c.cfg.audit_log
    if not path.exists():
        return [], {"ok": True, "entries": 0}
    res = verify_log(path)
    lines = path.read_bytes().splitlines()[-n:]
    entries = []
    for raw in reversed(lines):
        with contextlib.suppress(ValueError):
            entries.append(json.loads(raw))
    return entries, res.to_dict()


async def users_page(request: Request) -> Response:
    c = _c(request)
    c.require(request, "users")
    return c.page(request, "users.html", users=c.users.list(), roles=ROLES, error=None)


async def users_form(request: Request) -> Response:
    c = _c(request)
    admin, s = c.require(request, "users")
    form = await request.form()
    c.check_csrf(request, s, str(form.get("csrf", "")))
    action = str(form.get("action", ""))
    name = str(form.get("name", "")).strip()
    try:
        await anyio.to_thread.run_sync(_user_action, c, admin, action, name, str(form.get("role", "")),
                                       str(form.get("password", "")))
    except E.ConsoleError as err:
        return c.page(request, "users.html", status=err.status, users=c.users.list(), roles=ROLES,
                      error=err.message)
    return RedirectResponse("/users", status_code=303)


def _user_action(c: Console, admin: User, action: str, name: str, role: str, password: str) -> None:
    if action == "add":
        c.users.add(name, role, password)
        c.audit("console_user_added", user=admin.name, target=name, role=role)
    elif action in ("disable", "enable"):
        if name == admin.name:
            raise E.ForbiddenError("an admin cannot disable their own account here")
        c.users.set_disabled(name, action == "disable")
        if action == "disable":
            c.sessions.drop_user(name)
        c.audit(f"console_user_{action}d", user=admin.name, target=name)
    elif action == "passwd":
        c.users.passwd(name, password)
        c.sessions.drop_user(name)
        c.audit("console_user_passwd", user=admin.name, target=name)
    else:
        raise E.BadRequestError(f"unknown action {action!r}")


# API -----------------------------------------------------------------------------------------------
async def _json_body(request: Request) -> Any:
    """The request's JSON body, read strictly: a repeated key, NaN, or nesting deeper than the
    stack is a bad request (400), never two readings of one body or a 500."""
    return loads_strict(await request.body(), duplicate=E.BadRequestError, invalid=E.BadRequestError,
                        what="the request body")


async def api_login(request: Request) -> Response:
    c = _c(request)
    try:
        body = await _json_body(request)
        name, password = str(body["username"]), str(body["password"])
    except (ValueError, KeyError, TypeError, E.BadRequestError):
        raise E.BadRequestError('send {"username": ..., "password": ...} as JSON') from None
    s = await anyio.to_thread.run_sync(_login, c, request, name.strip(), password, "bearer")
    user = c.users.get(s.user)
    assert user is not None
    return JSONResponse({"ok": True, "token": s.token, "token_type": "bearer", "expires_in": int(c.sessions.lifetime),
                         "user": user.name, "role": user.role})


async def api_logout(request: Request) -> Response:
    c = _c(request)
    user, s = c.require(request)
    c.check_csrf(request, s, None)
    c.sessions.drop(s.token)
    c.audit("console_logout", user=user.name)
    return JSONResponse({"ok": True})


async def api_me(request: Request) -> Response:
    c = _c(request)
    user, s = c.require(request)
    return JSONResponse({**user.public(), "csrf": s.csrf if s.kind != "bearer" else None})


async def api_options(request: Request) -> Response:
    c = _c(request)
    c.require(request)
    return JSONResponse({"available": models_available(c.cfg.models_dir), "max_upload_mb": c.cfg.max_upload_mb,
                         "share": c.share_files() if c.cfg.share else []})


async def api_jobs(request: Request) -> Response:
    c = _c(request)
    user, _s = c.require(request)
    return JSONResponse({"jobs": await anyio.to_thread.run_sync(c.list_views, user)})


async def api_submit(request: Request) -> Response:
    c = _c(request)
    user, s = c.require(request, "submit")
    if s.kind != "bearer":
        c.check_csrf(request, s, request.headers.get("x-csrf-token"))
        s = Session(s.token, s.user, s.csrf, "bearer", s.expires)  # header checked: no form field needed
    rec = await receive_job(c, request, user, s)
    return JSONResponse(await anyio.to_thread.run_sync(c.view, user, rec), status_code=201,
                        headers={"Location": f"/api/v1/jobs/{rec.ref}"})


async def api_job(request: Request) -> Response:
    c = _c(request)
    user, _s = c.require(request)
    rec = c.job(user, request.path_params["ref"])
    return JSONResponse(await anyio.to_thread.run_sync(c.view, user, rec))


async def api_delete(request: Request) -> Response:
    c = _c(request)
    user, s = c.require(request, "media")
    c.check_csrf(request, s, None)
    rec = c.job(user, request.path_params["ref"])
    outcome = await _delete(c, user, rec)
    return JSONResponse({"ok": True, "ref": rec.ref, **outcome})


async def api_audit(request: Request) -> Response:
    c = _c(request)
    c.require(request, "audit")
    try:
        n = min(max(int(request.query_params.get("limit", "200") or 200), 1), 5000)
    except ValueError:
        raise E.BadRequestError("limit must be a whole number") from None
    entries, verdict = await anyio.to_thread.run_sync(_audit_tail, c, n)
    return JSONResponse({"verify": verdict, "entries": entries})


async def api_users(request: Request) -> Response:
    c = _c(request)
    admin, s = c.require(request, "users")
    if request.method == "GET":
        return JSONResponse({"users": [u.public() for u in c.users.list()]})
    c.check_csrf(request, s, None)
    try:
        body = await _json_body(request)
        action, name = str(body.get("action", "add")), str(body["name"])
    except (ValueError, KeyError, TypeError, AttributeError, E.BadRequestError):
        raise E.BadRequestError('send {"action": "add|disable|enable|passwd", "name": ..., ...} as JSON') from None
    await anyio.to_thread.run_sync(_user_action, c, admin, action, name, str(body.get("role", "")),
                                   str(body.get("password", "")))
    return JSONResponse({"ok": True, "user": (u.public() if (u := c.users.get(name)) else None)})


async def events(request: Request) -> Response:
    """Server-sent events: `job` with the job's view whenever the daemon's status changes."""
    c = _c(request)
    user, _s = c.require(request)
    ref = request.path_params.get("ref")
    rec = c.job(user, ref) if ref else None

    async def stream() -> AsyncIterator[bytes]:
        last = None
        yield b"retry: 2000\n\n"
        while True:
            since = c.feed.version
            if rec is not None:
                fresh = c.spool.load(rec.ref)
                payload: Any = await anyio.to_thread.run_sync(c.view, user, fresh)
            else:
                payload = {"jobs": await anyio.to_thread.run_sync(c.list_views, user)}
            data = json.dumps(payload, sort_keys=True)
            if data != last:
                last = data
                yield f"event: {'job' if rec else 'jobs'}\ndata: {data}\n\n".encode()
            if rec is not None and payload["state"] in FINAL_STATES:
                yield b"event: end\ndata: {}\n\n"
                return
            if not await c.feed.wait(since, KEEPALIVE_SECONDS):
                if await request.is_disconnected():
                    return
                yield b": keepalive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# -- errors and headers -----------------------------------------------------------------------------
async def on_console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, E.ConsoleError)
    headers = {}
    if isinstance(exc, E.RateLimitedError):
        headers["Retry-After"] = str(exc.evidence.get("retry_after", 60))
    if request.url.path.startswith("/api/"):
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)
    if isinstance(exc, E.NotAuthenticatedError):
        return RedirectResponse("/login", status_code=303)
    c = _c(request)
    resp = c.page(request, "error.html", status=exc.status, error=exc)
    resp.headers.update(headers)
    return resp


def create_app(cfg: ConsoleConfig) -> Starlette:
    console = Console(cfg)
    console.spool.setup()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        console.feed.start(asyncio.get_running_loop())
        console.notifier.start()
        task = asyncio.create_task(console.sweep())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            console.feed.stop()
            console.notifier.stop()

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/jobs", jobs_page),
        Route("/submit", submit_page, methods=["GET"]),
        Route("/submit", submit_form, methods=["POST"]),
        Route("/events", events),
        Route("/jobs/{ref}", job_page),
        Route("/jobs/{ref}/events", events),
        Route("/jobs/{ref}/result", result),
        Route("/jobs/{ref}/delete", job_delete_form, methods=["POST"]),
        Route("/audit", audit_page),
        Route("/users", users_page, methods=["GET"]),
        Route("/users", users_form, methods=["POST"]),
        Route("/api/v1/openapi.json", openapi),
        Route("/api/v1/login", api_login, methods=["POST"]),
        Route("/api/v1/logout", api_logout, methods=["POST"]),
        Route("/api/v1/me", api_me),
        Route("/api/v1/options", api_options),
        Route("/api/v1/jobs", api_jobs, methods=["GET"]),
        Route("/api/v1/jobs", api_submit, methods=["POST"]),
        Route("/api/v1/jobs/{ref}", api_job),
        Route("/api/v1/jobs/{ref}/events", events),
        Route("/api/v1/jobs/{ref}/result", result),
        Route("/api/v1/jobs/{ref}/media", api_delete, methods=["DELETE"]),
        Route("/api/v1/audit", api_audit),
        Route("/api/v1/users", api_users, methods=["GET", "POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={E.ConsoleError: on_console_error})
    app.state.console = console

    return _Guard(app, cfg)  # type: ignore[return-value]


class _Guard:
    """ASGI wrapper: refuses clients outside console.allowed_networks and adds security headers."""

    def __init__(self, app: Starlette, cfg: ConsoleConfig) -> None:
        self.app, self.cfg = app, cfg
        self.state = app.state
        extra = dict(SECURITY_HEADERS)
        if cfg.tls:
            extra["Strict-Transport-Security"] = "max-age=31536000"
        self.headers = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("", 0))[0]
        if self.cfg.allowed_networks and not address_in(client, self.cfg.allowed_networks):
            await PlainTextResponse("forbidden: this address may not use the console", status_code=403)(
                scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _v in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.headers if k not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)
