"""Admission: the checks a drop passes before it is claimed, returning a claim or a named rejection.

Pure decisions: the only I/O is lstat of the drop's entries and one bounded, non-following,
non-blocking read of a manifest, each reached through O_NOFOLLOW directory descriptors from the
spool root (a folder on the way that is a link raises fsutil.FollowError). Nothing here moves or
writes a file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealfuse.appliance.fsutil import (
    bad_name,
    lexists_under,
    lstat_under,
    open_under,
    readlink_under,
)
from sealfuse.appliance.watch import errors
from sealfuse.appliance.watch.config import CANCEL_SCHEMA, MANIFEST_SCHEMA, WatchConfig, validate
from sealfuse.appliance.watch.inbox import MANIFEST_SUFFIX
from sealfuse.engine import IMAGE_EXTS, VIDEO_EXTS

MIB = 1024 * 1024
CLIENT_REF_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def engine_extensions() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The engine's image and video extensions (its one list; importing it loads no numpy)."""
    return IMAGE_EXTS, VIDEO_EXTS


def valid_client_ref(value: Any) -> str | None:
    """The manifest's client_ref if it is 1-64 chars of [A-Za-z0-9._-], else None."""
    if isinstance(value, str) and 1 <= len(value) <= 64 and set(value) <= CLIENT_REF_CHARS:
        return value
    return None


@dataclass(frozen=True)
class ClaimRequest:
    """A drop that passed admission: its files by role (the main file first), kind and options."""

    kind: str  # "manifest" | "preset"
    files: list[tuple[str, Path]]
    preset: str | None
    options: dict[str, Any]
    label: str | None = None
    client_ref: str | None = None


@dataclass(frozen=True)
class CancelRequest:
    """A valid removal request: the job it names (by id or client_ref) and who asked."""

    job_id: str | None
    client_ref: str | None
    requested_by: str | None
    delete_media: bool = False  # also delete the job's media once it is finished


def clean_requester(value: Any) -> str | None:
    """The cancel file's `requested_by`, bounded (128 chars) with every non-printable character
    replaced by `?`, or None."""
    if not isinstance(value, str) or not value:
        return None
    return "".join(c if c.isprintable() else "?" for c in value[:128])


@dataclass
class Verdict:
    """The outcome of judging one manifest: a claim, a rejection, or still waiting (neither)."""

    named: set[Path] = field(default_factory=set)  # media the manifest names (not orphans)
    claim: ClaimRequest | None = None
    rejection: errors.DropError | None = None
    reject_paths: list[Path] = field(default_factory=list)
    client_ref: str | None = None
    gone: bool = False  # the manifest vanished while being read


class Admission:
    """Judges drops against the config: names, file types, sizes, extensions, manifests."""

    def __init__(self, config: WatchConfig, inbox: Path,
                 extensions: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> None:
        self.cfg = config
        self.inbox = inbox
        self.root = inbox.parent
        self._dev: int | None = None
        self.image_exts, self.video_exts = extensions or engine_extensions()

    @property
    def media_exts(self) -> tuple[str, ...]:
        """Every supported media extension."""
        return self.image_exts + self.video_exts

    @property
    def spool_dev(self) -> int:
        """st_dev of the spool's filesystem."""
        if self._dev is None:
            self._dev = os.stat(self.root).st_dev
        return self._dev

    def lstat(self, path: Path) -> os.stat_result:
        """lstat of a spool entry, never following a link on the way."""
        return lstat_under(self.root, path.relative_to(self.root))

    def inspect(self, path: Path, *, media: bool) -> os.stat_result:
        """lstat-level checks every claimed entry passes; raises the specific DropError
        (FileNotFoundError when the entry is gone, FollowError when its folder is a link)."""
        why = bad_name(path.name)
        if why:
            raise errors.BadNameError(f"the file name {ascii(path.name)} {why}", name=ascii(path.name))
        st = self.lstat(path)
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            raise errors.SymlinkError(f"{ascii(path.name)} is a symbolic link; drop regular files only",
                                      name=path.name, points_to=self._readlink(path))
        if stat.S_ISFIFO(mode):
            raise errors.FifoError(f"{path.name} is a FIFO; drop regular files only", name=path.name)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise errors.DeviceNodeError(f"{path.name} is a device node; drop regular files only",
                                         name=path.name, major=os.major(st.st_rdev), minor=os.minor(st.st_rdev))
        if stat.S_ISSOCK(mode):
            raise errors.SocketFileError(f"{path.name} is a socket; drop regular files only", name=path.name)
        # Only a directory's st_dev is compared: overlayfs reports its layers' devices for files.
        # (A file bind-mounted over an entry cannot be renamed: that move fails and is refused.)
        if stat.S_ISDIR(mode) and st.st_dev != self.spool_dev:
            raise errors.ForeignFilesystemError(
                f"{ascii(path.name)} is a mount point of another filesystem; it is not moved or read",
                name=path.name)
        if stat.S_ISDIR(mode):
            raise errors.DirectoryError(f"{path.name} is a directory; drop files only (not walked)",
                                        name=path.name)
        if not stat.S_ISREG(mode):  # pragma: no cover - every type is named above
            raise errors.DropError(f"{path.name} is not a regular file", name=path.name)
        if st.st_nlink > 1:
            raise errors.HardlinkError(f"{path.name} has {st.st_nlink} hard links; drop a file of its own",
                                       name=path.name, links=st.st_nlink)
        if st.st_size == 0:
            raise errors.EmptyDropError(f"{path.name} is empty (0 bytes)", name=path.name)
        if media:
            if path.suffix.lower() not in self.media_exts:
                raise errors.UnsupportedExtensionError(
                    f"{path.name}: extension {path.suffix!r} is not a supported image or video",
                    name=path.name, supported=list(self.media_exts))
            if st.st_size > self.cfg.max_input_mb * MIB:
                raise errors.TooLargeDropError(f"{path.name} is {st.st_size} bytes, over max_input_mb",
                                               name=path.name, size=st.st_size, limit_mb=self.cfg.max_input_mb)
        return st

    def loose(self, path: Path, *, age: float) -> None:
        """A non-manifest entry directly in inbox/: a folder that is no preset, a preset folder that
        is a link, media no manifest names (after orphan_seconds). Raises the DropError."""
        st = self.lstat(path)
        if path.name in self.cfg.presets and not stat.S_ISDIR(st.st_mode):
            if stat.S_ISLNK(st.st_mode):
                raise errors.SymlinkedFolderError(
                    f"inbox/{path.name} (a preset folder) is a symbolic link; it is never followed",
                    name=path.name, points_to=self._readlink(path))
            self.inspect(path, media=False)
            raise errors.DropError(f"inbox/{path.name} should be the preset's folder", name=path.name)
        if stat.S_ISDIR(st.st_mode) and st.st_dev != self.spool_dev:
            raise errors.ForeignFilesystemError(f"inbox/{path.name} is a mount point; it is not moved or read",
                                                name=path.name)
        if stat.S_ISDIR(st.st_mode):
            raise errors.UnknownPresetError(f"inbox/{path.name} is a directory but no preset of that name "
                                            "is configured", name=path.name, presets=sorted(self.cfg.presets))
        self.inspect(path, media=True)
        if age >= self.cfg.orphan_seconds:
            raise errors.OrphanMediaError(f"{path.name} waited {self.cfg.orphan_seconds:g} s for a manifest",
                                          name=path.name)

    def preset_drop(self, path: Path) -> ClaimRequest:
        """A media file in inbox/<preset>/: the claim, or the DropError."""
        self.inspect(path, media=True)
        preset = self.cfg.presets[path.parent.name]
        return ClaimRequest("preset", [("target", path)], preset.name, dict(preset.options))

    def read_manifest(self, path: Path) -> dict[str, Any]:
        """Open (never following, never blocking), read at most manifest_max_bytes, parse, validate."""
        st = self.inspect(path, media=False)
        limit = self.cfg.manifest_max_bytes
        if st.st_size > limit:
            raise errors.ManifestTooLargeError(f"{path.name} is {st.st_size} bytes; manifests are at most "
                                               f"{limit}", name=path.name, size=st.st_size, limit=limit)
        fd = open_under(self.root, path.relative_to(self.root), os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise errors.DropError(f"{path.name} changed into a non-regular file", name=path.name)
            raw = handle.read(limit + 1)
        if len(raw) > limit:
            raise errors.ManifestTooLargeError(f"{path.name} grew past {limit} bytes", name=path.name,
                                               size=len(raw), limit=limit)
        from sealfuse.verifier.inputs import loads_strict

        # duplicate keys and NaN/Infinity refused: two readers must not see two different jobs
        return loads_strict(raw, duplicate=errors.InvalidJsonError, invalid=errors.InvalidJsonError,
                            what=path.name, name=path.name)

    def cancel(self, path: Path) -> CancelRequest:
        """Read and validate a removal request (`inbox/<name>.cancel.json`) as strictly as a
        manifest: the same entry checks, size limit, strict JSON; raises the DropError."""
        doc = self.read_manifest(path)
        problems = validate(doc, CANCEL_SCHEMA)
        if problems:
            raise errors.SchemaViolationError(f"{path.name} breaks the removal request schema: {problems[0]}",
                                              name=path.name, problems=problems[:10])
        return CancelRequest(doc.get("job_id"), doc.get("client_ref"), clean_requester(doc.get("requested_by")),
                             delete_media=doc.get("delete_media") is True)

    def manifest(self, path: Path, *, age: float, stable: Callable[[Path], bool]) -> Verdict:
        """Judge a manifest that is itself stable. `stable(p)` reports (and starts tracking) its media."""
        verdict = Verdict()
        try:
            doc = self.read_manifest(path)
            if isinstance(doc, dict):
                verdict.client_ref = valid_client_ref(doc.get("client_ref"))
            problems = validate(doc, MANIFEST_SCHEMA)
            if problems:
                raise errors.SchemaViolationError(f"{path.name} breaks the job schema: {problems[0]}",
                                                  name=path.name, problems=problems[:10])
            verdict.named, name_error = self._named_media(path, doc)
            if name_error is not None:  # raised once every acceptable name is known: they go along
                raise name_error
            named = {role: self.inbox / Path(name).name for role, name in _roles(doc)}
            preset = doc.get("preset")
            if preset is not None and preset not in self.cfg.presets:
                raise errors.UnknownPresetError(f"{path.name}: preset {preset!r} is not configured",
                                                name=path.name, preset=preset, presets=sorted(self.cfg.presets))
            if named["target"].suffix.lower() not in self.media_exts:
                raise errors.UnsupportedExtensionError(f"{path.name}: target extension is not supported",
                                                       name=path.name, target=named["target"].name)
            for role in named:
                if role != "target" and named[role].suffix.lower() not in self.image_exts:
                    raise errors.UnsupportedExtensionError(f"{path.name}: {role} must be an image",
                                                           name=path.name, role=role)
            waiting = []  # media must be present and whole before anything is claimed
            for media in named.values():
                if not lexists_under(self.root, media.relative_to(self.root)):
                    waiting.append(media.name)
                    continue
                self.inspect(media, media=True)
                if not stable(media):
                    waiting.append(media.name)
            if waiting:
                if age >= self.cfg.manifest_wait_seconds:
                    raise errors.MissingMediaError(
                        f"{path.name}: {', '.join(waiting)} did not arrive (whole) within "
                        f"{self.cfg.manifest_wait_seconds:g} s", name=path.name, waiting=waiting)
                return verdict
        except FileNotFoundError:
            verdict.gone = True
            return verdict
        except errors.DropError as err:
            verdict.rejection = err
            present = [p for p in verdict.named if lexists_under(self.root, p.relative_to(self.root))]
            verdict.reject_paths = [path, *dict.fromkeys(sorted(present))]
            return verdict
        preset_opts = self.cfg.presets[doc["preset"]].options if doc.get("preset") else {}
        verdict.claim = ClaimRequest("manifest", [("manifest", path), *named.items()], doc.get("preset"),
                                     {**preset_opts, **doc.get("options", {})}, doc.get("label"),
                                     verdict.client_ref)
        return verdict

    def _readlink(self, path: Path) -> str:
        try:
            return ascii(readlink_under(self.root, path.relative_to(self.root)))
        except OSError:
            return "?"

    def _named_media(self, path: Path, doc: dict[str, Any]) -> tuple[set[Path], errors.DropError | None]:
        """The acceptable names the manifest gives, and the error for the first that escapes the
        drop folder or is unacceptable."""
        named: set[Path] = set()
        name_error: errors.DropError | None = None
        for role, name in _roles(doc):
            if name.startswith("/") or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
                name_error = name_error or errors.PathEscapeError(
                    f"{path.name}: {role} {ascii(name)} is not a plain file name in the drop folder",
                    name=path.name, role=role, path=ascii(name))
            elif bad_name(name) or name.startswith(".") or name.endswith(MANIFEST_SUFFIX):
                name_error = name_error or errors.BadNameError(
                    f"{path.name}: {role} name {ascii(name)} is not acceptable", name=path.name, role=role)
            else:
                named.add(self.inbox / name)
        return named, name_error


def _roles(doc: dict[str, Any]) -> list[tuple[str, str]]:
    roles = [(role, doc[role]) for role in ("source", "target", "reference") if role in doc]
    for i, pair in enumerate(doc.get("face_map", [])):  # face_map.<i>.reference / face_map.<i>.source
        roles += [(f"face_map.{i}.{key}", pair[key]) for key in ("reference", "source")]
    return roles
