#!/bin/bash
# Power the container off (or SIGRTMIN+4 its PID 1), wait for its cgroups to empty, remove them.
# Env: CT_STATE as for up.sh. Exit 0 always (idempotent).
set -u
: "${CT_STATE:=/tmp/sealfuse-ct}"
CG=$(basename "$CT_STATE")
P1=$(cat "$CT_STATE/pid1" 2>/dev/null || true)
U=$(cat "$CT_STATE/unshare.pid" 2>/dev/null || true)
if [ -n "$P1" ] && [ -d "/proc/$P1" ]; then
  nsenter -t "$P1" -a systemctl poweroff --no-block 2>/dev/null || kill -s SIGRTMIN+4 "$P1" 2>/dev/null
fi
MEMBASE=/sys/fs/cgroup/memory$(awk -F: '$2=="memory"{print $3}' /proc/self/cgroup)
for _ in $(seq 150); do
  [ -z "$(cat "/sys/fs/cgroup/unified/$CG/cgroup.procs" 2>/dev/null)" ] && break
  sleep 0.2
done
# Still there after 30 s: kill what is left of this container (only its own cgroup).
for p in $(cat "/sys/fs/cgroup/unified/$CG/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
if [ -n "$U" ]; then kill -9 "$U" 2>/dev/null; fi
sleep 0.3
for d in "/sys/fs/cgroup/systemd/$CG" "/sys/fs/cgroup/unified/$CG" "/sys/fs/cgroup/pids/$CG" \
         "/sys/fs/cgroup/devices/$CG" "$MEMBASE/$CG"; do
  [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
done
rm -f "$CT_STATE/pid1" "$CT_STATE/unshare.pid" "$CT_STATE/boot-id"
echo down
