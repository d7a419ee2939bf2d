"""Benchmark: `verify_bundle` throughput on ~1 GB of payload against `sha256sum` of the same files.

Builds and signs a bundle of random "model" files in a temp dir (deleted afterwards), warms the
page cache, then times each side (best of --repeat) and prints MB/s and the ratio (goal >= 0.9).
Usage: .venv/bin/python bench/verify.py [--mib 1024] [--files 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealfuse.bundle.build import BuildInputs, build_bundle
from sealfuse.bundle.sign import sign_bundle
from sealfuse.verifier import verify_bundle
from sealfuse.verifier.trust import TrustedKey, make_trust


def _write_random(path: Path, size: int) -> None:
    chunk = 16 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def _best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=1024, help="total payload MiB (default 1024)")
    ap.add_argument("--files", type=int, default=4, help="number of model files (default 4)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side, best taken")
    args = ap.parse_args()
    sha256sum = shutil.which("sha256sum")
    if sha256sum is None:
        raise SystemExit("sha256sum not found")
    with tempfile.TemporaryDirectory(prefix="sealfuse-bench-") as tmp_name:
        tmp = Path(tmp_name)
        models = tmp / "models"
        models.mkdir()
        per_file = (args.mib << 20) // args.files
        files = []
        for i in range(args.files):
            path = models / f"bench_{i}.onnx"
            _write_random(path, per_file)
            files.append(path)
        key = Ed25519PrivateKey.generate()
        trust = make_trust("sealfuse", [TrustedKey.from_public(key.public_key())], 1)
        t0 = time.perf_counter()
        result = build_bundle(BuildInputs(
            version="1.0.0", out_dir=tmp / "out", models_dir=models, units_dir=None,
            hardening_dir=None, licences={p.name: "benchmark data" for p in files},
            source_date_epoch=1_767_225_600))
        build_s = time.perf_counter() - t0
        sign_bundle(result.path, key)
        bundle_bytes = result.path.stat().st_size
        payload = sum(p.stat().st_size for p in files)

        def run_sha256sum() -> None:
            subprocess.run([sha256sum, *map(str, files)], check=True, stdout=subprocess.DEVNULL)

        def run_verify() -> None:
            verify_bundle(result.path, trust)

        openssl = shutil.which("openssl")

        def run_openssl() -> None:
            assert openssl is not None
            subprocess.run([openssl, "dgst", "-sha256", *map(str, files)], check=True,
                           stdout=subprocess.DEVNULL)

        run_sha256sum()  # warm the page cache for both inputs
        run_verify()
        t_sum = _best(run_sha256sum, args.repeat)
        t_ver = _best(run_verify, args.repeat)
        t_ossl = _best(run_openssl, args.repeat) if openssl else None
        mb = 1e6
        sum_rate = payload / t_sum / mb
        ver_rate = bundle_bytes / t_ver / mb
        print(f"payload {payload / mb:.0f} MB in {args.files} files; bundle {bundle_bytes / mb:.0f} MB;"
              f" build {build_s:.1f} s")
        print(f"sha256sum (baseline)  {t_sum:6.3f} s  {sum_rate:8.1f} MB/s")
        print(f"sealfuse verify       {t_ver:6.3f} s  {ver_rate:8.1f} MB/s")
        print(f"ratio verify/sha256sum {ver_rate / sum_rate:.2f}x (goal >= 0.90x)")
        if t_ossl is not None:  # a second, faster C baseline (OpenSSL's SHA-256, SHA-NI if any)
            ossl_rate = payload / t_ossl / mb
            print(f"openssl dgst -sha256  {t_ossl:6.3f} s  {ossl_rate:8.1f} MB/s; "
                  f"ratio verify/openssl {ver_rate / ossl_rate:.2f}x")


if __name__ == "__main__":
    main()
