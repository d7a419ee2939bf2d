"""The console's TOML configuration (`/etc/sealfuse/console.toml`), checked against a JSON schema.

A missing file means the defaults (127.0.0.1:8080, plain HTTP, the appliance's standard paths).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealfuse.appliance.console.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/sealfuse/console.toml")

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "console": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "listen": {"type": "string", "pattern": r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z.:-]+):[0-9]{1,5}$"},
                "tls_cert": {"type": "string", "minLength": 1},
                "tls_key": {"type": "string", "minLength": 1},
                "secure_cookies": {"type": "boolean"},
                "spool": {"type": "string", "minLength": 1},
                "state_dir": {"type": "string", "minLength": 1},
                "models_dir": {"type": "string", "minLength": 1},
                "share": {"type": "string", "minLength": 1},
                "max_upload_mb": {"type": "integer", "minimum": 1},
                "max_pixels": {"type": "integer", "minimum": 1},
                "retention_hours": {"type": "number", "minimum": 0},
                "session_hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 720},
                "allowed_networks": {"type": "array", "items": {"type": "string"}},
            },
        },
        "auth": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_failures": {"type": "integer", "minimum": 1, "maximum": 1000},
                "lockout_seconds": {"type": "number", "minimum": 1},
                "trusted_header": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"},
                "trusted_proxies": {"type": "array", "items": {"type": "string"}},
            },
        },
        "notify": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "webhooks": {"type": "array", "items": {"type": "string", "pattern": "^https?://"}},
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 120},
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20},
                "backoff_seconds": {"type": "number", "minimum": 0, "maximum": 3600},
                "smtp_host": {"type": "string", "minLength": 1},
                "smtp_port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "smtp_starttls": {"type": "boolean"},
                "mail_from": {"type": "string", "minLength": 3},
                "mail_to": {"type": "array", "items": {"type": "string", "minLength": 3}},
                "console_url": {"type": "string", "pattern": "^https?://"},
            },
        },
    },
}


@dataclass(frozen=True)
class ConsoleConfig:
    enabled: bool = False
    listen: str = "127.0.0.1:8080"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    secure_cookies: bool | None = None  # None: Secure when TLS is on
    spool: Path = Path("/var/lib/sealfuse/spool")
    state_dir: Path = Path("/var/lib/sealfuse/console")
    models_dir: Path = Path("/opt/sealfuse/current/models")
    share: Path | None = None
    max_upload_mb: int = 2048
    max_pixels: int = 40_000_000
    retention_hours: float = 168.0
    session_hours: float = 8.0
    allowed_networks: tuple[str, ...] = ()
    max_failures: int = 5
    lockout_seconds: float = 900.0
    trusted_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    webhooks: tuple[str, ...] = ()
    notify_timeout_seconds: float = 5.0
    notify_max_attempts: int = 5
    notify_backoff_seconds: float = 2.0
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_starttls: bool = False
    mail_from: str | None = None
    mail_to: tuple[str, ...] = ()
    console_url: str | None = None
    source_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def cookies_secure(self) -> bool:
        return self.tls if self.secure_cookies is None else self.secure_cookies

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.jsonl"


def _problems(data: Any) -> list[str]:
    from sealfuse.appliance.watch.config import StrictValidator

    v = StrictValidator(CONFIG_SCHEMA)
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}"
            for e in sorted(v.iter_errors(data), key=lambda e: list(e.absolute_path))]


def load_config(path: Path | None, **overrides: Any) -> ConsoleConfig:
    """Read and check `path` (a missing file means the defaults); `overrides` win over the file."""
    data: dict[str, Any] = {}
    if path is not None and os.path.lexists(path):
        from sealfuse.appliance.watch.config import read_config_file

        try:
            data = tomllib.loads(read_config_file(path, "console config", ConfigError))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}", path=str(path)) from exc
    problems = _problems(data)
    if problems:
        raise ConfigError(f"{path} is invalid: " + "; ".join(problems), path=str(path), problems=problems)
    c, a, n = data.get("console", {}), data.get("auth", {}), data.get("notify", {})
    kw: dict[str, Any] = {}
    for key in ("enabled", "listen", "secure_cookies", "max_upload_mb", "max_pixels", "retention_hours",
                "session_hours"):
        if key in c:
            kw[key] = c[key]
    for key in ("tls_cert", "tls_key", "spool", "state_dir", "models_dir", "share"):
        if key in c:
            kw[key] = Path(c[key])
    if "allowed_networks" in c:
        kw["allowed_networks"] = tuple(c["allowed_networks"])
    for key in ("max_failures", "lockout_seconds", "trusted_header"):
        if key in a:
            kw[key] = a[key]
    if "trusted_proxies" in a:
        kw["trusted_proxies"] = tuple(a["trusted_proxies"])
    mapping = {"webhooks": "webhooks", "timeout_seconds": "notify_timeout_seconds",
               "max_attempts": "notify_max_attempts", "backoff_seconds": "notify_backoff_seconds",
               "smtp_host": "smtp_host", "smtp_port": "smtp_port", "smtp_starttls": "smtp_starttls",
               "mail_from": "mail_from", "mail_to": "mail_to", "console_url": "console_url"}
    for key, attr in mapping.items():
        if key in n:
            kw[attr] = tuple(n[key]) if isinstance(n[key], list) else n[key]
    kw.update({k: v for k, v in overrides.items() if v is not None})
    cfg = ConsoleConfig(**kw, source_file=str(path) if path else None)
    _check(cfg, path)
    return cfg


def _check(cfg: ConsoleConfig, path: Path | None) -> None:
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ConfigError(f"{path}: console.tls_cert and console.tls_key go together", path=str(path))
    for net in (*cfg.allowed_networks, *cfg.trusted_proxies):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{path}: {net!r} is not an IP address or network: {exc}", path=str(path)) from exc
    if cfg.trusted_header and not cfg.trusted_proxies:
        raise ConfigError(f"{path}: auth.trusted_header needs auth.trusted_proxies (the proxy's addresses)",
                          path=str(path))
    if cfg.mail_to and not (cfg.smtp_host and cfg.mail_from):
        raise ConfigError(f"{path}: notify.mail_to needs notify.smtp_host and notify.mail_from", path=str(path))
    # --listen overrides the file after the schema: the same pattern applies (an empty host would
    # bind every interface; a missing port was a ValueError traceback)
    listen_pattern = CONFIG_SCHEMA["properties"]["console"]["properties"]["listen"]["pattern"]
    if not re.fullmatch(listen_pattern, cfg.listen):
        raise ConfigError(f"{path}: listen address {cfg.listen!r} is not HOST:PORT", path=str(path),
                          listen=cfg.listen)
    _host, port = cfg.host_port
    if not 0 <= port <= 65535:
        raise ConfigError(f"{path}: console.listen port {port} is out of range", path=str(path))
