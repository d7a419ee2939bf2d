"""The console's HTTP application (Starlette): server-rendered pages for people and a JSON API under
/api/v1 for scripts, both over the same spool producer, accounts and audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sealfuse.appliance.console import errors
from sealfuse.appliance.console.api import (
    api_audit,
    api_delete,
    api_job,
    api_jobs,
    api_me,
    api_options,
    api_submit,
    api_users,
    healthz,
    openapi,
)
from sealfuse.appliance.console.auth import address_in
from sealfuse.appliance.console.config import ConsoleConfig
from sealfuse.appliance.console.core import HERE, Console, console_of
from sealfuse.appliance.console.events import events
from sealfuse.appliance.console.login import api_login, api_logout, login_page, login_submit, logout
from sealfuse.appliance.console.pages import (
    audit_page,
    index,
    job_delete_form,
    job_page,
    jobs_page,
    result,
    submit_form,
    submit_page,
    users_form,
    users_page,
)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; media-src 'self'; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


async def on_console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ConsoleError)
    headers = {}
    if isinstance(exc, errors.RateLimitedError):
        headers["Retry-After"] = str(exc.evidence.get("retry_after", 60))
    if request.url.path.startswith("/api/"):
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)
    if isinstance(exc, errors.NotAuthenticatedError):
        return RedirectResponse("/login", status_code=303)
    c = console_of(request)
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
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={errors.ConsoleError: on_console_error})
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
