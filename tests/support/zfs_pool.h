// Test support for the vm tier's OpenZFS tests (tests/vm/run --modules zfs):
// why ZFS is unavailable, and a scratch pool on a sparse file.
#ifndef DMTHIN_TESTS_SUPPORT_ZFS_POOL_H_
#define DMTHIN_TESTS_SUPPORT_ZFS_POOL_H_

#include <cstdint>
#include <string>

namespace testsupport {

// "" when the tests can use ZFS here (root, /dev/zfs, the zpool command);
// otherwise why not (tests/run-tiers's reason, DMTHIN_ZFS_SKIP, when it did
// not load the modules).
std::string WhyNoZfs();

// A pool on a sparse file in the guest's tmpfs (`zpool create`, root
// dataset mountpoint=legacy; tests may exec, the driver never does);
// destroyed with everything in it with the object.
class ScratchPool {
 public:
  explicit ScratchPool(uint64_t bytes = 2ull << 30);
  ~ScratchPool();
  ScratchPool(const ScratchPool&) = delete;
  ScratchPool& operator=(const ScratchPool&) = delete;

  const std::string& name() const { return name_; }
  bool ok() const { return ok_; }

 private:
  std::string name_, file_;
  bool ok_ = false;
};

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_ZFS_POOL_H_
