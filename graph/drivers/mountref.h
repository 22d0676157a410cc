// Cross-process reference counts for layer mounts (Get/Put).
//
// One small file per layer under a driver's `<root>/.refs/`, holding the
// count as decimal text, guarded by flock(LOCK_EX) for the whole of an
// Acquire/Release — including the mount or unmount itself, so two processes
// never race to mount the same layer. A count left behind by a crashed
// process (or a reboot) is noticed because the mount is gone: Acquire then
// starts again from zero.
#ifndef DMTHIN_GRAPH_DRIVERS_MOUNTREF_H_
#define DMTHIN_GRAPH_DRIVERS_MOUNTREF_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace graph {

class MountRefs {
 public:
  // `dir` is created if missing.
  explicit MountRefs(std::string dir) : dir_(std::move(dir)) {}

  // Makes `id`'s count file (a count of 0) if it is missing. Drivers call it
  // when they create a layer, so a first mount needs no new file (on a full
  // filesystem there is no inode to make it with).
  absl::Status Prepare(const std::string& id);

  // Takes a reference on `id`. When the count is 0, or `is_mounted()` says
  // the recorded mount is gone, calls `mount()` first.
  absl::Status Acquire(const std::string& id, const std::function<bool()>& is_mounted,
                       const std::function<absl::Status()>& mount);

  // Drops a reference; calls `unmount()` when it reaches 0.
  // FailedPrecondition if there was none.
  absl::Status Release(const std::string& id, const std::function<absl::Status()>& unmount);

  // Forces the count to 0 after calling `unmount()` if it was positive
  // (Remove, Cleanup).
  absl::Status Reset(const std::string& id, const std::function<absl::Status()>& unmount);

  // Runs `fn(live)` under `id`'s lock without changing the count, `live`
  // being the count as Acquire would see it (0 when its mount is gone). A
  // missing count file (no Get since the layer was made or Reset) is a count
  // of 0: `fn(0)` runs without a lock. For work that must not interleave
  // with a mount or an unmount of the layer (devicemapper's deferred
  // deactivation after the last Put).
  absl::Status WithLock(const std::string& id, const std::function<bool()>& is_mounted,
                        const std::function<absl::Status(int live)>& fn);

  absl::StatusOr<int> Count(const std::string& id) const;

  // Count, but 0 when `is_mounted()` says a positive count is stale (its
  // mount is gone: a crash or a reboot), as Acquire would see it.
  absl::StatusOr<int> Live(const std::string& id, const std::function<bool()>& is_mounted) const;

 private:
  std::string dir_;
};

}  // namespace graph

#endif  // DMTHIN_GRAPH_DRIVERS_MOUNTREF_H_
