"""Job submission: a multipart upload streamed into the spool's inbox, checked, committed."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from sealfuse.appliance.console import errors
from sealfuse.appliance.console.auth import Session, csrf_ok
from sealfuse.appliance.console.core import Console
from sealfuse.appliance.console.jobs import (
    MANIFEST_SUFFIX,
    JobRecord,
    UploadSink,
    utcnow,
)
from sealfuse.appliance.console.options import models_available, options_from_fields
from sealfuse.appliance.console.users import User

MAX_FIELDS_BYTES = 64 * 1024


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
                raise errors.CsrfError("the CSRF token must be the form's first field; nothing was stored")
        if filename is None:
            return
        fname = filename.decode("utf-8", "replace")
        if fname == "" and name in ("reference",):
            self._filename = ""  # an empty optional file input
            return
        ext = self.c.spool.check_upload_name(name, fname)
        if name in self.staged:
            raise errors.BadRequestError(f"more than one {name} file", field=name)
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
                raise errors.UploadTooLargeError("the form's text fields are larger than 64 KiB")
            self._buf += chunk
        elif chunk:
            raise errors.BadRequestError("an empty file field carried data")

    def part_end(self) -> None:
        if self._sink is not None:
            self._sink.close()
            if self._sink.size == 0:
                raise errors.BadMediaError(f"the {self._name} file is empty", role=self._name)
            assert self._name is not None
            self.sizes[self._name] = self._sink.size
            self.digests[self._name] = self._hash.hexdigest()
            self._sink = None
        elif self._name is not None and self._filename is None:
            if self._name == "csrf" and self.session.kind != "bearer" and not csrf_ok(self.session, self._buf.decode()):
                raise errors.CsrfError("the form's CSRF token is missing or wrong; nothing was stored")
            self.fields.setdefault(self._name, []).append(self._buf.decode("utf-8", "replace"))

    def abort(self) -> None:
        if self._sink is not None:
            self._sink.abort()
            self._sink = None
        self.c.spool.discard(self.staged)


async def receive_job(c: Console, request: Request, user: User, session: Session) -> JobRecord:
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise errors.UnsupportedTypeError(f"submit a job as multipart/form-data, not {ctype or 'nothing'}",
                                     content_type=ctype)
    _ct, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        raise errors.BadRequestError("the multipart body has no boundary")
    limit = c.spool.max_bytes * 3 + MAX_FIELDS_BYTES + 65536
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise errors.UploadTooLargeError(f"the upload is larger than {c.cfg.max_upload_mb} MiB per file",
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
            raise errors.CsrfError("the form carries no CSRF token; nothing was stored")
        share_rel = (up.fields.get("share_target") or [""])[-1]
        if share_rel and "target" not in up.staged:
            await anyio.to_thread.run_sync(_copy_from_share, c, up, share_rel)
        if "source" not in up.staged or "target" not in up.staged:
            missing = [r for r in ("source", "target") if r not in up.staged]
            raise errors.BadRequestError(f"missing {' and '.join(missing)} (a source face and a target are needed)",
                                    missing=missing)
        available = models_available(c.cfg.models_dir)
        options = options_from_fields(up.fields, available)
        if options.get("face_selector_mode") == "reference" and "reference" not in up.staged:
            raise errors.BadOptionsError("face selector mode 'reference' needs a reference face image")
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
