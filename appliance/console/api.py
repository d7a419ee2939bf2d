"""The console's JSON API under /api/v1 for scripts (sign-in and sign-out live in login.py)."""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sealfuse import __version__
from sealfuse.appliance.console import errors
from sealfuse.appliance.console.actions import audit_tail, delete_job_media, user_action
from sealfuse.appliance.console.auth import Session
from sealfuse.appliance.console.core import console_of, json_body
from sealfuse.appliance.console.openapi import OPENAPI
from sealfuse.appliance.console.options import models_available
from sealfuse.appliance.console.upload import receive_job


async def healthz(request: Request) -> Response:
    c = console_of(request)
    ok = c.spool.inbox.is_dir()
    return JSONResponse({"ok": ok, "version": __version__}, status_code=200 if ok else 503)


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)


async def api_me(request: Request) -> Response:
    c = console_of(request)
    user, s = c.require(request)
    return JSONResponse({**user.public(), "csrf": s.csrf if s.kind != "bearer" else None})


async def api_options(request: Request) -> Response:
    c = console_of(request)
    c.require(request)
    return JSONResponse({"available": models_available(c.cfg.models_dir), "max_upload_mb": c.cfg.max_upload_mb,
                         "share": c.share_files() if c.cfg.share else []})


async def api_jobs(request: Request) -> Response:
    c = console_of(request)
    user, _s = c.require(request)
    return JSONResponse({"jobs": await anyio.to_thread.run_sync(c.list_views, user)})


async def api_submit(request: Request) -> Response:
    c = console_of(request)
    user, s = c.require(request, "submit")
    if s.kind != "bearer":
        c.check_csrf(request, s, request.headers.get("x-csrf-token"))
        s = Session(s.token, s.user, s.csrf, "bearer", s.expires)  # header checked: no form field needed
    rec = await receive_job(c, request, user, s)
    return JSONResponse(await anyio.to_thread.run_sync(c.view, user, rec), status_code=201,
                        headers={"Location": f"/api/v1/jobs/{rec.ref}"})


async def api_job(request: Request) -> Response:
    c = console_of(request)
    user, _s = c.require(request)
    rec = c.job(user, request.path_params["ref"])
    return JSONResponse(await anyio.to_thread.run_sync(c.view, user, rec))


async def api_delete(request: Request) -> Response:
    c = console_of(request)
    user, s = c.require(request, "media")
    c.check_csrf(request, s, None)
    rec = c.job(user, request.path_params["ref"])
    outcome = await delete_job_media(c, user, rec)
    return JSONResponse({"ok": True, "ref": rec.ref, **outcome})


async def api_audit(request: Request) -> Response:
    c = console_of(request)
    c.require(request, "audit")
    try:
        n = min(max(int(request.query_params.get("limit", "200") or 200), 1), 5000)
    except ValueError:
        raise errors.BadRequestError("limit must be a whole number") from None
    entries, verdict = await anyio.to_thread.run_sync(audit_tail, c, n)
    return JSONResponse({"verify": verdict, "entries": entries})


async def api_users(request: Request) -> Response:
    c = console_of(request)
    admin, s = c.require(request, "users")
    if request.method == "GET":
        return JSONResponse({"users": [u.public() for u in c.users.list()]})
    c.check_csrf(request, s, None)
    try:
        body = await json_body(request)
        action, name = str(body.get("action", "add")), str(body["name"])
    except (ValueError, KeyError, TypeError, AttributeError, errors.BadRequestError):
        raise errors.BadRequestError('send {"action": "add|disable|enable|passwd", "name": ..., ...} as JSON') from None
    await anyio.to_thread.run_sync(user_action, c, admin, action, name, str(body.get("role", "")),
                                   str(body.get("password", "")))
    return JSONResponse({"ok": True, "user": (u.public() if (u := c.users.get(name)) else None)})
