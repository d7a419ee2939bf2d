#!/bin/bash
# PID 1 of the container's fresh namespaces: build the root (overlay of /), mount /proc, /sys,
# a minimal /dev, /run, a hybrid cgroup tree rooted at our cgroup namespace; pivot_root; exec systemd.
set -euo pipefail
mount --make-rprivate /
O=$CT_STATE/ovl
mkdir -p "$O"
mount -t tmpfs -o mode=755 tmpfs "$O"
mkdir "$O/u" "$O/w" "$O/m"
mount -t overlay -o lowerdir=/,upperdir="$O/u",workdir="$O/w" overlay "$O/m"
R=$O/m
mount -t tmpfs tmpfs "$R/work" 2>/dev/null || true    # the host's checkout is not the appliance's
mount -t tmpfs tmpfs "$R/tmp"
# Host services that make no sense in here (the test tools' daemons among them: the Slurm and
# monitoring tests start their own on private ports when they need them).
for u in postgresql.service getty@tty1.service console-getty.service serial-getty@ttyS0.service \
         apparmor.service munge.service slurmctld.service slurmd.service slurmdbd.service \
         mariadb.service prometheus.service prometheus-node-exporter.service; do
  ln -sf /dev/null "$R/etc/systemd/system/$u"
done
if [ -n "${CT_EXTRA:-}" ]; then tar -C "$CT_EXTRA" -cf - . | tar -C "$R" -xf - --keep-directory-symlink; fi
for pair in ${CT_BIND:-}; do
  src=${pair%%:*} dst=${pair#*:}
  mkdir -p "$R$dst"
  mount --bind "$src" "$R$dst"
done
mount -t proc proc "$R/proc"
cat /proc/sys/kernel/random/uuid > "$CT_STATE/boot-id"
mount --bind "$CT_STATE/boot-id" "$R/proc/sys/kernel/random/boot_id"   # journalctl -b works
mount -t sysfs -o ro sysfs "$R/sys"
mount -t tmpfs -o mode=755,nosuid tmpfs "$R/dev"
for n in null zero full random urandom tty; do touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"; done
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
touch "$R/dev/console"; mount --bind "$CT_STATE/console.log" "$R/dev/console"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=755 tmpfs "$R/sys/fs/cgroup"   # hybrid layout, rooted at our cgroupns
for c in memory pids devices; do mkdir "$R/sys/fs/cgroup/$c"; mount -t cgroup -o "$c" cgroup "$R/sys/fs/cgroup/$c"; done
mkdir "$R/sys/fs/cgroup/unified" "$R/sys/fs/cgroup/systemd"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup/unified"
mount -t cgroup -o none,name=systemd cgroup "$R/sys/fs/cgroup/systemd"
mount -o remount,ro,bind "$R/sys/fs/cgroup"
hostname sealfuse-ct
cd "$R"
mkdir -p "$R/.oldroot"
pivot_root . .oldroot   # not chroot: the kernel refuses user namespaces (PrivateUsers=) in a chroot
cd /
umount -l /.oldroot
exec /usr/bin/env -i container=unshare TERM=dumb /lib/systemd/systemd --log-target=journal-or-kmsg --show-status=no
