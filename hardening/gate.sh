#!/bin/bash
# sealfuse security gate: every unit in UNITS_DIR, alone and with each drop-in in DROPINS_DIR
# (*.conf) applied, must score exposure <= MAX under `systemd-analyze security --offline=yes`,
# and `systemd-analyze verify` must print nothing on stderr (it exits 0 on unknown keys).
#
# Usage: gate.sh [UNITS_DIR] [DROPINS_DIR]      (defaults: ../systemd and this directory)
# Env:   SEALFUSE_GATE_MAX_EXPOSURE=1.0         the highest exposure that passes
#        A unit may state its own, higher or lower, in a line `# gate-max-exposure: X` (the
#        console, which must serve HTTP, states 2.0); it then applies with every drop-in too.
# Output: one line per check, "PASS|FAIL <unit>[+<drop-in>] exposure=<x.x>" or "... verify: <stderr>"
# Exit:  0 every check passed, 1 a check failed, 2 usage error or systemd-analyze missing.
#
# The units are checked inside a scratch root (--root): ExecStart= binaries become stubs
# there, since `verify` insists they exist, and systemd's own units are copied in so that
# dependencies such as sysinit.target resolve. Nothing outside the scratch root is touched.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
UNITS=${1:-$HERE/../systemd}
DROPINS=${2:-$HERE}
MAX=${SEALFUSE_GATE_MAX_EXPOSURE:-1.0}
command -v systemd-analyze >/dev/null || { echo "gate: systemd-analyze not found" >&2; exit 2; }
[ -d "$UNITS" ] || { echo "gate: $UNITS is not a directory" >&2; exit 2; }

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/sealfuse-gate.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/usr/lib/systemd" "$ROOT/etc/systemd/system"
for d in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$d" ]; then cp -a "$d" "$ROOT/usr/lib/systemd/"; break; fi
done

stub_execs() {  # create every ExecStart*/ExecStop* binary of a unit as a stub in the scratch root
  sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "$1" | while read -r exe; do
    case $exe in /*) mkdir -p "$ROOT$(dirname "$exe")"; [ -e "$ROOT$exe" ] || printf '#!/bin/sh\n' > "$ROOT$exe"; chmod 0755 "$ROOT$exe";; esac
  done
}

unit_max() {  # the unit's own `# gate-max-exposure: X`, else MAX
  local own
  own=$(sed -n 's/^# *gate-max-exposure: *\([0-9.]*\).*/\1/p' "$1" | head -1)
  echo "${own:-$MAX}"
}

check() {  # $1 unit name, $2 label, $3 max: verify + security in the scratch root as it stands
  local unit=$1 label=$2 max=$3 err out score rc=0 threshold
  # systemd-analyze's --threshold compares 10x the printed exposure (1.0 -> 10)
  threshold=$(awk -v m="$max" 'BEGIN { printf "%d", m * 10 + 0.5 }')
  err=$(systemd-analyze verify --root="$ROOT" "$ROOT/etc/systemd/system/$unit" 2>&1 >/dev/null) || true
  if [ -n "$err" ]; then
    echo "FAIL $label verify: $(echo "$err" | tr '\n' ' ')"; rc=1
  fi
  out=$(systemd-analyze security --offline=yes --root="$ROOT" --threshold="$threshold" "$unit" 2>&1) || rc=1
  score=$(echo "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' | tail -1)
  if [ -z "$score" ]; then
    echo "FAIL $label security: no score: $(echo "$out" | tail -3 | tr '\n' ' ')"; return 1
  fi
  if [ "$rc" -eq 0 ]; then echo "PASS $label exposure=$score"; else echo "FAIL $label exposure=$score (max $max)"; fi
  return $rc
}

status=0 n=0
for unit_path in "$UNITS"/*.service; do
  [ -e "$unit_path" ] || continue
  unit=$(basename "$unit_path")
  cp "$unit_path" "$ROOT/etc/systemd/system/$unit"
  stub_execs "$unit_path"
  n=$((n + 1))
  max=$(unit_max "$unit_path")
  check "$unit" "$unit" "$max" || status=1
  for conf in "$DROPINS"/*.conf; do
    [ -e "$conf" ] || continue
    mkdir -p "$ROOT/etc/systemd/system/$unit.d"
    cp "$conf" "$ROOT/etc/systemd/system/$unit.d/"
    check "$unit" "$unit+$(basename "$conf")" "$max" || status=1
    rm -f "$ROOT/etc/systemd/system/$unit.d/$(basename "$conf")"
  done
done
[ "$n" -gt 0 ] || { echo "gate: no *.service in $UNITS" >&2; exit 2; }
exit $status
