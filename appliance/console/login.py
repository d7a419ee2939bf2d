"""Sign-in and sign-out: session cookies for pages, bearer tokens for the API; rate limited."""

from __future__ import annotations

import secrets

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from sealfuse.appliance.console import errors
from sealfuse.appliance.console.auth import COOKIE, Session
from sealfuse.appliance.console.core import Console, console_of, json_body

PRELOGIN = "sealfuse_prelogin"


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def sign_in(c: Console, request: Request, name: str, password: str, kind: str) -> Session:
    addr = _client(request)
    keys = (f"user:{name[:64]}", f"addr:{addr}")
    wait = c.limiter.blocked(*keys)
    if wait > 0:
        c.audit("console_login_failed", user=name[:64], client=addr, why="rate_limited")
        raise errors.RateLimitedError(f"too many failed sign-ins; try again in {int(wait) + 1} s",
                                 retry_after=int(wait) + 1)
    user = c.users.authenticate(name, password)
    if user is None:
        c.limiter.fail(*keys)
        c.audit("console_login_failed", user=name[:64], client=addr, why="bad_credentials")
        raise errors.LoginFailedError("wrong user name or password, or the account is disabled")
    c.limiter.success(*keys)
    s = c.sessions.create(user.name, kind)
    c.audit("console_login", user=user.name, client=addr, via=kind)
    return s


async def login_page(request: Request) -> Response:
    c = console_of(request)
    token = secrets.token_urlsafe(24)
    resp = c.page(request, "login.html", prelogin=token, error=request.query_params.get("error"))
    resp.set_cookie(PRELOGIN, token, httponly=True, samesite="strict", secure=c.cfg.cookies_secure, path="/login")
    return resp


async def login_submit(request: Request) -> Response:
    c = console_of(request)
    form = await request.form()
    supplied, expected = str(form.get("csrf", "")), request.cookies.get(PRELOGIN, "")
    if not supplied or not expected or not secrets.compare_digest(supplied, expected):
        raise errors.CsrfError("the sign-in form expired; reload the page and try again")
    try:
        s = await anyio.to_thread.run_sync(sign_in, c, request, str(form.get("username", "")).strip(),
                                           str(form.get("password", "")), "cookie")
    except (errors.LoginFailedError, errors.RateLimitedError) as err:
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
    c = console_of(request)
    user, s = c.require(request)
    form = await request.form()
    c.check_csrf(request, s, str(form.get("csrf", "")))
    c.sessions.drop(s.token)
    c.audit("console_logout", user=user.name)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


async def api_login(request: Request) -> Response:
    c = console_of(request)
    try:
        body = await json_body(request)
        name, password = str(body["username"]), str(body["password"])
    except (ValueError, KeyError, TypeError, errors.BadRequestError):
        raise errors.BadRequestError('send {"username": ..., "password": ...} as JSON') from None
    s = await anyio.to_thread.run_sync(sign_in, c, request, name.strip(), password, "bearer")
    user = c.users.get(s.user)
    assert user is not None
    return JSONResponse({"ok": True, "token": s.token, "token_type": "bearer", "expires_in": int(c.sessions.lifetime),
                         "user": user.name, "role": user.role})


async def api_logout(request: Request) -> Response:
    c = console_of(request)
    user, s = c.require(request)
    c.check_csrf(request, s, None)
    c.sessions.drop(s.token)
    c.audit("console_logout", user=user.name)
    return JSONResponse({"ok": True})
