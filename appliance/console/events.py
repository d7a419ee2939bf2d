"""Server-sent events: a job's (or the job list's) view whenever the daemon's status changes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sealfuse.appliance.console.core import console_of
from sealfuse.appliance.console.jobs import FINAL_STATES

KEEPALIVE_SECONDS = 15.0


async def events(request: Request) -> Response:
    """Server-sent events: `job` with the job's view whenever the daemon's status changes."""
    c = console_of(request)
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
