"""The console's accounts: one JSON file in the state dir, argon2id hashes, replaced atomically.

Roles: `submitter` (own jobs), `reviewer` (all jobs and their media), `auditor` (audit log and job
records, no media), `admin` (accounts, audit log and job records, no media).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sealfuse.appliance.console.errors import (
    BadPasswordError,
    BadUserNameError,
    NoSuchUserError,
    StoreError,
    UserExistsError,
)
from sealfuse.appliance.fsutil import read_json_file, write_atomic

ROLES = ("submitter", "reviewer", "auditor", "admin")
NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{0,31}$")
MIN_PASSWORD = 10
STORE_MODE = 0o640
USERS_FILE = "users.json"
# argon2id, RFC 9106's second recommended option (64 MiB, 3 passes).
_HASHER = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)
# A hash to verify against when the user does not exist, so timing does not tell names apart.
_DUMMY = _HASHER.hash("sealfuse-no-such-user")

# What each role may do.
PERMISSIONS: dict[str, frozenset[str]] = {
    "submitter": frozenset({"submit", "jobs_own", "media"}),
    "reviewer": frozenset({"submit", "jobs_all", "media"}),
    "auditor": frozenset({"jobs_all", "audit"}),
    "admin": frozenset({"jobs_all", "audit", "users"}),
}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    disabled: bool
    created: str
    changed: str
    email: str | None = None

    def can(self, perm: str) -> bool:
        return not self.disabled and perm in PERMISSIONS.get(self.role, frozenset())

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "disabled": self.disabled, "created": self.created,
                "changed": self.changed, "email": self.email}


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise BadUserNameError(f"user name {name!r} must be 1-32 characters of a-z 0-9 . _ - and start "
                               "with a letter", name=name)
    return name


MAX_PASSWORD = 1024
EMAIL_RE = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,189}")


def check_email(email: str | None) -> str | None:
    """One plain address (it becomes a mail header): no spaces, line breaks or control chars."""
    if email is not None and not EMAIL_RE.fullmatch(email):
        raise BadUserNameError(f"e-mail {email!r} is not one plain address (local@domain, no spaces "
                               "or control characters)", email=email)
    return email


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise BadPasswordError(f"the password is shorter than {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise BadPasswordError(f"the password is longer than {MAX_PASSWORD} characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:  # stdin bytes that are not UTF-8 arrive as surrogates
        raise BadPasswordError("the password is not valid UTF-8 text") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        raise BadPasswordError("the password holds a control character")
    if password != password.strip() or "\n" in password:
        raise BadPasswordError("the password starts or ends with white space or holds a line break")
    return password


def match_owner(path: Path) -> None:
    """Run as root (the `sealfuse users` CLI), give a file in the state dir to the dir's owner, so
    the console service (user sealfuse-console) can still write it."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(path.parent)
        if (st.st_uid, st.st_gid) != (0, 0):
            os.chown(path, st.st_uid, st.st_gid, follow_symlinks=False)


class UserStore:
    """`STATE/users.json`: read on change, every write under an exclusive lock and atomic."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / USERS_FILE
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], dict[str, dict[str, Any]]] | None = None

    # -- reading ----------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc}", path=str(self.path)) from exc
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._cache and self._cache[0] == key:
                return self._cache[1]
        try:
            # never through a link, never a FIFO, strict JSON: a repeated user has no one role
            doc = read_json_file(self.path)
            users = dict(doc["users"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.path} is not a console user store: {exc}", path=str(self.path)) from exc
        with self._lock:
            self._cache = (key, users)
        return users

    def get(self, name: str) -> User | None:
        rec = self._load().get(name)
        if rec is None:
            return None
        return User(name, rec["role"], bool(rec.get("disabled")), rec.get("created", ""),
                    rec.get("changed", ""), rec.get("email"))

    def list(self) -> list[User]:
        return [u for n in sorted(self._load()) if (u := self.get(n)) is not None]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the name exists, is enabled and the password matches; else None."""
        rec = self._load().get(name)
        try:
            _HASHER.verify(rec["hash"] if rec else _DUMMY, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if rec is None or rec.get("disabled"):
            return None
        if _HASHER.check_needs_rehash(rec["hash"]):
            with contextlib.suppress(StoreError):
                self._update(name, lambda r: r.update(hash=_HASHER.hash(password)))
        return self.get(name)

    # -- writing ----------------------------------------------------------------------------
    def _update(self, name: str | None, change: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(".users.lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            match_owner(lock_path)
        except OSError as exc:
            raise StoreError(f"cannot lock {lock_path}: {exc}", path=str(lock_path)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            users = {k: dict(v) for k, v in self._load().items()}
            change(users) if name is None else change(users[name])
            body = json.dumps({"version": 1, "users": users}, indent=2, sort_keys=True) + "\n"
            try:
                write_atomic(self.path, body.encode(), mode=STORE_MODE)
                match_owner(self.path)  # root's CLI keeps the store the service's
            except OSError as exc:
                raise StoreError(f"cannot write {self.path}: {exc}", path=str(self.path)) from exc
        finally:
            os.close(fd)

    def add(self, name: str, role: str, password: str, email: str | None = None) -> User:
        check_name(name)
        if role not in ROLES:
            raise BadUserNameError(f"role {role!r} is not one of {', '.join(ROLES)}", role=role)
        check_email(email)
        check_password(password)
        digest = _HASHER.hash(password)

        def change(users: dict[str, Any]) -> None:
            if name in users:
                raise UserExistsError(f"user {name!r} exists already", name=name)
            users[name] = {"role": role, "hash": digest, "disabled": False, "created": now(),
                           "changed": now(), "email": email}

        self._update(None, change)
        user = self.get(name)
        assert user is not None
        return user

    def _require(self, name: str) -> None:
        if name not in self._load():
            raise NoSuchUserError(f"no user {name!r}", name=name)

    def passwd(self, name: str, password: str) -> None:
        self._require(name)
        check_password(password)
        digest = _HASHER.hash(password)
        self._update(name, lambda r: r.update(hash=digest, changed=now()))

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        self._require(name)
        self._update(name, lambda r: r.update(disabled=disabled, changed=now()))

    def set_role(self, name: str, role: str) -> None:
        self._require(name)
        if role not in ROLES:
            raise BadUserNameError(f"role {role!r} is not one of {', '.join(ROLES)}", role=role)
        self._update(name, lambda r: r.update(role=role, changed=now()))
