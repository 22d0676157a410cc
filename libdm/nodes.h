// Device nodes under /dev/mapper, made by udev (we wait) or by us.
// Private to libdm.
#ifndef DMTHIN_LIBDM_NODES_H_
#define DMTHIN_LIBDM_NODES_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "libdm/types.h"

struct udev;
struct udev_monitor;

namespace dm::internal {

// udev runs: /run/udev/control exists and a systemd-udevd/udevd process lives.
bool UdevRunning();

// True if `path` is a block device node (or a symlink to one) for `dev`.
bool NodeIs(const std::string& path, DevNum dev);
// True if anything exists at `path` (without following symlinks).
bool PathExists(const std::string& path);

// Makes `path` a block node for `dev` (mode 0600), atomically replacing a
// stale one (mknod of a temporary name + rename). Creates the directory.
absl::Status MakeNode(const std::string& path, DevNum dev);
// Removes a block node or symlink at `path`; refuses to remove anything
// else (regular files, directories). Missing is fine.
absl::Status RemoveNode(const std::string& path);

// Listens to udev's processed "block" events, started before an ioctl so no
// event is missed; Wait returns when `done()` holds, rechecking after each
// event, or when `timeout` passes (then returns false).
class UdevWaiter {
 public:
  static absl::StatusOr<std::unique_ptr<UdevWaiter>> Start();
  ~UdevWaiter();
  absl::StatusOr<bool> Wait(absl::FunctionRef<bool()> done, absl::Duration timeout);

 private:
  UdevWaiter() = default;
  struct udev* udev_ = nullptr;
  struct udev_monitor* monitor_ = nullptr;
};

}  // namespace dm::internal

#endif  // DMTHIN_LIBDM_NODES_H_
