"""The supervised worker process: loads the models once, then runs jobs sent as JSON lines on stdin.

Protocol (one JSON object per line): daemon -> worker `init`, then `job`s; worker -> daemon `ready`
(or `fatal`), `progress`, and one `result` per job. Core dumps are off (RLIMIT_CORE=0), the
worker dies with its parent (PR_SET_PDEATHSIG) and leaves SIGTERM to the daemon.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TUPLE_FIELDS = ("frame_processors", "face_mask_types", "face_mask_regions", "face_mask_padding",
                "execution_providers")


def harden_process() -> None:
    """No core files, private umask, die with the daemon, leave SIGTERM/SIGINT to the daemon."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.umask(0o077)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE=0: no core, no ptrace by peers
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def to_options_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """JSON options -> SwapOptions keyword arguments (tuples and paths restored)."""
    out: dict[str, Any] = {}
    for k, v in opts.items():
        if k in TUPLE_FIELDS and isinstance(v, list):
            v = tuple(v)
        if k in ("models_dir", "reference_face_image") and v is not None:
            v = Path(v)
        if k == "face_map" and isinstance(v, list):
            v = tuple((Path(ref), Path(src)) for ref, src in v)
        out[k] = v
    return out


def _send(out: IO[str], msg: dict[str, Any]) -> None:
    out.write(json.dumps(msg, default=str) + "\n")
    out.flush()


def main(before_job: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Serve jobs until stdin closes. `before_job` (tests only) sees each job request first."""
    harden_process()
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # native libraries that print to stdout must not corrupt the protocol
    sys.stdout = sys.stderr
    line = sys.stdin.readline()
    if not line:
        return 0
    init = json.loads(line)
    from sealfuse.engine import Engine, EngineError, ProvenanceConfig, SwapOptions

    t0 = time.monotonic()
    try:
        engine = Engine(SwapOptions(**to_options_kwargs(init.get("options", {}))),
                        provenance=ProvenanceConfig.from_dict(init.get("provenance")))
    except EngineError as exc:
        _send(proto, {"op": "fatal", "error": exc.to_dict()})
        return 3
    except Exception as exc:  # a bug or an unusable install: tell the daemon, then exit
        _send(proto, {"op": "fatal", "error": {"reason": "worker_init_failed", "message": repr(exc),
                                               "evidence": {"traceback": traceback.format_exc()}}})
        return 3
    _send(proto, {"op": "ready", "pid": os.getpid(), "load_seconds": round(time.monotonic() - t0, 3)})

    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("op") != "job":
            continue
        job_id = msg["job_id"]

        def progress(info: dict[str, Any], job_id: str = job_id) -> None:
            _send(proto, {"op": "progress", "job_id": job_id, "info": info})

        started = time.monotonic()
        try:
            if before_job is not None:
                before_job(msg)
            opts = engine.options.with_(**to_options_kwargs(msg.get("options", {})))
            report = engine.swap_file(Path(msg["source"]), Path(msg["target"]), Path(msg["output"]), opts,
                                      progress=progress, job_id=job_id)
            _send(proto, {"op": "result", "job_id": job_id, "ok": True, "report": report,
                          "seconds": time.monotonic() - started})
        except EngineError as exc:
            _send(proto, {"op": "result", "job_id": job_id, "ok": False, "error": exc.to_dict(),
                          "seconds": time.monotonic() - started})
        except Exception as exc:
            _send(proto, {"op": "result", "job_id": job_id, "ok": False, "seconds": time.monotonic() - started,
                          "error": {"error": type(exc).__name__, "reason": "internal_error",
                                    "message": repr(exc), "evidence": {"traceback": traceback.format_exc()}}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
