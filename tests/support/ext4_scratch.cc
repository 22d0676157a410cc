#include "tests/support/ext4_scratch.h"

#include <stdlib.h>
#include <sys/mount.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "tests/support/graph_tar.h"
#include "tests/support/process.h"

namespace testsupport {

bool TakesUserXattrs(const std::string& dir) {
  ScratchDir probe("xattr-probe", dir);
  std::string file = probe.Sub("f");
  WriteFileOrDie(file, "");
  return lsetxattr(file.c_str(), "user.dmthin-probe", "1", 1, 0) == 0;
}

Ext4Scratch::Ext4Scratch(const std::string& tag, uint64_t bytes) : dir_(tag), mnt_(dir_.Sub("mnt")) {
  std::string image = dir_.Sub("ext4.img");
  std::filesystem::create_directories(mnt_);
  for (const std::vector<std::string>& argv :
       {std::vector<std::string>{"truncate", "-s", std::to_string(bytes), image},
        std::vector<std::string>{"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
                                 image},
        std::vector<std::string>{"mount", "-o", "loop", image, mnt_}}) {
    RunResult r = Run(argv);
    if (!r.ok()) throw std::runtime_error(r.Describe());
  }
}

Ext4Scratch::~Ext4Scratch() {
  // A loop mount's device is freed (autoclear) when the last mount goes.
  if (::umount2(mnt_.c_str(), 0) != 0 && ::umount2(mnt_.c_str(), MNT_DETACH) != 0) {
    std::fprintf(stderr, "warning: unmounting %s failed\n", mnt_.c_str());
  }
}

UserXattrTmpdir::UserXattrTmpdir() {
  const char* tmp = getenv("TMPDIR");
  had_tmpdir_ = tmp != nullptr;
  if (had_tmpdir_) old_tmpdir_ = tmp;
  if (TakesUserXattrs(had_tmpdir_ && *tmp != '\0' ? old_tmpdir_ : "/tmp")) return;
  fs_ = std::make_unique<Ext4Scratch>("xattr-tmp");
  setenv("TMPDIR", fs_->path().c_str(), 1);
}

UserXattrTmpdir::~UserXattrTmpdir() {
  if (fs_ == nullptr) return;
  if (had_tmpdir_) {
    setenv("TMPDIR", old_tmpdir_.c_str(), 1);
  } else {
    unsetenv("TMPDIR");
  }
  fs_.reset();
}

}  // namespace testsupport
