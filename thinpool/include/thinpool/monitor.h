// Autoextend: keep pools from filling up, as dmeventd's thin plugin does for
// LVM. The monitor wakes on device-mapper events (the pool raises one when
// free data blocks drop below its low-water mark; DM_DEV_ARM_POLL) and also
// polls, and grows data and metadata by a policy.
#ifndef DMTHIN_THINPOOL_MONITOR_H_
#define DMTHIN_THINPOOL_MONITOR_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/export.h"
#include "libdm/control.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

DMTHIN_API_BEGIN
namespace thinpool {

struct AutoextendPolicy {
  // Extend when used space reaches this share of the total (1..100).
  double threshold_percent = 80;
  // Grow by this share of the current size (at least one block).
  double step_percent = 20;
  // Never grow beyond these (0: no limit for data).
  uint64_t max_data_bytes = 0;
  uint64_t max_metadata_bytes = kMaxMetadataBytes;
  absl::Duration poll_interval = absl::Seconds(1);
  // A condition (cannot-extend, out-of-data-space, read-only, needs-check,
  // failed, error) is reported when it starts, again every repeat_interval
  // while it lasts, and once more ("cleared") when it ends; not every poll.
  absl::Duration repeat_interval = absl::Minutes(10);

  absl::Status Validate() const;
};

struct MonitorEvent {
  enum class Kind {
    kExtendedData,
    kExtendedMetadata,
    kCannotExtend,     // above threshold but at the maximum (or grow failed)
    kOutOfDataSpace,   // the kernel says so
    kReadOnly,         // metadata trouble: the pool refuses writes
    kNeedsCheck,
    kFailed,
    kError,            // the monitor could not look at the pool
    kRecovered,        // Open repaired something: a device a dead process
                       // left suspended resumed, an operation rolled back
    kCleared,          // a condition reported before has ended
  };
  Kind kind;
  std::string pool;
  uint64_t old_bytes = 0;
  uint64_t new_bytes = 0;
  std::string message;
};
absl::string_view MonitorEventKindName(MonitorEvent::Kind kind);

class Monitor {
 public:
  // Watches `pools` (all registered pools when empty). `report` is called
  // from the monitor thread for every event.
  Monitor(StateDir& state, const dm::Control& dm, AutoextendPolicy policy,
          std::vector<std::string> pools = {},
          std::function<void(const MonitorEvent&)> report = nullptr);
  ~Monitor();
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  // One pass over the pools: extends what needs it, returns what happened.
  absl::StatusOr<std::vector<MonitorEvent>> CheckOnce();
  // Runs CheckOnce on every dm event and every poll_interval in a thread.
  absl::Status Start();
  void Stop();
  // Extensions done so far by this monitor.
  int extensions() const { return extensions_.load(); }

 private:
  void Run();
  absl::Status CheckPool(const std::string& name, std::vector<MonitorEvent>* events);
  // Reports `e` (a condition is reported at its start and then only every
  // repeat_interval); remembers the condition (pool, kind, subject: "data"
  // or "metadata") as seen in this pass.
  void Emit(MonitorEvent e, std::vector<MonitorEvent>* events, const std::string& subject = "");
  static bool IsCondition(MonitorEvent::Kind kind);

  StateDir& state_;
  const dm::Control& dm_;
  AutoextendPolicy policy_;
  std::vector<std::string> pools_;
  std::function<void(const MonitorEvent&)> report_;
  std::atomic<bool> stop_{false};
  std::atomic<int> extensions_{0};
  std::thread thread_;
  std::mutex pass_mu_;  // one CheckOnce at a time: the two maps below
  // Conditions being reported: (pool, kind, subject) → when last reported.
  using Condition = std::tuple<std::string, MonitorEvent::Kind, std::string>;
  std::map<Condition, absl::Time> conditions_;
  std::set<Condition> seen_;  // in this pass
};

}  // namespace thinpool
DMTHIN_API_END

#endif  // DMTHIN_THINPOOL_MONITOR_H_
