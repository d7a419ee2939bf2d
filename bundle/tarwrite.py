"""Reproducible POSIX tar writer for bundles: fixed order, mtime, owner and mode; no pax times.

Order: manifest.json, signatures/* (sorted), payload/* (sorted). Written to a temp file in the
target directory, fsynced and renamed into place.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from sealfuse.verifier.inputs import open_regular
from sealfuse.verifier.model import MANIFEST_NAME, SIGNATURES_DIR

FILE_MODE = 0o644


class PayloadSource(Protocol):
    """Anything with an archive name, a size and a way to open its bytes."""

    @property
    def arcname(self) -> str: ...

    @property
    def size(self) -> int: ...

    def open(self) -> IO[bytes]: ...


@dataclass(frozen=True)
class PayloadFile:
    """A payload member: archive path and where its bytes come from (a file or inline bytes)."""

    arcname: str
    source: Path | None = None
    data: bytes | None = None

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.source is not None
        return self.source.stat().st_size

    def open(self) -> IO[bytes]:
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.source is not None
        fd, _ = open_regular(self.source, "payload file")
        return os.fdopen(fd, "rb")


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_bundle(out: Path, manifest: bytes, signatures: Mapping[str, bytes],
                 payload: Iterable[PayloadSource], mtime: int) -> Path:
    """Write the bundle tar atomically and return its path."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_info(MANIFEST_NAME, len(manifest), mtime), io.BytesIO(manifest))
                for name in sorted(signatures):
                    if not name.startswith(SIGNATURES_DIR):
                        raise ValueError(f"signature member {name!r} is outside signatures/")
                    data = signatures[name]
                    tar.addfile(_info(name, len(data), mtime), io.BytesIO(data))
                for item in sorted(payload, key=lambda p: p.arcname):
                    with item.open() as f:
                        tar.addfile(_info(item.arcname, item.size, mtime), f)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
