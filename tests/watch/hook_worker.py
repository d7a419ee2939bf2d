"""A watch worker for the daemon's tests: the real worker plus failure injection by target name.

`__abort__` aborts (a native crash), `__hang__` never returns, `__hog__` eats memory, `__slow__`
sleeps $SEALFUSE_TEST_SLOW_SECONDS (default 3) before the real swap. Run as a script; the tests'
daemon (watch_harness.py) starts it instead of `sealfuse.appliance.watch.worker`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from sealfuse.appliance.watch.worker import main


def inject(request: dict[str, Any]) -> None:
    """Fail the way the target's name asks."""
    name = Path(request["target"]).name
    if "__abort__" in name:
        os.abort()
    if "__hang__" in name:
        while True:
            time.sleep(3600)
    if "__hog__" in name:
        hog = []
        while True:  # touch every page so the memory is resident
            hog.append(bytearray(b"\1" * (64 * 1024 * 1024)))
            time.sleep(0.02)
    if "__slow__" in name:
        time.sleep(float(os.environ.get("SEALFUSE_TEST_SLOW_SECONDS", "3")))


if __name__ == "__main__":
    sys.exit(main(before_job=inject))
