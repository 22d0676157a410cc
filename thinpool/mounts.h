// Where a block device is mounted, from /proc/self/mountinfo (libmount), so
// an error about a busy device can say what holds it.
#ifndef DMTHIN_THINPOOL_MOUNTS_H_
#define DMTHIN_THINPOOL_MOUNTS_H_

#include <sys/types.h>

#include <string>
#include <vector>

namespace thinpool {

// Mount points of `dev` in this process's mount namespace (empty if none,
// or if mountinfo cannot be read).
std::vector<std::string> MountPointsOf(dev_t dev);

}  // namespace thinpool

#endif  // DMTHIN_THINPOOL_MOUNTS_H_
