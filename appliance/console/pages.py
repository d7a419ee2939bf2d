"""The console's server-rendered HTML pages, and the result download pages and API share."""

from __future__ import annotations

from urllib.parse import quote

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from sealfuse.appliance.console import errors
from sealfuse.appliance.console.actions import audit_tail, delete_job_media, user_action
from sealfuse.appliance.console.core import console_of
from sealfuse.appliance.console.jobs import MEDIA_TYPES
from sealfuse.appliance.console.options import models_available
from sealfuse.appliance.console.upload import receive_job
from sealfuse.appliance.console.users import ROLES


async def index(request: Request) -> Response:
    return RedirectResponse("/jobs", status_code=303)


async def jobs_page(request: Request) -> Response:
    c = console_of(request)
    user, _s = c.require(request)
    views = await anyio.to_thread.run_sync(c.list_views, user)
    return c.page(request, "jobs.html", jobs=views)


async def submit_page(request: Request) -> Response:
    c = console_of(request)
    c.require(request, "submit")
    available = models_available(c.cfg.models_dir)
    return c.page(request, "submit.html", available=available, share=c.share_files(),
                  max_mb=c.cfg.max_upload_mb, error=None)


async def submit_form(request: Request) -> Response:
    c = console_of(request)
    user, s = c.require(request, "submit")
    try:
        rec = await receive_job(c, request, user, s)
    except (errors.CsrfError, errors.NotAuthenticatedError):
        raise
    except errors.ConsoleError as err:
        available = models_available(c.cfg.models_dir)
        return c.page(request, "submit.html", status=err.status, available=available, share=c.share_files(),
                      max_mb=c.cfg.max_upload_mb, error=err.message)
    return RedirectResponse(f"/jobs/{rec.ref}", status_code=303)


async def job_page(request: Request) -> Response:
    c = console_of(request)
    user, _s = c.require(request)
    rec = c.job(user, request.path_params["ref"])
    v = await anyio.to_thread.run_sync(c.view, user, rec)
    return c.page(request, "job.html", job=v)


async def job_delete_form(request: Request) -> Response:
    c = console_of(request)
    user, s = c.require(request, "media")
    form = await request.form()
    c.check_csrf(request, s, str(form.get("csrf", "")))
    rec = c.job(user, request.path_params["ref"])
    await delete_job_media(c, user, rec)
    return RedirectResponse(f"/jobs/{rec.ref}", status_code=303)


async def result(request: Request) -> Response:
    c = console_of(request)
    user, _s = c.require(request, "media")
    rec = c.job(user, request.path_params["ref"])
    v = await anyio.to_thread.run_sync(c.spool.view, rec)
    if rec.media_deleted:
        raise errors.GoneError("this job's media was deleted", deleted=rec.media_deleted)
    path = c.spool.output_path(rec, v)
    if path is None:
        raise errors.NotFoundError("this job has no result (yet)", state=v["state"])
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
    c = console_of(request)
    c.require(request, "audit")
    entries, verdict = await anyio.to_thread.run_sync(audit_tail, c, 200)
    return c.page(request, "audit.html", entries=entries, verdict=verdict)


async def users_page(request: Request) -> Response:
    c = console_of(request)
    c.require(request, "users")
    return c.page(request, "users.html", users=c.users.list(), roles=ROLES, error=None)


async def users_form(request: Request) -> Response:
    c = console_of(request)
    admin, s = c.require(request, "users")
    form = await request.form()
    c.check_csrf(request, s, str(form.get("csrf", "")))
    action = str(form.get("action", ""))
    name = str(form.get("name", "")).strip()
    try:
        await anyio.to_thread.run_sync(user_action, c, admin, action, name, str(form.get("role", "")),
                                       str(form.get("password", "")))
    except errors.ConsoleError as err:
        return c.page(request, "users.html", status=err.status, users=c.users.list(), roles=ROLES,
                      error=err.message)
    return RedirectResponse("/users", status_code=303)
