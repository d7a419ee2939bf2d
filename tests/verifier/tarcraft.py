"""Hand-made tar bytes for the strict-reader tests and the fuzzer: ustar headers with any field
value, pax records with any length, and the members of a real signed bundle to rebuild from."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 512
# (offset, width) of each ustar header field.
FIELDS: dict[str, tuple[int, int]] = {
    "name": (0, 100), "mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
    "mtime": (136, 12), "chksum": (148, 8), "typeflag": (156, 1), "linkname": (157, 100),
    "magic": (257, 6), "version": (263, 2), "uname": (265, 32), "gname": (297, 32),
    "devmajor": (329, 8), "devminor": (337, 8), "prefix": (345, 155), "pad": (500, 12),
}


def octal(value: int, width: int) -> bytes:
    return f"{value:0{width - 1}o}".encode() + b"\x00"


def fix_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}".encode() + b"\x00 "


def header(name: str, size: int, typeflag: bytes = b"0", *, checksum: bool = True,
           fields: dict[str, bytes] | None = None) -> bytes:
    """One ustar header block as Python's tarfile writes it, with `fields` replaced verbatim."""
    block = bytearray(BLOCK)
    values = {"name": name.encode(), "mode": octal(0o644, 8), "uid": octal(0, 8),
              "gid": octal(0, 8), "size": octal(size, 12), "mtime": octal(1_767_225_600, 12),
              "typeflag": typeflag, "magic": b"ustar\x00", "version": b"00",
              "devmajor": octal(0, 8), "devminor": octal(0, 8)}
    values.update(fields or {})
    for key, value in values.items():
        start, width = FIELDS[key]
        assert len(value) <= width, (key, value)
        block[start:start + len(value)] = value
    if checksum and "chksum" not in (fields or {}):
        fix_checksum(block)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def record(key: str, value: str | bytes) -> bytes:
    """One pax record with its exact length."""
    body = b" " + key.encode() + b"=" + (value.encode() if isinstance(value, str) else value) + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body


def pax_header(records: bytes, fields: dict[str, bytes] | None = None) -> bytes:
    return header("././@PaxHeader", len(records), b"x", fields=fields) + padded(records)


@dataclass
class Member:
    """A member to write: name, bytes, and optional pax records / header field overrides."""

    name: str
    data: bytes
    pax: bytes | None = None
    fields: dict[str, bytes] = field(default_factory=dict)
    typeflag: bytes = b"0"
    size: int | None = None  # the ustar size field (default: len(data), 0 with a pax size)

    def encode(self) -> bytes:
        out = b""
        ustar_name = self.name if len(self.name.encode()) <= 100 else self.name[:100]
        size = len(self.data) if self.size is None else self.size
        if self.pax is not None:
            out += pax_header(self.pax)
        out += header(ustar_name, size, self.typeflag, fields=self.fields)
        return out + padded(self.data)


def archive(members: list[Member], trailer: bytes = bytes(2 * BLOCK)) -> bytes:
    return b"".join(m.encode() for m in members) + trailer


def members_of(bundle: Path) -> list[Member]:
    """The members of a real bundle (names and bytes), to rebuild it with changes."""
    with tarfile.open(bundle, "r:") as tar:
        out = []
        for m in tar.getmembers():
            f = tar.extractfile(m)
            data = f.read() if f else b""
            long_name = len(m.name.encode()) > 100
            out.append(Member(m.name, data, pax=record("path", m.name) if long_name else None))
        return out
