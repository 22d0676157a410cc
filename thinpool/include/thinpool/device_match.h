// Which registered pool a block device belongs to: what udev asks when a
// device appears (udev-rules/69-dmthin.rules → `dmthin udev match`).
#ifndef DMTHIN_THINPOOL_DEVICE_MATCH_H_
#define DMTHIN_THINPOOL_DEVICE_MATCH_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "base/export.h"
#include "thinpool/state_dir.h"

DMTHIN_API_BEGIN
namespace thinpool {

struct BackingMatch {
  std::string pool;
  std::string role;  // "data" or "metadata"
  // Every backing device of the pool is present: for a file-backed pool both
  // files are attached to loop devices, for a device-backed pool both
  // devices exist. Activation started now would not attach anything itself.
  bool complete = false;
};

// The pool whose data or metadata `device` is: a loop device is matched by
// its backing file (same inode as the registered file), a block device by
// device number. nullopt when it belongs to no registered pool.
absl::StatusOr<std::optional<BackingMatch>> MatchBackingDevice(StateDir& state,
                                                               const std::string& device);

}  // namespace thinpool
DMTHIN_API_END

#endif  // DMTHIN_THINPOOL_DEVICE_MATCH_H_
