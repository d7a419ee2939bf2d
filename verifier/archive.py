"""A strict, single-pass POSIX tar reader: ustar headers plus pax `path`/`size` records, nothing else.

It never seeks, reads member data in large chunks into one reused buffer, checks header checksums,
zero padding, the end-of-archive marker and that only zeros follow it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from sealfuse.verifier.errors import (
    ArchiveFormatError,
    TrailingDataError,
    TruncatedArchiveError,
)

BLOCK = 512
CHUNK = 4 << 20
MAX_PAX = 64 << 10
REGULAR = (b"0", b"\x00")
PAX_KEYS = frozenset({"path", "size"})
_ZERO_BLOCK = bytes(BLOCK)


@dataclass(frozen=True)
class Header:
    """One archive member's header: path, size, type flag and link target."""

    name: str
    size: int
    typeflag: bytes
    linkname: str
    offset: int

    @property
    def is_regular(self) -> bool:
        return self.typeflag in REGULAR

    @property
    def is_link(self) -> bool:
        return self.typeflag in (b"1", b"2")

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.typeflag, f"type {self.typeflag!r}")


_TYPE_NAMES = {b"0": "regular file", b"\x00": "regular file", b"1": "hard link",
               b"2": "symbolic link", b"3": "character device", b"4": "block device",
               b"5": "directory", b"6": "FIFO", b"7": "contiguous file"}


def _octal(field: bytes, what: str, offset: int) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        if field[0] != 0x80:
            raise ArchiveFormatError(f"negative or unsupported base-256 {what}", offset=offset)
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ArchiveFormatError(f"header field {what} is not octal: {field!r}",
                                 offset=offset) from None


def _text(field: bytes, what: str, offset: int) -> str:
    raw = field.split(b"\x00", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveFormatError(f"header field {what} is not UTF-8", offset=offset) from None


class TarReader:
    """Iterate headers with `next()`; consume each member's data with `read_data()`."""

    def __init__(self, f: io.RawIOBase | io.BufferedIOBase, chunk: int = CHUNK) -> None:
        self.f = f
        self.pos = 0
        self._buf = bytearray(chunk)
        self._view = memoryview(self._buf)
        self._block = bytearray(BLOCK)
        self._pending: Header | None = None

    def _fill(self, view: memoryview) -> int:
        """Read until `view` is full or EOF; return bytes read."""
        got = 0
        total = len(view)
        while got < total:
            n = self.f.readinto(view[got:])
            if not n:
                break
            got += n
        self.pos += got
        return got

    def _read_block(self, what: str) -> memoryview:
        view = memoryview(self._block)
        n = self._fill(view)
        if n != BLOCK:
            raise TruncatedArchiveError(
                f"archive ends {'inside' if n else 'before'} {what} at byte {self.pos}",
                offset=self.pos, read=n)
        return view

    def next(self) -> Header | None:
        """The next member header, or None after a valid end-of-archive marker (and only zeros)."""
        pax: dict[str, str] = {}
        while True:
            start = self.pos
            block = self._read_block("a header (no end-of-archive marker)")
            if block == _ZERO_BLOCK:
                if pax:
                    raise ArchiveFormatError("pax header not followed by a member", offset=start)
                self._read_block("the end-of-archive marker")
                if self._block != _ZERO_BLOCK:
                    raise ArchiveFormatError("single zero block inside the archive", offset=start)
                self._check_trailing()
                return None
            header = self._parse(bytes(block), start)
            if header.typeflag == b"x":
                pax = self._read_pax(header)
                continue
            if header.typeflag in (b"g", b"L", b"K"):
                raise ArchiveFormatError(f"unsupported header type {header.typeflag!r} "
                                         "(global pax or GNU long name)", offset=start)
            if pax:
                name = pax.get("path", header.name)
                size = int(pax["size"]) if "size" in pax else header.size
                header = Header(name, size, header.typeflag, header.linkname, start)
            return header

    def _parse(self, block: bytes, offset: int) -> Header:
        stored = _octal(block[148:156], "chksum", offset)
        actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
        if stored != actual:
            raise ArchiveFormatError(f"header checksum mismatch at byte {offset}",
                                     offset=offset, expected=stored, actual=actual)
        if block[257:265] != b"ustar\x0000":
            raise ArchiveFormatError(f"not a POSIX ustar header at byte {offset} "
                                     f"(magic {block[257:265]!r})", offset=offset)
        name = _text(block[0:100], "name", offset)
        prefix = _text(block[345:500], "prefix", offset)
        if prefix:
            name = f"{prefix}/{name}"
        return Header(name=name, size=_octal(block[124:136], "size", offset),
                      typeflag=block[156:157], linkname=_text(block[157:257], "linkname", offset),
                      offset=offset)

    def _read_pax(self, header: Header) -> dict[str, str]:
        if header.size > MAX_PAX:
            raise ArchiveFormatError(f"pax header of {header.size} bytes is too large",
                                     offset=header.offset)
        raw = self.read_bytes(header.size)
        records: dict[str, str] = {}
        pos = 0
        try:
            while pos < len(raw):
                space = raw.index(b" ", pos)
                length = int(raw[pos:space])
                record = raw[space + 1:pos + length]
                if length <= 0 or not record.endswith(b"\n"):
                    raise ValueError("bad record length")
                key, _, value = record[:-1].decode("utf-8").partition("=")
                records[key] = value
                pos += length
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArchiveFormatError(f"malformed pax header: {exc}", offset=header.offset) from exc
        unknown = set(records) - PAX_KEYS
        if unknown:
            raise ArchiveFormatError(f"pax header has keys a bundle never uses: {sorted(unknown)}",
                                     offset=header.offset, keys=sorted(unknown))
        if "size" in records and not records["size"].isdigit():
            raise ArchiveFormatError("pax size is not a number", offset=header.offset)
        return records

    def read_data(self, size: int, consume: Callable[[memoryview], object]) -> None:
        """Feed `size` bytes of member data to `consume` in chunks, then check zero padding."""
        remaining = size
        view = self._view
        while remaining:
            want = min(remaining, len(view))
            n = self._fill(view[:want])
            if n:
                consume(view[:n])
            if n < want:
                raise TruncatedArchiveError(f"archive ends inside member data at byte {self.pos}",
                                            offset=self.pos, missing=remaining - n)
            remaining -= n
        pad = (-size) % BLOCK
        if pad:
            pview = memoryview(self._block)[:pad]
            if self._fill(pview) != pad:
                raise TruncatedArchiveError("archive ends inside member padding", offset=self.pos)
            if any(pview):
                raise ArchiveFormatError("non-zero bytes in member padding", offset=self.pos - pad)

    def read_bytes(self, size: int) -> bytes:
        out = bytearray()
        self.read_data(size, out.extend)
        return bytes(out)

    def _check_trailing(self) -> None:
        view = self._view
        while True:
            n = self._fill(view)
            if not n:
                return
            if bytes(view[:n]).count(0) != n:
                first = next(i for i, b in enumerate(view[:n]) if b)
                raise TrailingDataError(
                    f"non-zero data after the end-of-archive marker at byte "
                    f"{self.pos - n + first}", offset=self.pos - n + first)
            if n < len(view):
                return
