// Test support for libgraph: scratch directories and filesystems, and the
// driver-independent conformance suite (cases from containerd's snapshotter
// testsuite and containers/storage's graphtest), reusable by any driver's
// test binary (host tier here, the devicemapper driver in the VM tier).
#ifndef DMTHIN_TESTS_SUPPORT_GRAPH_CONFORMANCE_H_
#define DMTHIN_TESTS_SUPPORT_GRAPH_CONFORMANCE_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "graph/driver.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"

namespace graph::testing {

// Runs `argv` (no shell), stdin from /dev/null, stdout+stderr captured into
// `output` if given. OK iff it exited 0.
absl::Status RunProgram(const std::vector<std::string>& argv,
                        std::string* output = nullptr);

// Scratch directories and their removal: the one implementation, shared with
// the tests that include tests/support/scratch_dir.h directly.
using testsupport::RemoveTree;
using testsupport::ScratchDir;

// A fresh btrfs filesystem: sparse image → mkfs.btrfs → loop device
// (LOOP_CONFIGURE with autoclear) → mounted at a unique directory. The
// destructor unmounts (lazily if busy), which frees the loop device, and
// removes the image and the directory.
class ScratchBtrfs {
 public:
  // Skips are the caller's business: returns FailedPrecondition with a reason
  // when the kernel lacks btrfs or loop, or mkfs.btrfs is missing.
  static absl::StatusOr<std::unique_ptr<ScratchBtrfs>> Create(uint64_t size_mb = 512);
  // The same with another filesystem: `mkfs` is the mkfs argv without the
  // image (e.g. {"mkfs.ext4", "-q", "-O", "quota,project"}), `data` the
  // mount options (e.g. "prjquota").
  static absl::StatusOr<std::unique_ptr<ScratchBtrfs>> CreateOf(
      const std::string& fstype, std::vector<std::string> mkfs, const std::string& data,
      uint64_t size_mb);
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
using testsupport::UniqueName;

// ------------------------------------------------------------ filesystems ---

// One step of building a tree (containerd's fstest appliers). Paths are
// relative to the tree root ("/etc/hosts" and "etc/hosts" are the same).
struct FsOp {
  enum Kind { kFile, kDir, kRemoveAll, kChown, kRename, kLink, kSymlink, kChmod };
  Kind kind;
  std::string path;
  std::string arg;  // kFile: content; kRename/kLink: new path; kSymlink: target
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
using Applier = std::vector<FsOp>;

FsOp CreateFile(const std::string& path, const std::string& content, mode_t mode);
FsOp CreateDir(const std::string& path, mode_t mode);
FsOp RemoveAll(const std::string& path);
FsOp Chown(const std::string& path, uid_t uid, gid_t gid);
FsOp Chmod(const std::string& path, mode_t mode);
FsOp Rename(const std::string& from, const std::string& to);
FsOp Link(const std::string& existing, const std::string& link);
FsOp Symlink(const std::string& target, const std::string& link);

// Applies `ops` in order under `root` (modes exactly as given: no umask).
absl::Status Apply(const Applier& ops, const std::string& root);

// Compares two trees entry by entry: type, permission bits (with setuid,
// setgid, sticky), owner, size and content of files, symlink targets,
// device numbers. Times and the roots' own metadata are not compared. The
// error names the first difference.
absl::Status CheckDirectoryEqual(const std::string& expected, const std::string& actual);

// Mounts `mounts` (as described by Driver::Mounts / LayerStore::Mounts) on
// `target`: "bind"/"rbind" binds (re-mounted read-only for "ro"); other
// types pass their options as mount data, with "ro"/"rw" etc. turned into
// flags. overlay data longer than a page is shortened by mounting from the
// lower dirs' common parent with relative paths.
absl::Status MountAll(const std::vector<MountSpec>& mounts, const std::string& target);
// Unmounts everything stacked on `target`.
absl::Status UnmountAll(const std::string& target);

// ----------------------------------------------------------- conformance ---

// A driver to run the conformance suite against.
struct ConformanceTarget {
  std::string name;    // test suite becomes "Conformance_<name>"
  std::string driver;  // registry name passed to graph::OpenDriver
  std::map<std::string, std::string> options;
  // Where per-test scratch directories go (the driver root lives there, so
  // its filesystem is what the driver sees); "" = $TMPDIR or /tmp. An error
  // skips every case with its message (e.g. no btrfs on this kernel).
  std::function<absl::StatusOr<std::string>()> scratch_parent;
  // Renaming a directory that came from a lower layer fails with EXDEV
  // (overlay without redirect_dir, aufs): the Rename case leaves that step
  // out, as containerd's suite does for overlayfs.
  bool lower_dir_rename_unsupported = false;
  // Layers for the deep-stack cases (containerd: 128; graphtest: 50).
  int deep_layers = 128;
  // Cases that fail on this driver because of a known, reported driver bug:
  // registered as DISABLED_<case> (gtest lists them; run them with
  // --gtest_also_run_disabled_tests). Keep the reason next to the list.
  std::vector<std::string> known_failures;
  // Per-case world the driver needs, given the case's base root (the
  // driver's root is <base>/<driver>): options added to `options` before
  // the driver opens (zfs: a fresh parent dataset), and what undoes it after
  // the driver's Cleanup. Either may be empty.
  std::function<absl::StatusOr<std::map<std::string, std::string>>(const std::string& base)>
      per_case_options;
  std::function<void(const std::string& base)> per_case_teardown;
};

// Registers one gtest per conformance case for `target`. Call from a
// static initialiser of the test binary (before RUN_ALL_TESTS).
void RegisterConformanceSuite(const ConformanceTarget& target);

// The names of the cases, in order.
std::vector<std::string> ConformanceCaseNames();

}  // namespace graph::testing

#endif  // DMTHIN_TESTS_SUPPORT_GRAPH_CONFORMANCE_H_
