#include "tests/support/zfs_pool.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace testsupport {

std::string WhyNoZfs() {
  if (geteuid() != 0) return "needs root";
  if (access("/dev/zfs", F_OK) != 0) {
    // tests/run-tiers says why it did not load the modules (not built here).
    const char* why = getenv("DMTHIN_ZFS_SKIP");
    if (why != nullptr && *why != '\0') return why;
    return "no /dev/zfs: run inside tests/vm/run --modules zfs";
  }
  if (!HaveProgram("zpool")) return "zpool not installed (make deps)";
  return "";
}

ScratchPool::ScratchPool(uint64_t bytes) {
  name_ = UniqueName("dmthinzt");
  file_ = "/tmp/" + name_ + ".img";
  int fd = open(file_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    ADD_FAILURE() << "sparse file " << file_ << ": " << strerror(errno);
  }
  if (fd >= 0) close(fd);
  ok_ = Run({"zpool", "create", "-O", "mountpoint=legacy", name_, file_}).ok();
  EXPECT_TRUE(ok_) << "zpool create " << name_;
}

ScratchPool::~ScratchPool() {
  if (ok_) {
    RunResult r = Run({"zpool", "destroy", "-f", name_});
    EXPECT_TRUE(r.ok()) << r.Describe() << r.out;
  }
  unlink(file_.c_str());
}

}  // namespace testsupport
