// Test support for libgraph: scratch directories and filesystems, and the
// driver-independent conformance suite (cases from containerd's snapshotter
// testsuite and containers/storage's graphtest), reusable by any driver's
// test binary (host tier here, the devicemapper driver in the VM tier).
#ifndef DMTHIN_TESTS_SUPPORT_GRAPH_CONFORMANCE_H_
#define DMTHIN_TESTS_SUPPORT_GRAPH_CONFORMANCE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace graph::testing {

// Runs `argv` (no shell), stdin from /dev/null, stdout+stderr captured into
// `output` if given. OK iff it exited 0.
absl::Status RunProgram(const std::vector<std::string>& argv,
                        std::string* output = nullptr);

// Removes `path` and everything below it without following symlinks; fails
// on mount points below it rather than descending into them. Missing is OK.
absl::Status RemoveTree(const std::string& path);

// A unique directory (under $TMPDIR or /tmp, or under `parent`), removed with
// everything in it on destruction.
class ScratchDir {
 public:
  static absl::StatusOr<std::unique_ptr<ScratchDir>> Create(
      const std::string& prefix, const std::string& parent = "");
  ~ScratchDir();
  const std::string& path() const { return path_; }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// A fresh btrfs filesystem: sparse image → mkfs.btrfs → loop device
// (LOOP_CONFIGURE with autoclear) → mounted at a unique directory. The
// destructor unmounts (lazily if busy), which frees the loop device, and
// removes the image and the directory.
class ScratchBtrfs {
 public:
  // Skips are the caller's business: returns FailedPrecondition with a reason
  // when the kernel lacks btrfs or loop, or mkfs.btrfs is missing.
  static absl::StatusOr<std::unique_ptr<ScratchBtrfs>> Create(uint64_t size_mb = 512);
  ~ScratchBtrfs();
  const std::string& path() const { return mountpoint_; }
  const std::string& loop_device() const { return loop_; }

 private:
  ScratchBtrfs() = default;
  std::unique_ptr<ScratchDir> dir_;
  std::string image_;
  std::string loop_;
  std::string mountpoint_;
  bool mounted_ = false;
};

// True if /proc/filesystems lists `fstype`.
bool KernelHasFilesystem(const std::string& fstype);

// A unique short name for devices, dirs and ids: "<prefix>-<pid>-<n>".
std::string UniqueName(const std::string& prefix);

}  // namespace graph::testing

#endif  // DMTHIN_TESTS_SUPPORT_GRAPH_CONFORMANCE_H_
