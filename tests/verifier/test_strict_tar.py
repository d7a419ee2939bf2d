"""The tar reader parses every header field by the POSIX ustar/pax grammar and refuses anything two
tar readers could read differently; member names and digests match whole strings (never `$`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sealfuse.verifier import errors as E
from sealfuse.verifier import verify_bundle
from sealfuse.verifier.model import Version, check_member_path
from sealfuse.verifier.signatures import RAW_SIG, SSH_SIG
from tests.bundle import factory as F
from tests.verifier import tarcraft as T

NOW = F.NOW


@pytest.fixture
def good(factory: Any) -> tuple[Any, list[T.Member]]:
    return factory, T.members_of(factory.build())


def _model(members: list[T.Member]) -> T.Member:
    return next(m for m in members if m.name.startswith("payload/models/"))


def _verify(factory: Any, tmp_path: Path, members: list[T.Member], trailer: bytes | None = None
            ) -> None:
    path = tmp_path / "crafted.bundle"
    path.write_bytes(T.archive(members) if trailer is None else T.archive(members, trailer))
    verify_bundle(path, factory.trust, now=NOW)


def test_rebuilt_bundle_verifies_so_each_refusal_below_is_the_mutation(
        good: tuple[Any, list[T.Member]], tmp_path: Path) -> None:
    factory, members = good
    _verify(factory, tmp_path, members)
    model = _model(members)
    model.pax = T.record("size", str(len(model.data)))
    model.size = 0
    _verify(factory, tmp_path, members)  # a correct pax size (as tarfile writes past 8 GiB)


@pytest.mark.parametrize("value", ["\u00b9" + "2", "\u0661\u0662", "+12", " 12", "012", "12 ",
                                   "0x1f", "1_2", ""])
def test_pax_size_outside_ascii_decimal_is_refused(value: str, good: tuple[Any, list[T.Member]],
                                                   tmp_path: Path) -> None:
    """Python's int() reads '¹2' and '١٢' as numbers (the reported bug); POSIX tar does not."""
    factory, members = good
    model = _model(members)
    model.pax = T.record("size", value)
    model.size = 0
    with pytest.raises(E.PaxRecordError):
        _verify(factory, tmp_path, members)


@pytest.mark.parametrize("records", [
    b"10 size=12\n",            # length one short of the record (11 bytes)
    b"12 size=12\n",            # one long
    b"011 size=12\n",           # leading zero in the length
    b"+11 size=12\n",           # sign
    b"\xd9\xa1\xd9\xa1 size=12\n",  # Arabic-Indic digits in the length
    b"10 size=12",              # no newline
    b"11 size=12\nX",           # junk after the last record
    b"6 =12\n",                 # no key
    b"10 size12\n",             # no '='
], ids=["short", "long", "leading-zero", "sign", "non-ascii-length", "no-newline",
        "trailing-junk", "empty-key", "no-equals"])
def test_malformed_pax_record_is_refused(records: bytes, good: tuple[Any, list[T.Member]],
                                         tmp_path: Path) -> None:
    factory, members = good
    model = _model(members)
    model.pax = records
    with pytest.raises(E.PaxRecordError):
        _verify(factory, tmp_path, members)


def test_repeated_pax_key_is_ambiguous(good: tuple[Any, list[T.Member]], tmp_path: Path) -> None:
    factory, members = good
    model = _model(members)
    model.pax = T.record("size", "1") + T.record("size", str(len(model.data)))
    model.size = 0
    with pytest.raises(E.AmbiguousHeaderError) as info:
        _verify(factory, tmp_path, members)
    assert info.value.evidence["key"] == "size"


def test_pax_size_that_contradicts_the_ustar_size_is_ambiguous(
        good: tuple[Any, list[T.Member]], tmp_path: Path) -> None:
    factory, members = good
    model = _model(members)
    model.pax = T.record("size", str(len(model.data)))
    model.size = len(model.data) + 512
    with pytest.raises(E.AmbiguousHeaderError) as info:
        _verify(factory, tmp_path, members)
    assert info.value.evidence["ustar_size"] == len(model.data) + 512


def test_unknown_pax_key_is_unsupported(good: tuple[Any, list[T.Member]], tmp_path: Path) -> None:
    factory, members = good
    _model(members).pax = T.record("linkpath", "/etc/shadow")
    with pytest.raises(E.UnsupportedHeaderError):
        _verify(factory, tmp_path, members)


def test_two_pax_headers_in_a_row_are_ambiguous(good: tuple[Any, list[T.Member]],
                                                tmp_path: Path) -> None:
    factory, members = good
    model = _model(members)
    model.pax = T.record("path", model.name)
    extra = T.Member("unused", b"", fields={})
    blob = T.pax_header(T.record("path", "payload/other")) + model.encode()
    index = members.index(model)
    path = tmp_path / "two-pax.bundle"
    path.write_bytes(b"".join(m.encode() for m in members[:index]) + blob
                     + b"".join(m.encode() for m in members[index + 1:]) + bytes(1024))
    assert extra.name == "unused"
    with pytest.raises(E.AmbiguousHeaderError):
        verify_bundle(path, factory.trust, now=NOW)


@pytest.mark.parametrize("field,value", [
    ("size", " 0000000012\x00"),          # leading space
    ("size", "00000000012x"),             # junk instead of a terminator
    ("size", "000000000012"),             # twelve digits, no terminator
    ("size", "000000001\u00b9\x00"),     # superscript digit (UTF-8, two bytes)
    ("size", "0000000012\x00X"),          # junk after the terminator
    ("size", "\x00" * 12),                # empty
    ("mode", "0000644\x00" + ""),         # (valid; the control case below)
    ("mode", "000064\xff\x00"),
    ("mtime", "1" * 11 + "9"),
    ("uid", "-000001\x00"),
    ("chksum", "abcdef\x00 "),
], ids=["size-leading-space", "size-junk-terminator", "size-no-terminator", "size-superscript",
        "size-junk-after-nul", "size-empty", "mode-valid", "mode-non-ascii", "mtime-nine",
        "uid-negative", "chksum-hex"])
def test_numeric_field_outside_the_octal_grammar_is_refused(
        field: str, value: str, good: tuple[Any, list[T.Member]], tmp_path: Path) -> None:
    factory, members = good
    model = _model(members)
    raw = value.encode("utf-8") if "\u00b9" in value else value.encode("latin-1")
    if field == "size" and b"12" in raw:
        raw = raw.replace(b"12", f"{len(model.data):o}".encode().rjust(2, b"0")[-2:])
    model.fields[field] = raw
    if field == "mode" and value == "0000644\x00":
        _verify(factory, tmp_path, members)
        return
    with pytest.raises(E.HeaderFieldError) as info:
        _verify(factory, tmp_path, members)
    assert info.value.evidence["field"] == field


def test_gnu_base256_size_is_unsupported(good: tuple[Any, list[T.Member]], tmp_path: Path) -> None:
    factory, members = good
    model = _model(members)
    model.fields["size"] = b"\x80" + len(model.data).to_bytes(11, "big")
    with pytest.raises(E.UnsupportedHeaderError):
        _verify(factory, tmp_path, members)


@pytest.mark.parametrize("field,value", [
    ("name", None), ("uname", b"root\x00junk"), ("gname", b"\xc3\xa9"), ("pad", b"x"),
    ("magic", b"ustar "), ("version", b"  ")])
def test_text_fields_are_nul_padded_ascii_and_magic_is_exact(
        field: str, value: bytes | None, good: tuple[Any, list[T.Member]],
        tmp_path: Path) -> None:
    factory, members = good
    model = _model(members)
    model.fields[field] = (model.name.encode() + b"\x00junk") if value is None else value
    with pytest.raises(E.HeaderFieldError) as info:
        _verify(factory, tmp_path, members)
    assert info.value.evidence["field"] == field


@pytest.mark.parametrize("typeflag,error", [
    (b"L", E.UnsupportedHeaderError), (b"K", E.UnsupportedHeaderError),
    (b"g", E.UnsupportedHeaderError), (b"S", E.UnsupportedHeaderError),
    (b"\x00", E.NotRegularFileError), (b"7", E.NotRegularFileError)])
def test_header_types_sealfuse_never_writes_are_refused(
        typeflag: bytes, error: type[E.VerificationError], good: tuple[Any, list[T.Member]],
        tmp_path: Path) -> None:
    factory, members = good
    _model(members).typeflag = typeflag
    with pytest.raises(error):
        _verify(factory, tmp_path, members)


def test_regular_file_with_a_link_name_is_ambiguous(good: tuple[Any, list[T.Member]],
                                                    tmp_path: Path) -> None:
    factory, members = good
    _model(members).fields["linkname"] = b"/etc/shadow"
    with pytest.raises(E.AmbiguousHeaderError):
        _verify(factory, tmp_path, members)


def test_signature_name_with_a_trailing_newline_is_not_a_signature(
        good: tuple[Any, list[T.Member]], tmp_path: Path) -> None:
    """`^...\\.sig$` matched 'signatures/<id>.sig\\n'; names are matched whole now."""
    factory, members = good
    sig = next(m for m in members if m.name.endswith(".sig"))
    assert RAW_SIG.fullmatch(sig.name) and not RAW_SIG.fullmatch(sig.name + "\n")
    assert not SSH_SIG.fullmatch("signatures/a.sshsig\n")
    sig.pax = T.record("path", sig.name + "\n")
    with pytest.raises(E.UnsafePathError):
        _verify(factory, tmp_path, members)


@pytest.mark.parametrize("path", ["payload/a\nb", "payload/a\rb", "payload/\x7f", "payload/a\tb"])
def test_control_characters_in_paths_are_unsafe(path: str) -> None:
    assert check_member_path(path) is not None


@pytest.mark.parametrize("text", ["1.2.0\n", "1.2.\u0663", "01.2", "1..2"])
def test_versions_are_matched_whole_and_ascii(text: str) -> None:
    with pytest.raises(ValueError):
        Version.parse(text)
