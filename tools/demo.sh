#!/usr/bin/env bash
# make demo: a narrated end-to-end session with dmthin — a pool on sparse
# files, a thin device with ext4, files written, a snapshot, the origin
# changed, the snapshot still holding the old files, pool status before and
# after — then everything cleaned up. Runs natively where the kernel has
# dm-thin, otherwise inside the tests/vm VM.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd -P)
BUILD=${BUILD:-build}
dmthin_bin="$repo/$BUILD/bin/dmthin"
[ -x "$dmthin_bin" ] || { echo "demo: $dmthin_bin is missing: run 'make' first" >&2; exit 1; }

have_dm_thin() {
  [ "$(id -u)" -eq 0 ] || return 1
  [ -e /dev/mapper/control ] || modprobe dm-thin-pool 2>/dev/null || return 1
  [ -e /dev/mapper/control ] || return 1
  modprobe dm-thin-pool 2>/dev/null || grep -qw thin-pool /proc/modules 2>/dev/null ||
    "$dmthin_bin" dm ls >/dev/null 2>&1
}

if [ "${1:-}" != --here ]; then
  if have_dm_thin; then
    echo "demo: this kernel has device-mapper thin provisioning: running natively"
    exec "$0" --here
  fi
  echo "demo: this kernel ($(uname -r)) has no device-mapper: running inside the tests/vm VM"
  echo "      (Debian's stock kernel under QEMU; the first run downloads it)"
  exec "$repo/tests/vm/run" --timeout 600 -- "$0" --here
fi

work=$(mktemp -d /tmp/dmthin-demo.XXXXXX)
state="$work/state"
mnt="$work/mnt"
snapmnt="$work/snap"
pool="demo$$"
mkdir -p "$mnt" "$snapmnt"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
dmthin() { "$dmthin_bin" --state-dir "$state" "$@"; }

cleanup() {
  set +e
  umount "$mnt" 2>/dev/null
  umount "$snapmnt" 2>/dev/null
  if [ -e "$state/registry.db" ]; then
    "$dmthin_bin" --state-dir "$state" pool destroy "$pool" --force >/dev/null 2>&1
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step "A pool on sparse files: 2 GiB of data, metadata sized by the kernel's guide"
printf '$ dmthin pool create %s --data-size 2G\n' "$pool"
dmthin pool create "$pool" --data-size 2G
ls -ls "$state/$pool" 2>/dev/null || ls -lsR "$state" | sed -n '1,12p'
echo "(sparse: the files use almost no disk until thin devices write to them)"

step "Pool status before"
printf '$ dmthin pool status %s\n' "$pool"
dmthin pool status "$pool"

step "A 1 GiB thin device with ext4 (made in-process with libext2fs)"
printf '$ dmthin thin create %s base --size 1G --mkfs ext4\n' "$pool"
dmthin thin create "$pool" base --size 1G --mkfs ext4
base_dev=$(dmthin --json thin info "$pool" base | sed -n 's/.*"path": "\(.*\)".*/\1/p')
run mount "$base_dev" "$mnt"
echo "version 1 of the config" > "$mnt/config.txt"
mkdir "$mnt/data" && seq 1 1000 > "$mnt/data/numbers"
run ls -l "$mnt"
run cat "$mnt/config.txt"
run umount "$mnt"

step "Snapshot base as snap1 (base is suspended for the instant of create_snap)"
printf '$ dmthin thin snapshot %s base snap1\n' "$pool"
dmthin thin snapshot "$pool" base snap1
snap_dev=$(dmthin --json thin info "$pool" snap1 | sed -n 's/.*"path": "\(.*\)".*/\1/p')

step "Change the origin: new config, numbers deleted"
run mount "$base_dev" "$mnt"
echo "version 2 of the config" > "$mnt/config.txt"
rm -r "$mnt/data"
run ls -l "$mnt"
run cat "$mnt/config.txt"
run umount "$mnt"

step "The snapshot still has the old files"
run mount -o ro "$snap_dev" "$snapmnt"
run ls -l "$snapmnt"
run cat "$snapmnt/config.txt"
echo "numbers: $(wc -l < "$snapmnt/data/numbers") lines"
grep -q "version 1" "$snapmnt/config.txt" || { echo "demo: the snapshot lost the old contents" >&2; exit 1; }
run umount "$snapmnt"

step "Thin devices and pool status after"
printf '$ dmthin thin list %s\n' "$pool"
dmthin thin list "$pool"
printf '$ dmthin pool status %s\n' "$pool"
dmthin pool status "$pool"

step "Clean up"
printf '$ dmthin thin delete %s snap1\n' "$pool"
dmthin thin delete "$pool" snap1
printf '$ dmthin pool destroy %s --force\n' "$pool"
dmthin pool destroy "$pool" --force
echo
echo "demo: done"
