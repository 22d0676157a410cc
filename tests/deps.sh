#!/usr/bin/env bash
# Installs every Debian package that dmthin's build, tests, benchmarks and VM
# tier need. Idempotent, and a fast no-op when everything is present.
set -euo pipefail

PACKAGES=(
  # build
  g++ clang lld make pkg-config
  ccache                         # Makefile: compiles of unchanged sources are cache hits
  libabsl-dev libblkid-dev libudev-dev libext2fs-dev libarchive-dev
  libsqlite3-dev libssl-dev libgtest-dev libgmock-dev nlohmann-json3-dev
  zlib1g-dev                     # gzip layers: zlib checks CRC-32 and length (libarchive does not)
  libmount-dev                   # thinpool: where a busy thin device is mounted
  libre2-dev                     # graph filters' ~= regexps (linear-time, Go syntax)
  libclang-rt-14-dev             # clang's sanitizer and libFuzzer runtimes
  # dmthin-snapshotter: gRPC/protobuf, CLI11, containerd's .proto files
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libcli11-dev
  golang-github-containerd-containerd-dev
  # containerd's snapshotter suite (Go, built offline) and the end-to-end tests
  golang-go containerd runc umoci
  # dmthin-docker-plugin: HTTP on a unix socket; its tests run a real dockerd
  libcpp-httplib-dev docker.io
  # its VolumeDriver role is also tested with podman (containers.conf volume_plugins)
  podman
  # tests and benchmarks: the real tools we check against
  util-linux e2fsprogs btrfs-progs lvm2 thin-provisioning-tools udev
  tar gzip zstd xz-utils debootstrap
  fio                            # tests/bench: graph_driver_bench, volume_fio_bench (volumes vs layers vs bind)
  xfsprogs                       # volumes: fs=xfs (mkfs.xfs, xfs_growfs), xfs project quota
  gnuplot-nox                    # tests/bench/graph_driver_bench.gp (docs/performance.md plot)
  time                           # tests/bench: a child's peak RSS (GNU time %M)
  # vm tier: QEMU, the initramfs, and the guest kernel's module tooling
  qemu-system-x86 busybox-static cpio kmod
  # zfs graph driver: libzfs_core/libzfs to link, zpool/zfs for the tests
  # (Debian contrib; the guest's modules come from zfs-dkms's source, built
  # by tests/vm/zfs-modules, never installed on the host)
  zfsutils-linux libzfslinux-dev
)

# OpenZFS is in Debian's contrib component: when apt knows no zfs-dkms, add a
# contrib entry for the suites of the machine's own Debian sources (same
# mirror, same keys; deb822 .sources or one-line sources.list).
add_contrib() {
  local out=/etc/apt/sources.list.d/dmthin-contrib.sources
  apt-cache show zfs-dkms >/dev/null 2>&1 && return 0
  [ -e "$out" ] && return 0
  local tmp
  tmp=$(mktemp)
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; ORS = "\n\n" }
         /Components:[^\n]*main/ && /debian-archive-keyring|URIs:[^\n]*debian/ && !/security/ {
           gsub(/Components: [^\n]*/, "Components: contrib"); print }' "$f" >> "$tmp"
  done
  if [ -f /etc/apt/sources.list ]; then
    awk '$1 == "deb" && $0 ~ / main/ && $0 !~ /security/ && $0 !~ /contrib/ {
           printf "Types: deb\nURIs: %s\nSuites: %s\nComponents: contrib\n\n", $2, $3 }' \
      /etc/apt/sources.list >> "$tmp"
  fi
  if [ -s "$tmp" ]; then
    "${SUDO[@]}" install -m 644 "$tmp" "$out"
    echo "deps: added Debian's contrib component ($out) for OpenZFS" >&2
  fi
  rm -f "$tmp"
}

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=()
fi
export DEBIAN_FRONTEND=noninteractive
add_contrib
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
