#!/usr/bin/env bash
# Installs every Debian package that dmthin's build, tests, benchmarks and VM
# tier need. Idempotent, and a fast no-op when everything is present.
set -euo pipefail

PACKAGES=(
  # build
  g++ clang lld make pkg-config
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
  golang-go containerd runc skopeo umoci
  # dmthin-docker-plugin: HTTP on a unix socket; its tests run a real dockerd
  libcpp-httplib-dev docker.io
  # its VolumeDriver role is also tested with podman (containers.conf volume_plugins)
  podman
  # tests and benchmarks: the real tools we check against
  util-linux e2fsprogs btrfs-progs lvm2 thin-provisioning-tools udev
  tar gzip zstd xz-utils fio debootstrap
  xfsprogs                       # volumes: fs=xfs (mkfs.xfs, xfs_growfs), xfs project quota
  gnuplot-nox                    # tests/bench/graph_driver_bench.gp (docs/performance.md plot)
  time                           # tests/bench: a child's peak RSS (GNU time %M)
  # vm tier: QEMU, the initramfs, and the guest kernel's module tooling
  qemu-system-x86 busybox-static cpio kmod
)

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
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
