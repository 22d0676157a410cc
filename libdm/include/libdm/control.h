// dm::Control: the handle on /dev/mapper/control through which every
// device-mapper ioctl goes.
//
// One Control may be shared by any number of threads: it holds only the fd
// and facts learnt at Open (interface version, node mode); each call uses
// its own (thread-local) buffer. Errors carry errno (base::GetErrno), the
// command, the device and the kernel's returned header (GetReturnedHeader).
#ifndef DMTHIN_LIBDM_CONTROL_H_
#define DMTHIN_LIBDM_CONTROL_H_

#include <linux/dm-ioctl.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/export.h"
#include "base/unique_fd.h"
#include "libdm/table.h"
#include "libdm/thin.h"
#include "libdm/types.h"
#include "libdm/wire.h"

DMTHIN_API_BEGIN
namespace dm {

// Who makes /dev/mapper/NAME.
enum class NodeMode {
  kAuto,    // kUdev when udev runs (/run/udev/control and a live udevd), else kManual
  kUdev,    // udev does; wait for it (libudev monitor, bounded by udev_timeout)
  kManual,  // we mknod/unlink /dev/mapper/NAME ourselves
  kNone,    // nobody (callers use /dev/dm-N or MAJ:MIN)
};

// DM_UDEV_* flags carried in the high 16 bits of a udev cookie (event_nr on
// resume, remove, rename), as lvm2's rules (10-dm.rules, `dmsetup udevflags`)
// read them.
namespace udev {
inline constexpr uint16_t kDisableDmRules = 0x0001;
inline constexpr uint16_t kDisableSubsystemRules = 0x0002;
inline constexpr uint16_t kDisableDiskRules = 0x0004;
inline constexpr uint16_t kDisableOtherRules = 0x0008;
inline constexpr uint16_t kLowPriority = 0x0010;
inline constexpr uint16_t kDisableLibraryFallback = 0x0020;
inline constexpr uint16_t kPrimarySource = 0x0040;
// DM_SUBSYSTEM_UDEV_FLAG0..7: free for a subsystem's own rules.
inline constexpr uint16_t kSubsystemFlag0 = 0x0100;
inline constexpr int kFlagsShift = 16;
// The cookie: flags only, no semaphore (base 0), so `dmsetup udevcomplete`
// in 95-dm-notify.rules has nothing to complete.
constexpr uint32_t Cookie(uint16_t flags) { return uint32_t{flags} << kFlagsShift; }
}  // namespace udev

struct ControlOptions {
  std::string control_path = "/dev/mapper/control";
  std::string dev_dir = "/dev";  // nodes go to <dev_dir>/mapper/NAME
  NodeMode node_mode = NodeMode::kAuto;
  absl::Duration udev_timeout = absl::Seconds(10);
  // Extra DM_UDEV_* / subsystem flags sent in every cookie.
  uint16_t udev_flags = 0;
  size_t max_buffer_size = wire::kDefaultMaxBufferSize;
};

// A device's state as DM_DEV_STATUS (and most commands) report it.
struct DeviceInfo {
  std::string name;
  std::string uuid;
  DevNum dev;
  int32_t open_count = 0;
  uint32_t event_nr = 0;
  uint32_t target_count = 0;
  uint32_t flags = 0;  // DM_*_FLAG bits as returned

  bool suspended() const { return flags & DM_SUSPEND_FLAG; }
  bool read_only() const { return flags & DM_READONLY_FLAG; }
  bool live_table() const { return flags & DM_ACTIVE_PRESENT_FLAG; }
  bool inactive_table() const { return flags & DM_INACTIVE_PRESENT_FLAG; }
  bool deferred_remove() const { return flags & DM_DEFERRED_REMOVE; }
  bool internal_suspend() const { return flags & DM_INTERNAL_SUSPEND_FLAG; }

  static DeviceInfo FromHeader(const struct dm_ioctl& header);
};

struct CreateOptions {
  std::optional<Uuid> uuid;
  std::optional<DevNum> dev;  // a persistent device number (DM_PERSISTENT_DEV_FLAG)
};

struct SuspendOptions {
  bool noflush = false;      // DM_NOFLUSH_FLAG: keep queued I/O (no flush)
  bool skip_lockfs = false;  // DM_SKIP_LOCKFS_FLAG: don't freeze a filesystem
};

struct RemoveOptions {
  // DM_DEFERRED_REMOVE: if open, remove at last close instead of EBUSY.
  bool deferred = false;
  // EBUSY (a transient opener such as udev's blkid) is retried this many
  // times, sleeping `backoff`, doubled each time up to `max_backoff`.
  int retries = 8;
  absl::Duration backoff = absl::Milliseconds(10);
  absl::Duration max_backoff = absl::Milliseconds(500);
};

enum class Removal { kRemoved, kDeferred };

struct StatusOptions {
  bool inactive = false;  // DM_QUERY_INACTIVE_TABLE_FLAG
  bool noflush = false;   // DM_NOFLUSH_FLAG (thin-pool: don't commit first)
};

struct Geometry {
  uint32_t cylinders = 0;  // <= 65535
  uint32_t heads = 0;      // <= 255
  uint32_t sectors = 0;    // <= 255
  uint64_t start = 0;
};

// DEV_WAIT's answer: the device after the event and its targets' status.
struct WaitResult {
  DeviceInfo info;
  std::vector<wire::TargetLine> status;
};

// Names the device an ioctl is about, for error messages only: formatted
// when an error is reported, never on the success path.
class DeviceLabel {
 public:
  DeviceLabel() = default;
  DeviceLabel(absl::string_view text) : text_(text) {}  // NOLINT
  DeviceLabel(const char* text) : text_(text) {}        // NOLINT
  DeviceLabel(const std::string& text) : text_(text) {}  // NOLINT
  DeviceLabel(const DevId& id, absl::string_view message = "")  // NOLINT
      : id_(&id), message_(message) {}
  std::string ToString() const;

 private:
  absl::string_view text_;
  const DevId* id_ = nullptr;
  absl::string_view message_;
};

class Control {
 public:
  // Opens the control node, creating it (and /dev/mapper) from
  // /sys/class/misc/device-mapper/dev or /proc/misc when it is missing or
  // has the wrong number, then reads the interface version.
  static absl::StatusOr<std::unique_ptr<Control>> Open(ControlOptions options = {});

  Control(const Control&) = delete;
  Control& operator=(const Control&) = delete;

  const Version& version() const { return version_; }
  NodeMode node_mode() const { return node_mode_; }
  const ControlOptions& options() const { return options_; }
  int fd() const { return fd_.get(); }

  // ---- The one ioctl path. Sets the command's minimum version (raised by
  // the flags used), rejects flags the command does not accept, grows the
  // buffer from 16 KiB on DM_BUFFER_FULL_FLAG for read-only commands (up to
  // max_buffer_size), and hands the reply to `on_reply` while the buffer is
  // alive. `device` names the device in errors.
  absl::Status Run(const wire::Request& request,
                   absl::FunctionRef<absl::Status(const wire::Response&)> on_reply,
                   const DeviceLabel& device = {}) const;
  // Run returning only the reply header.
  absl::StatusOr<struct dm_ioctl> RunHeader(const wire::Request& request,
                                            const DeviceLabel& device = {}) const;

  // ---- Commands.
  absl::StatusOr<Version> QueryVersion() const;  // DM_VERSION
  absl::StatusOr<std::vector<wire::ListedDevice>> List() const;
  absl::StatusOr<DeviceInfo> Create(const Name& name, const CreateOptions& options = {}) const;
  absl::Status Load(const DevId& id, const Table& table, bool read_only = false) const;
  absl::Status ClearInactive(const DevId& id) const;  // DM_TABLE_CLEAR
  absl::StatusOr<DeviceInfo> Suspend(const DevId& id, const SuspendOptions& options = {}) const;
  // Resume: swaps in the inactive table if any; creates the node.
  absl::StatusOr<DeviceInfo> Resume(const DevId& id) const;
  absl::StatusOr<Removal> Remove(const DevId& id, const RemoveOptions& options = {}) const;
  // Cancels a pending deferred remove ("@cancel_deferred_remove").
  absl::Status CancelDeferredRemove(const DevId& id) const;
  absl::Status RemoveAll(bool deferred = false) const;
  absl::StatusOr<DeviceInfo> Info(const DevId& id) const;  // DM_DEV_STATUS
  // Info, or nullopt if there is no such device.
  absl::StatusOr<std::optional<DeviceInfo>> Find(const DevId& id) const;
  absl::Status Rename(const DevId& id, const Name& new_name) const;
  // Sets the uuid of a device that has none.
  absl::Status SetUuid(const DevId& id, const Uuid& uuid) const;
  absl::StatusOr<std::vector<wire::TargetLine>> Status(const DevId& id,
                                                       const StatusOptions& options = {}) const;
  absl::StatusOr<std::vector<wire::TargetLine>> TableLines(const DevId& id,
                                                           bool inactive = false) const;
  absl::StatusOr<Table> GetTable(const DevId& id, bool inactive = false) const;
  absl::StatusOr<std::vector<DevNum>> Deps(const DevId& id, bool inactive = false) const;
  // DM_TARGET_MSG; returns the target's answer text, if any.
  absl::StatusOr<std::string> Message(const DevId& id, Sectors sector,
                                      absl::string_view message) const;
  // Blocks until the device's event counter differs from `event_nr` (target
  // events: a thin-pool's low-water mark, mode changes...; not suspend or
  // reload). Not restarted on EINTR: a signal interrupts the wait. For a
  // wait with a timeout use EventPoller.
  absl::StatusOr<WaitResult> WaitEvent(const DevId& id, uint32_t event_nr) const;
  absl::Status SetGeometry(const DevId& id, const Geometry& geometry) const;
  absl::StatusOr<std::vector<wire::TargetVersion>> ListVersions() const;
  // GET_TARGET_VERSION (loads the target's module); on kernels before 4.41,
  // LIST_VERSIONS. Cached per type once found.
  absl::StatusOr<Version> TargetVersion(const std::string& type) const;
  // FailedPrecondition unless `type` is available at `min` or later.
  absl::Status RequireTarget(const std::string& type, const Version& min) const;

  // ---- Conveniences.
  // Create + load + resume; removes the device again if load or resume fails.
  absl::StatusOr<DeviceInfo> CreateDevice(const Name& name, const Table& table,
                                          const CreateOptions& options = {},
                                          bool read_only = false) const;
  // Load + resume: the kernel suspends the device, swaps in the new table
  // and resumes it.
  absl::StatusOr<DeviceInfo> Reload(const DevId& id, const Table& table) const;
  absl::StatusOr<ThinPoolStatus> GetThinPoolStatus(const DevId& id, bool noflush = false) const;
  absl::StatusOr<ThinStatus> GetThinStatus(const DevId& id) const;
  absl::Status SendThinPoolMessage(const DevId& pool, const ThinPoolMessage& message) const;

  // /dev/<dev_dir>/mapper/NAME.
  std::string NodePath(const std::string& name) const;
  // Like `dmsetup mknodes`: makes nodes for devices with a live table and
  // removes /dev/mapper nodes that name no device (or the wrong one).
  // Does nothing in NodeMode::kNone.
  absl::Status SyncNodes() const;

 private:
  explicit Control(ControlOptions options) : options_(std::move(options)) {}
  friend class EventPoller;
  absl::Status RunOn(int fd, const wire::Request& request,
                     absl::FunctionRef<absl::Status(const wire::Response&)> on_reply,
                     const DeviceLabel& device) const;
  absl::Status FillDevice(const DevId& id, wire::Request* request) const;
  absl::StatusOr<std::string> NameOf(const DevId& id) const;
  uint32_t Cookie() const;

  ControlOptions options_;
  base::UniqueFd fd_;
  Version version_;
  NodeMode node_mode_ = NodeMode::kManual;
  mutable absl::Mutex target_mu_;
  mutable std::map<std::string, Version> target_versions_ ABSL_GUARDED_BY(target_mu_);
};

// An fd of its own on the control node, armed with DM_DEV_ARM_POLL: Wait
// returns true once any dm event happened since the last Arm (a target
// event on any device, or a create, remove or rename). Arming is per open
// file, hence the own fd.
class EventPoller {
 public:
  static absl::StatusOr<EventPoller> Open(const Control& control);
  absl::Status Arm();
  // True if an event arrived within `timeout`, false on timeout.
  absl::StatusOr<bool> Wait(absl::Duration timeout);
  int fd() const { return fd_.get(); }

 private:
  EventPoller(base::UniqueFd fd, const Control* control)
      : fd_(std::move(fd)), control_(control) {}
  base::UniqueFd fd_;
  const Control* control_;
};

// The header as the kernel left it, attached to an ioctl error (described:
// "version 4.47.0 flags 0x... open_count N event_nr N ... name '...'"). On
// failure the kernel updates only its version fields.
std::optional<std::string> GetReturnedHeader(const absl::Status& status);
// The command name ("DM_DEV_REMOVE") attached to an ioctl error, if any.
std::optional<std::string> GetCommand(const absl::Status& status);

}  // namespace dm
DMTHIN_API_END

#endif  // DMTHIN_LIBDM_CONTROL_H_
