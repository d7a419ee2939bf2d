"""`sealfuse watch` for the daemon's tests: the real command, with the failure-injecting worker.

    python tests/watch/watch_harness.py --spool ... (the options of `sealfuse watch`)
"""

from __future__ import annotations

import sys
from pathlib import Path

from sealfuse.appliance.watch_cli import watch

HOOK_WORKER = Path(__file__).with_name("hook_worker.py")

if __name__ == "__main__":
    watch.main(args=sys.argv[1:], prog_name="sealfuse watch",
               obj={"worker_command": [sys.executable, str(HOOK_WORKER)]})
