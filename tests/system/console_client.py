"""Inside the system test's container: sign in to the console, submit SOURCE and TARGET, follow
the job until it ends, download the result; print the job (with the download's sha256) as JSON."""

from __future__ import annotations

import hashlib
import json
import sys
import time
import urllib.request
import uuid


def main() -> int:
    base, source, target = sys.argv[1:4]
    req = urllib.request.Request(f"{base}/api/v1/login", method="POST",
                                 data=json.dumps({"username": "alice",
                                                  "password": "correct horse battery staple"}).encode(),
                                 headers={"Content-Type": "application/json"})
    token = json.load(urllib.request.urlopen(req, timeout=30))["token"]
    auth = {"Authorization": f"Bearer {token}"}
    boundary = uuid.uuid4().hex
    body = b""
    for role, path in (("source", source), ("target", target)):
        with open(path, "rb") as f:
            data = f.read()
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{role}\"; "
                 f"filename=\"{role}.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{base}/api/v1/jobs", data=body, method="POST",
                                 headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    job = json.load(urllib.request.urlopen(req, timeout=60))
    deadline = time.monotonic() + 240
    while job["state"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = json.load(urllib.request.urlopen(urllib.request.Request(
            f"{base}/api/v1/jobs/{job['ref']}", headers=auth), timeout=30))
    if job["state"] == "done":
        data = urllib.request.urlopen(urllib.request.Request(
            f"{base}/api/v1/jobs/{job['ref']}/result", headers=auth), timeout=60).read()
        job["downloaded_sha256"] = hashlib.sha256(data).hexdigest()
    print(json.dumps(job))
    return 0 if job["state"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
