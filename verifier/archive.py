"""A strict, single-pass POSIX tar reader: ustar headers plus pax `path`/`size` records, nothing else.

Every header field is parsed by the POSIX grammar exactly (ASCII octal digits and a NUL/space
terminator, NUL-padded ASCII text, `ustar\\0` `00`, zero padding, the unsigned checksum; pax
records `<decimal length> <key>=<value>\\n` with exact lengths and ASCII digits). Anything two tar
readers could read differently is refused. It never seeks, never reads past the size the file had
when it was opened, reads member data in chunks into one reused buffer, and checks zero padding,
the end-of-archive marker and that only zeros follow it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass

from sealfuse.verifier.errors import (
    AmbiguousHeaderError,
    ArchiveFormatError,
    HeaderChecksumError,
    HeaderFieldError,
    PaxRecordError,
    TrailingDataError,
    TruncatedArchiveError,
    UnsupportedHeaderError,
)

BLOCK = 512
CHUNK = 4 << 20
MAX_PAX = 64 << 10
REGULAR = b"0"
PAX = b"x"
PAX_KEYS = frozenset({"path", "size"})
_ZERO_BLOCK = bytes(BLOCK)
# (offset, width) of the ustar fields (POSIX.1-2017, pax "ustar Interchange Format").
_NUMERIC = {"mode": (100, 8), "uid": (108, 8), "gid": (116, 8), "size": (124, 12),
            "mtime": (136, 12), "chksum": (148, 8), "devmajor": (329, 8), "devminor": (337, 8)}
_TEXT = {"name": (0, 100), "linkname": (157, 100), "uname": (265, 32), "gname": (297, 32),
         "prefix": (345, 155)}
_MAY_BE_EMPTY = frozenset({"devmajor", "devminor"})
_OCTAL = re.compile(rb"([0-7]+)[ \x00]+")
_BLANK = re.compile(rb"[ \x00]*")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_PAX_LENGTH = re.compile(rb"[1-9][0-9]{0,7}")
_PAX_KEY = re.compile(rb"[a-z]+")
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]{0,19})", re.ASCII)
_UNSUPPORTED = {b"g": "global pax header", b"L": "GNU long name", b"K": "GNU long link name",
                b"S": "GNU sparse file", b"V": "GNU volume header", b"M": "GNU multi-volume",
                b"N": "GNU old long name", b"D": "GNU dump directory", b"X": "Solaris pax header"}


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
        return self.typeflag == REGULAR

    @property
    def is_link(self) -> bool:
        return self.typeflag in (b"1", b"2")

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.typeflag, f"type {self.typeflag!r}")


_TYPE_NAMES = {b"0": "regular file", b"\x00": "old-style regular file", b"1": "hard link",
               b"2": "symbolic link", b"3": "character device", b"4": "block device",
               b"5": "directory", b"6": "FIFO", b"7": "contiguous file"}


def _octal(block: bytes, what: str, offset: int) -> int:
    start, width = _NUMERIC[what]
    field = block[start:start + width]
    if field[0] & 0x80:
        raise UnsupportedHeaderError(f"header field {what} at byte {offset} is a GNU base-256 "
                                     "number (sealfuse writes pax records instead)",
                                     offset=offset, field=what)
    m = _OCTAL.fullmatch(field)
    if m is None:
        if what in _MAY_BE_EMPTY and _BLANK.fullmatch(field):
            return 0
        raise HeaderFieldError(f"header field {what} at byte {offset} is not ASCII octal digits "
                               f"ended by NUL or space: {field!r}", offset=offset, field=what,
                               value=field.hex())
    return int(m.group(1), 8)


def _text(block: bytes, what: str, offset: int) -> str:
    start, width = _TEXT[what]
    field = block[start:start + width]
    raw, nul, rest = field.partition(b"\x00")
    if rest.strip(b"\x00") or not _PRINTABLE.fullmatch(raw):
        raise HeaderFieldError(f"header field {what} at byte {offset} is not NUL-padded "
                               f"printable ASCII: {field.rstrip(bytes(1))!r}", offset=offset,
                               field=what)
    return raw.decode("ascii")


def parse_header(block: bytes, offset: int) -> Header:
    """Parse one 512-byte ustar header block by the grammar; raise an ArchiveFormatError kind."""
    stored = _octal(block, "chksum", offset)
    actual = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != actual:
        raise HeaderChecksumError(f"header checksum mismatch at byte {offset}",
                                  offset=offset, expected=stored, actual=actual)
    for what, start, expected in (("magic", 257, b"ustar\x00"), ("version", 263, b"00")):
        if block[start:start + len(expected)] != expected:
            raise HeaderFieldError(f"not a POSIX ustar header at byte {offset} "
                                   f"({what} {block[start:start + len(expected)]!r})",
                                   offset=offset, field=what)
    if any(block[500:512]):
        raise HeaderFieldError(f"non-zero bytes in the header padding at byte {offset}",
                               offset=offset, field="pad")
    for what in ("mode", "uid", "gid", "mtime", "devmajor", "devminor"):
        _octal(block, what, offset)
    for what in ("uname", "gname"):
        _text(block, what, offset)
    typeflag = block[156:157]
    if typeflag in _UNSUPPORTED:
        raise UnsupportedHeaderError(f"unsupported header type {typeflag!r} "
                                     f"({_UNSUPPORTED[typeflag]}) at byte {offset}",
                                     offset=offset, typeflag=typeflag.decode("latin-1"))
    name = _text(block, "name", offset)
    prefix = _text(block, "prefix", offset)
    if prefix:
        name = f"{prefix}/{name}"
    linkname = _text(block, "linkname", offset)
    if typeflag == REGULAR and linkname:
        raise AmbiguousHeaderError(f"regular file {name!r} carries a link name {linkname!r}",
                                   offset=offset, path=name, linkname=linkname)
    return Header(name=name, size=_octal(block, "size", offset), typeflag=typeflag,
                  linkname=linkname, offset=offset)


def parse_pax(raw: bytes, offset: int) -> dict[str, str]:
    """Parse pax extended header records exactly: every record `<len> <key>=<value>\\n` whose
    decimal length (ASCII, no sign, no leading zero) counts the whole record; keys appear once
    and are only `path` and `size`; `size` is ASCII decimal without leading zeros."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        space = raw.find(b" ", pos, pos + 9)
        if space < 0 or not _PAX_LENGTH.fullmatch(raw[pos:space]):
            raise PaxRecordError(f"pax record at byte {pos} of the header at {offset} does not "
                                 "start with an ASCII decimal length and a space",
                                 offset=offset, record_offset=pos)
        length = int(raw[pos:space])
        end = pos + length
        if end > len(raw) or raw[end - 1:end] != b"\n" or end <= space + 1:
            raise PaxRecordError(f"pax record at byte {pos} of the header at {offset}: length "
                                 f"{length} does not end at its newline", offset=offset,
                                 record_offset=pos, length=length)
        key_raw, eq, value_raw = raw[space + 1:end - 1].partition(b"=")
        if not eq or not _PAX_KEY.fullmatch(key_raw):
            raise PaxRecordError(f"pax record at byte {pos} of the header at {offset} has no "
                                 "key=value", offset=offset, record_offset=pos)
        key = key_raw.decode("ascii")
        if key not in PAX_KEYS:
            raise UnsupportedHeaderError(f"pax header has a key a bundle never uses: {key!r}",
                                         offset=offset, key=key)
        if key in records:
            raise AmbiguousHeaderError(f"pax header repeats the key {key!r}", offset=offset,
                                       key=key)
        try:
            value = value_raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PaxRecordError(f"pax {key} value is not UTF-8", offset=offset,
                                 key=key) from exc
        if key == "size" and not _DECIMAL.fullmatch(value):
            raise PaxRecordError(f"pax size {value!r} is not ASCII decimal digits",
                                 offset=offset, key=key, value=value)
        records[key] = value
        pos = end
    return records


class TarReader:
    """Iterate headers with `next()`; consume each member's data with `read_data()`.

    `limit` (the file's size when it was opened) bounds every read: the reader never reads
    more, so a file that grows while it is read cannot make it read without end.
    """

    def __init__(self, f: io.RawIOBase | io.BufferedIOBase, chunk: int = CHUNK,
                 limit: int | None = None) -> None:
        self.f = f
        self.pos = 0
        self.limit = limit
        self._buf = bytearray(chunk)
        self._view = memoryview(self._buf)
        self._block = bytearray(BLOCK)

    def _fill(self, view: memoryview) -> int:
        """Read until `view` is full, EOF or the limit; return bytes read."""
        got = 0
        total = len(view)
        if self.limit is not None:
            total = max(0, min(total, self.limit - self.pos))
        while got < total:
            n = self.f.readinto(view[got:total])
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
        pax: dict[str, str] | None = None
        pax_offset = 0
        while True:
            start = self.pos
            block = self._read_block("a header (no end-of-archive marker)")
            if block == _ZERO_BLOCK:
                if pax is not None:
                    raise AmbiguousHeaderError("pax header not followed by a member",
                                               offset=pax_offset)
                self._read_block("the end-of-archive marker")
                if self._block != _ZERO_BLOCK:
                    raise ArchiveFormatError("single zero block inside the archive", offset=start)
                self._check_trailing()
                return None
            header = parse_header(bytes(block), start)
            if header.typeflag == PAX:
                if pax is not None:
                    raise AmbiguousHeaderError("two pax headers in a row", offset=start)
                if header.size > MAX_PAX:
                    raise PaxRecordError(f"pax header of {header.size} bytes is too large",
                                         offset=start, size=header.size)
                pax = parse_pax(self.read_bytes(header.size), start)
                pax_offset = start
                continue
            if pax:
                name = pax.get("path", header.name)
                size = header.size
                if "size" in pax:
                    size = int(pax["size"])
                    if header.size not in (0, size):
                        raise AmbiguousHeaderError(
                            f"pax size {size} contradicts the ustar size {header.size} of "
                            f"{name!r}", offset=start, pax_size=size, ustar_size=header.size)
                header = Header(name, size, header.typeflag, header.linkname, start)
            return header

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
