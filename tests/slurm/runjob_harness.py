"""`sealfuse run-job` for the Slurm tests: the real command, held back first for targets named
`*__slow__*` while the file named by $SEALFUSE_TEST_HOLD_FILE (or that name + "-<target file
name>") exists (at most 10 minutes), so a
test can kill, cancel or time out a run that is really in flight.

    python tests/slurm/runjob_harness.py run-job --spool ... --job-id ...
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from sealfuse.appliance.runjob import job_dir, run_job

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["run-job"]:
        args = args[1:]
    spool, job_id = Path(args[args.index("--spool") + 1]), args[args.index("--job-id") + 1]
    hold = os.environ.get("SEALFUSE_TEST_HOLD_FILE")
    try:
        target = json.loads((job_dir(spool, job_id) / "request.json").read_text())["target"]
    except (OSError, ValueError, KeyError):
        target = ""
    if hold and "__slow__" in target:
        # held while HOLD, or HOLD-<target file name> for this job alone, exists
        holds = (hold, f"{hold}-{Path(target).name}")
        print(f"held: {job_id} pid {os.getpid()}", flush=True)
        deadline = time.monotonic() + 600
        while any(os.path.exists(h) for h in holds) and time.monotonic() < deadline:
            time.sleep(0.2)
    run_job.main(args=args, prog_name="sealfuse run-job")
