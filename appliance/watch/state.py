"""The idempotency record: SQLite in the state dir, job id -> content key, state and attempts.

Survives restarts and SIGKILL (SQLite journaling, synchronous=FULL), so a re-dropped identical
job is recognised and a job interrupted too often is failed instead of retried forever.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "done", "failed", "duplicate")
# A key whose job is in one of these states makes a new drop with the same key a duplicate.
BLOCKING_STATES = ("queued", "running", "done")


class StateDB:
    """The jobs table: job id -> content key, state, attempts and reason."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, key TEXT, state TEXT NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0, reason TEXT, created REAL NOT NULL, updated REAL NOT NULL)")
        self.db.execute("CREATE INDEX IF NOT EXISTS jobs_key ON jobs(key)")
        path.chmod(0o600)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's row, or None."""
        row = self.db.execute("SELECT job_id, key, state, attempts, reason FROM jobs WHERE job_id=?",
                              (job_id,)).fetchone()
        return dict(zip(("job_id", "key", "state", "attempts", "reason"), row, strict=True)) if row else None

    def find_blocking(self, key: str, job_id: str) -> dict[str, Any] | None:
        """The earliest other job with this key that was done or is still pending."""
        marks = ",".join("?" * len(BLOCKING_STATES))
        row = self.db.execute(
            f"SELECT job_id, state FROM jobs WHERE key=? AND job_id<>? AND state IN ({marks})"
            " ORDER BY created LIMIT 1", (key, job_id, *BLOCKING_STATES)).fetchone()
        return {"job_id": row[0], "state": row[1]} if row else None

    def upsert(self, job_id: str, *, key: str | None = None, state: str, reason: str | None = None) -> None:
        """Insert the job or update its state, reason and (when given) key."""
        now = time.time()
        self.db.execute(
            "INSERT INTO jobs(job_id, key, state, reason, created, updated) VALUES (?,?,?,?,?,?)"
            " ON CONFLICT(job_id) DO UPDATE SET key=COALESCE(excluded.key, key), state=excluded.state,"
            " reason=excluded.reason, updated=excluded.updated",
            (job_id, key, state, reason, now, now))

    def start_attempt(self, job_id: str) -> int:
        """Count one more run of the job (state running); returns the attempts so far."""
        self.db.execute("UPDATE jobs SET attempts=attempts+1, state='running', updated=? WHERE job_id=?",
                        (time.time(), job_id))
        row = self.db.execute("SELECT attempts FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        return int(row[0]) if row else 0

    def forget(self, job_id: str) -> None:
        """A job handed back to the inbox (graceful stop): its next drop is not a duplicate."""
        self.db.execute("DELETE FROM jobs WHERE job_id=?", (job_id,))

    def counts(self) -> dict[str, int]:
        """Jobs per state."""
        return dict(self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def close(self) -> None:
        """Close the database."""
        self.db.close()
