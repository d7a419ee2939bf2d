#!/bin/bash
# Boot a real systemd as PID 1 in fresh pid/mount/uts/ipc/net/cgroup namespaces, on a throw-away
# overlay of this machine's root (no nspawn, no image, no network). Prints "pid1=<pid> state=<s>".
# Env: CT_STATE  directory for the pid file and logs (default /tmp/sealfuse-ct)
#      CT_EXTRA  a tree copied over / inside the container (optional)
#      CT_BIND   space-separated host:container directory pairs bind-mounted inside (optional)
# Exit: 0 booted (running or degraded), 1 systemd did not come up within ~20 s.
# One container at a time per CT_STATE; the cgroup is named after CT_STATE's basename.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
: "${CT_STATE:=/tmp/sealfuse-ct}"
CG=$(basename "$CT_STATE")
mkdir -p "$CT_STATE"
: > "$CT_STATE/console.log"
MEMBASE=/sys/fs/cgroup/memory$(awk -F: '$2=="memory"{print $3}' /proc/self/cgroup)
CGDIRS="/sys/fs/cgroup/systemd/$CG /sys/fs/cgroup/unified/$CG /sys/fs/cgroup/pids/$CG /sys/fs/cgroup/devices/$CG $MEMBASE/$CG"
for d in $CGDIRS; do mkdir -p "$d"; done
# Move ourselves into the new cgroups, then become unshare; $! is therefore unshare's pid.
setsid bash -c "for d in $CGDIRS; do echo \$\$ > \$d/cgroup.procs; done
  exec env CT_STATE='$CT_STATE' CT_EXTRA='${CT_EXTRA:-}' CT_BIND='${CT_BIND:-}' \
    unshare --pid --fork --mount --uts --ipc --net --cgroup '$HERE/init.sh'" \
  >"$CT_STATE/unshare.log" 2>&1 </dev/null &
U=$!
P1="" st=""
for _ in $(seq 100); do
  # is-system-running exits non-zero for every state but "running" (degraded included), so its
  # output, not its exit status, decides.
  if P1=$(pgrep -P "$U" 2>/dev/null) && [ "$(cat "/proc/$P1/comm" 2>/dev/null)" = systemd ]; then
    st=$(nsenter -t "$P1" -a systemctl is-system-running 2>/dev/null || true)
    case $st in running|degraded) break;; esac
  fi
  sleep 0.2
done
echo "$U" > "$CT_STATE/unshare.pid"
echo "$P1" > "$CT_STATE/pid1"
echo "pid1=$P1 state=$st"
case $st in running|degraded) exit 0;; *) exit 1;; esac
