#!/bin/sh
# Where a devicemapper layer prepare's syscalls go (issue 17), vm tier:
#
#   tests/vm/run -- tests/bench/devmapper_prepare_strace.sh [ROUNDS]
#
# On a fresh devicemapper store (the driver's own loopback pool on the
# guest's tmpfs) with one imported image layer, each round traces, as fresh
# graphctl processes:
#   ls                        process start + store open (the baseline)
#   create --rw --no-init ID  containerd's Prepare: snapshot + activation
#   mount ID                  the first Get: mount of the layer's ext4
#   umount ID, rm ID
# with `strace -f -c` (counts and time per syscall) and prints, for the last
# round, every device-mapper ioctl, sync and mount of the create and the
# mount with its duration (`strace -f -T`). The bare kernel sequence of a
# prepare is 7 calls: DM_TARGET_MSG create_snap and set_transaction_id,
# DM_DEV_CREATE, DM_TABLE_LOAD, DM_DEV_SUSPEND (resume), mknod, mount.
# strace's own cost (ptrace stops, heavy under emulation) inflates every
# call: read the counts, and the times only against each other.
set -eu
rounds=${1:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
G="$here/build/bin/graphctl"
if [ ! -x "$G" ] || [ ! -x "$here/build/bin/dmthin" ]; then
  echo "build graphctl and dmthin first (make build/bin/graphctl build/bin/dmthin)" >&2
  exit 1
fi
command -v strace >/dev/null || { echo "strace is not installed" >&2; exit 1; }
work=$(mktemp -d /tmp/dm-prepare-strace.XXXXXX)
D="$here/build/bin/dmthin"
cleanup() {  # the store's mounts, then its pool (devices, loops, files)
  for mnt in $(grep -o " $work/[^ ]*" /proc/mounts | sort -r); do umount "$mnt" 2>/dev/null || true; done
  for inst in "$work"/store/*/instance; do
    [ -f "$inst" ] || continue
    "$D" --state-dir "$(dirname "$inst")/thinpool" pool destroy "graph$(cat "$inst")" --force >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
set -- --root "$work/store" --driver devicemapper --storage-opt dm.loopback=true --storage-opt dm.basesize=1G

mkdir -p "$work/l1/etc"
echo base > "$work/l1/etc/base"
tar -C "$work/l1" -cf "$work/l1.tar" .
parent=$("$G" "$@" import "$work/l1.tar")

summary() {  # strace -c output file -> "calls total_s" of the top syscalls
  awk '/^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+/ {printf "    %-16s %6d calls %9.6f s\n", $NF, $4, $2}' "$1" |
    sort -k2 -n -r | head -n 12
}

i=0
while [ "$i" -lt "$rounds" ]; do
  i=$((i + 1))
  for step in ls create mount umount rm; do
    case $step in
      ls) args="ls" ;;
      create) args="create --rw --no-init --parent $parent c$i" ;;
      mount) args="mount c$i" ;;
      umount) args="umount c$i" ;;
      rm) args="rm c$i" ;;
    esac
    # shellcheck disable=SC2086  # args is a list of words made above
    strace -f -c -o "$work/$step.$i.c" "$G" "$@" $args >/dev/null
    total=$(awk '$1 == "100.00" {print $4 " calls, " $2 " s"}' "$work/$step.$i.c")
    echo "round $i: graphctl $step: $total"
  done
done

# One more layer's create and mount (and ls), each call timed.
strace -f -T -y -o "$work/create.T" "$G" "$@" create --rw --no-init --parent "$parent" t >/dev/null
strace -f -T -y -o "$work/mount.T" "$G" "$@" mount t >/dev/null
strace -f -T -y -o "$work/ls.T" "$G" "$@" ls >/dev/null
for step in ls create mount; do
  echo
  echo "== graphctl $step (round $rounds): syscalls by count, strace -c"
  summary "$work/$step.$rounds.c"
  echo "== graphctl $step: device-mapper ioctls, syncs, locks, mounts: calls and time (strace -f -T -y)"
  # A call another thread interrupts is split in "<unfinished ...>" and
  # "<... NAME resumed>" lines: the time is on the second, the name on the first.
  awk '
    function key(line,   k, m) {
      if (match(line, /ioctl\([0-9]+(<[^>]*>)?, DM_[A-Z_]+/)) { m = substr(line, RSTART, RLENGTH); sub(/.*, /, "", m); return "ioctl " m }
      if (match(line, /(fdatasync|fsync|flock|fcntl)\([0-9]+<[^>]*>(, F_[A-Z_]*LKW?)?/)) {
        m = substr(line, RSTART, RLENGTH); k = m; sub(/\(.*/, "", k); sub(/>.*/, "", m); sub(/.*</, "", m)
        sub(/.*\//, "", m); gsub(/[0-9a-f]{12,}/, "*", m)
        if (k == "fcntl") { if (!match(line, /, F_[A-Z_]*LKW?/)) return ""; k = k " " substr(line, RSTART + 2, RLENGTH - 2) }
        return k " " m
      }
      if (match(line, /(mount|umount2|mknodat|mknod|mount_setattr|fsmount|fsopen)\(/)) { m = substr(line, RSTART, RLENGTH - 1); return m }
      return ""
    }
    {
      pid = $1
      if ($0 ~ /<unfinished \.\.\.>/) { pend[pid] = key($0); next }
      if ($0 ~ /resumed>/) { k = pend[pid]; delete pend[pid] } else k = key($0)
      if (k == "" || !match($0, /<[0-9.]+>$/)) next
      n[k]++; t[k] += substr($0, RSTART + 1, RLENGTH - 2)
    }
    END { for (k in n) printf "    %-44s %4d calls %9.6f s\n", k, n[k], t[k] }' "$work/$step.T" | sort
done
"$G" "$@" umount t >/dev/null
"$G" "$@" rm t >/dev/null
"$G" "$@" check
