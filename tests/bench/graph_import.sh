#!/usr/bin/env bash
# tests/bench/graph_import.sh [RUNS]
#
# Import benchmark for the graph archive path: builds a real root filesystem
# tarball once (debootstrap --variant=minbase bookworm, tarred with GNU tar),
# then times graph::ApplyLayer and graphctl import against `tar -x` of the same file, on the
# build folder's filesystem and on a tmpfs (/dev/shm), and prints the
# overlay mount-time-vs-depth table. Needs root and the Debian mirror.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$repo"
BUILD=${BUILD:-build}
runs=${1:-5}
out="$BUILD/bench"
mkdir -p "$out"
if [ ! -s "$out/rootfs.tar" ]; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
  rm -rf "$out/rootfs"
  debootstrap --variant=minbase bookworm "$out/rootfs" "$mirror" > "$out/debootstrap.log" 2>&1
  tar --numeric-owner --xattrs -C "$out/rootfs" -cf "$out/rootfs.tar" .
  rm -rf "$out/rootfs"
fi
make -s "$BUILD/bench/graph_import_bench" "$BUILD/bench/graph_overlay_mount_bench" "$BUILD/bin/graphctl"
echo "== on $(df --output=fstype "$out" | tail -1) ($out)"
"$BUILD/bench/graph_import_bench" --runs "$runs" "$out/rootfs.tar"
shm=$(mktemp -d /dev/shm/graph-bench.XXXXXX)
trap 'rm -rf "$shm"' EXIT
cp "$out/rootfs.tar" "$shm/"
echo "== on tmpfs ($shm)"
"$BUILD/bench/graph_import_bench" --runs "$runs" "$shm/rootfs.tar"
echo "== overlay mount time vs stack depth"
"$BUILD/bench/graph_overlay_mount_bench" --runs "$runs"
