// Test support: a scratch directory on ext4 where /tmp cannot hold user.*
// xattrs. The vm tier's guest has /tmp on tmpfs, which refuses them before
// Linux 6.6; the test image (tests/support/oci_image) sets one, and
// containerd's overlayfs snapshotter copies it into its own directories.
#ifndef DMTHIN_TESTS_SUPPORT_EXT4_SCRATCH_H_
#define DMTHIN_TESTS_SUPPORT_EXT4_SCRATCH_H_

#include <cstdint>
#include <memory>
#include <string>

#include "tests/support/scratch_dir.h"

namespace testsupport {

// True if a file under `dir` takes a user.* xattr.
bool TakesUserXattrs(const std::string& dir);

// An ext4 filesystem on a sparse file (loop-mounted, `bytes` large) under a
// ScratchDir of `tag`. The filesystem is unmounted and the loop device freed
// when it goes. Throws std::runtime_error when it cannot be made.
class Ext4Scratch {
 public:
  explicit Ext4Scratch(const std::string& tag, uint64_t bytes = 16ull << 30);
  ~Ext4Scratch();
  Ext4Scratch(const Ext4Scratch&) = delete;
  Ext4Scratch& operator=(const Ext4Scratch&) = delete;

  // The mounted filesystem's root.
  const std::string& path() const { return mnt_; }

 private:
  ScratchDir dir_;
  std::string mnt_;
};

// While it lives, TMPDIR names an Ext4Scratch when /tmp (or TMPDIR) takes no
// user.* xattrs, so ScratchDirs made meanwhile can hold them; TMPDIR is
// restored when it goes. Does nothing where TMPDIR takes them.
class UserXattrTmpdir {
 public:
  UserXattrTmpdir();
  ~UserXattrTmpdir();
  UserXattrTmpdir(const UserXattrTmpdir&) = delete;
  UserXattrTmpdir& operator=(const UserXattrTmpdir&) = delete;

 private:
  std::unique_ptr<Ext4Scratch> fs_;
  bool had_tmpdir_ = false;
  std::string old_tmpdir_;
};

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_EXT4_SCRATCH_H_
