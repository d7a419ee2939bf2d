#!/usr/bin/env bash
# Set up a development/test machine: system tools (when root on Debian/Ubuntu) and .venv with
# sealfuse and everything its tests need (CPU build of ONNX Runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${SEALFUSE_SKIP_APT:-}" ]; then
  # openssh-client: ssh-keygen -Y verify (auditor interop); openssl: pkeyutl -rawin;
  # apparmor: apparmor_parser for the profile gate; python3-venv: release venvs from /usr/bin/python3;
  # util-linux/iproute2: unshare and ip for the no-network tests; systemd: the system tests;
  # slurm-wlm/munge: the real single-node Slurm of the cluster tests (slurmdbd/mariadb-server: its
  # accounting, for sacct); prometheus (+promtool) and prometheus-node-exporter: the monitoring tests.
  need=""
  for c in ssh-keygen:openssh-client openssl:openssl apparmor_parser:apparmor unshare:util-linux \
           ip:iproute2 systemd-analyze:systemd slurmctld:slurm-wlm munged:munge slurmdbd:slurmdbd \
           mariadbd:mariadb-server \
           promtool:prometheus prometheus-node-exporter:prometheus-node-exporter; do
    PATH=$PATH:/usr/sbin command -v "${c%%:*}" >/dev/null || need="$need ${c##*:}"
  done
  /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need="$need python3-venv"
  # chromium: the console's browser tests (Playwright drives Debian's build; no browser download)
  command -v chromium >/dev/null || need="$need chromium"
  if [ -n "$need" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >/dev/null
  fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -U pip
.venv/bin/python -m pip install -q -e '.[all,test]'
# insightface declares opencv-python; sealfuse runs on the headless build only.
if .venv/bin/python -m pip show -q opencv-python >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -q -y opencv-python
  .venv/bin/python -m pip install -q --force-reinstall --no-deps opencv-python-headless
fi
# The starter models (BlazeFace, FaceMesh; Apache-2.0) out of the pinned mediapipe wheel, every
# digest checked, into the default models directory ($SEALFUSE_MODELS_DIR or ~/.local/share/...).
.venv/bin/sealfuse models fetch-starter
