"""Operations both pages and API use: deleting a job's media, the audit tail, managing users."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import anyio

from sealfuse.appliance.audit import verify_log
from sealfuse.appliance.console import errors
from sealfuse.appliance.console.core import Console
from sealfuse.appliance.console.jobs import ACTIVE_STATES, JobRecord
from sealfuse.appliance.console.users import User


async def delete_job_media(c: Console, user: User, rec: JobRecord) -> dict[str, Any]:
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


def audit_tail(c: Console, n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
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


def user_action(c: Console, admin: User, action: str, name: str, role: str, password: str) -> None:
    if action == "add":
        c.users.add(name, role, password)
        c.audit("console_user_added", user=admin.name, target=name, role=role)
    elif action in ("disable", "enable"):
        if name == admin.name:
            raise errors.ForbiddenError("an admin cannot disable their own account here")
        c.users.set_disabled(name, action == "disable")
        if action == "disable":
            c.sessions.drop_user(name)
        c.audit(f"console_user_{action}d", user=admin.name, target=name)
    elif action == "passwd":
        c.users.passwd(name, password)
        c.sessions.drop_user(name)
        c.audit("console_user_passwd", user=admin.name, target=name)
    else:
        raise errors.BadRequestError(f"unknown action {action!r}")
