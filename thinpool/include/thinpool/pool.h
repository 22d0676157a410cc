// Thin pools and thin devices.
//
// A pool is a thin-pool target over a metadata and a data device: either two
// sparse files in the state dir attached to loop devices (the default), or
// two block devices. Thin devices are allocated in the pool by messages and
// recorded in the registry; every change follows one protocol:
//
//   1. record intent + next transaction id in the registry  [after_intent]
//   2. send the message(s) (idempotent: EEXIST/ENODATA on retry are fine)
//                                                            [after_message]
//   3. set_transaction_id OLD NEW (compare-and-swap)         [after_set_txid]
//   4. mark done in the registry                             [after_activate]
// A create asked to activate its device does so beside steps 3-4 (the two
// overlap their kernel waits).
//
// Whoever takes the pool next (Open/Activate, or the next operation, always
// under the pool lock) compares the kernel's transaction id with the
// registry's pending operation: kernel at NEW → roll forward (mark done);
// kernel at OLD → a delete is finished (roll forward), a create is undone
// (roll back: its device deactivated if it got active, the id freed, or
// quarantined if it could not be removed).
//
// Failure injection for tests: DMTHIN_FAILPOINT=<name> makes the process
// _exit(77) at that point (names in brackets above, plus after_suspend: the
// origin of a snapshot suspended, message not yet sent; after_pool_suspend:
// Resize's pool suspended, not yet resumed; after_thin_size: ResizeThin's
// new size recorded, the table not yet reloaded; and
// activated_before_txid: a create asked to activate has its device active,
// step 3 not yet done). DMTHIN_FAILPOINT=fail_after_pool_activate makes
// activation fail (not exit) once the pool device exists, so tests see a
// failed Create roll back.
//
// Device-mapper names: pool "dmthin-<pool>", thin "dmthin-<pool>-<thin>";
// uuids "DMTHIN-POOL-<pool>", "DMTHIN-THIN-<pool>-<id>" so udev rules can
// recognise them.
#ifndef DMTHIN_THINPOOL_POOL_H_
#define DMTHIN_THINPOOL_POOL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"
#include "libdm/control.h"
#include "thinpool/registry.h"
#include "thinpool/state_dir.h"

DMTHIN_API_BEGIN
namespace thinpool {

inline constexpr uint64_t kDefaultBlockBytes = 64 * 1024;
inline constexpr uint64_t kMinBlockBytes = 64 * 1024;
inline constexpr uint64_t kMaxBlockBytes = 1ull << 30;
inline constexpr uint64_t kMinMetadataBytes = 2ull << 20;
// The kernel uses at most this much metadata (THIN_METADATA_MAX_SECTORS).
inline constexpr uint64_t kMaxMetadataBytes = 16320ull << 20;
// A pool smaller than this many data blocks is refused: it could not hold
// one small thin device's filesystem.
inline constexpr uint64_t kMinDataBlocks = 16;

// Thin devices a default-sized pool's metadata holds (issue 17: a busy host).
inline constexpr uint64_t kDefaultMaxThins = 10000;
// Metadata reserved per thin device by the default: its mapping tree's root
// leaf and its entry in the device tree, shadowed once per transaction.
// thin_metadata_size counts 4 KiB; an empty pool measured ~4.6 KiB a device
// (2 MiB held ~445), so the default leaves twice the tool's figure.
inline constexpr uint64_t kMetadataBytesPerThin = 8192;

// The default metadata size: the kernel guide's 48 bytes per data block (at
// least 2 MiB) plus kMetadataBytesPerThin for each of kDefaultMaxThins
// devices (~78 MiB; a sparse file costs nothing until the kernel writes it,
// and the monitor grows it beyond), at most ~16 GiB, rounded up to 4 KiB.
uint64_t DefaultMetadataBytes(uint64_t data_bytes, uint64_t block_bytes);

// thin-provisioning-tools' thin_metadata_size estimate, in bytes: one 4 KiB
// leaf per 126 mappings (half-full leaves) plus one 4 KiB root per thin
// device. DefaultMetadataBytes is at least this for kDefaultMaxThins.
uint64_t ThinMetadataSizeEstimate(uint64_t data_blocks, uint64_t max_thins);

// What the kernel writes to the metadata when it formats a new pool (and
// adds when data grows): the data space map's bitmaps, one 4 KiB block per
// 16,320 data blocks, their index, the superblock and the metadata's own
// space map, with a margin. 100 TiB of 64 KiB blocks: ~430 MiB at once.
uint64_t FormatMetadataBytes(uint64_t data_blocks);

// A pool's sizes, checked against the kernel's limits before anything is
// made (Pool::Create and Resize use it).
struct PoolGeometry {
  uint64_t block_bytes = 0;
  uint64_t data_bytes = 0;       // whole blocks
  uint64_t metadata_bytes = 0;   // whole 4 KiB blocks
  uint64_t low_water_blocks = 0;
  uint64_t format_bytes = 0;     // FormatMetadataBytes(data blocks)
};
// Unset values are chosen: the block size as lvm2 chooses its chunk size
// (the smallest from 64 KiB, doubling, whose guide metadata fits the
// kernel's maximum), metadata by the guide, the low-water mark at 20% of the
// data blocks. Set values are checked: block 64 KiB..1 GiB in 64 KiB steps
// and able to address the data within the metadata maximum; data at least
// kMinDataBlocks blocks; metadata 2 MiB..~16 GiB and at least twice what
// formatting writes; low-water mark below the data blocks.
absl::StatusOr<PoolGeometry> PlanPoolGeometry(uint64_t data_bytes,
                                              std::optional<uint64_t> block_bytes,
                                              std::optional<uint64_t> metadata_bytes,
                                              std::optional<uint64_t> low_water_blocks);

enum class DiscardMode { kPassdown, kNoPassdown, kIgnore };

struct PoolOptions {
  // Sparse files in <state>/<name>/ (default; data_file and metadata_file
  // put them elsewhere: they must not exist yet), or block devices when
  // both data_device and metadata_device are given.
  uint64_t data_bytes = 0;      // required for file-backed pools
  // Unset: DefaultMetadataBytes (file-backed) or the whole device. 0 is an
  // error, like any size below the minimum.
  std::optional<uint64_t> metadata_bytes;
  std::string data_file;        // file-backed: default <state>/<name>/data
  std::string metadata_file;    // file-backed: default <state>/<name>/metadata
  std::string data_device;      // block device (device-backed pools)
  std::string metadata_device;
  // Device-backed: wipe a metadata device whose first 4 KiB are not zero
  // (otherwise refused: it may hold another pool).
  bool force_wipe = false;

  // 64 KiB .. 1 GiB, x 64 KiB; unset: chosen for the data size (64 KiB up
  // to ~21 TiB of data, PlanPoolGeometry).
  std::optional<uint64_t> block_bytes;
  // Free data blocks below which the kernel raises an event (0: never);
  // unset: 20% of the data blocks.
  std::optional<uint64_t> low_water_blocks;
  bool skip_block_zeroing = false;
  DiscardMode discard = DiscardMode::kPassdown;
  bool error_if_no_space = false;  // else queue I/O until the pool grows
};

struct PoolStatus {
  std::string name;
  bool active = false;
  std::string device;  // pool's dm name
  // From the kernel (set when active and healthy).
  std::optional<dm::ThinPoolStatus> kernel;
  uint64_t transaction_id = 0;  // kernel's when active, else registry's
  uint64_t block_bytes = 0;
  uint64_t data_used_bytes = 0;
  uint64_t data_total_bytes = 0;
  uint64_t metadata_used_bytes = 0;
  uint64_t metadata_total_bytes = 0;
  bool failed = false;          // "Fail"/"Error" status
  bool read_only = false;       // metadata switched the pool read-only
  bool out_of_data_space = false;
  bool needs_check = false;
  std::optional<DiscardMode> discard;
  bool error_if_no_space = false;
  size_t thin_count = 0;
  std::optional<PendingOp> pending;
  // One line: "pool p: data 12% (...), metadata 3%, rw, ..." for tools.
  std::string Summary() const;
};

struct ThinInfo {
  std::string name;
  uint32_t dev_id = 0;
  uint64_t size_bytes = 0;
  std::optional<uint32_t> parent_id;
  std::optional<std::string> parent_name;
  ThinState state = ThinState::kReady;
  bool active = false;
  std::string device;      // /dev/mapper/<dm name> (or /dev/dm-N), when active
  dm::DevNum devnum;       // when active
  std::optional<uint64_t> mapped_bytes;  // when active
  std::string dm_name;
  std::string dm_uuid;
};

// What Pool::Check found and did.
struct CheckReport {
  std::vector<std::string> findings;  // problems still present
  std::vector<std::string> actions;   // what repair did
  std::vector<std::string> notes;     // what could not be checked, and why
  // Some finding is one Check(repair=true) fixes; every finding says what
  // to do about it (a full pool: grow it).
  bool repairable = false;
  bool clean() const { return findings.empty(); }
};

struct DeleteOptions {
  // Discard the device's blocks first, so a file-backed pool with discard
  // passdown gives the space back to the host filesystem.
  bool discard = false;
};

class Pool {
 public:
  // Creates the pool (files, registry record, zeroed metadata) and activates
  // it. `state` and `dm` must outlive the Pool.
  static absl::StatusOr<std::unique_ptr<Pool>> Create(StateDir& state,
                                                      const dm::Control& dm,
                                                      absl::string_view name,
                                                      const PoolOptions& options);
  // Opens a registered pool. If it is active, reconciles a pending operation
  // left by a crashed process.
  static absl::StatusOr<std::unique_ptr<Pool>> Open(StateDir& state,
                                                    const dm::Control& dm,
                                                    absl::string_view name);

  const std::string& name() const { return name_; }
  std::string dm_name() const;
  std::string dm_uuid() const;
  // The registry's record (refreshed by every call that changes it).
  absl::StatusOr<PoolRecord> Record() const;

  // Re-attaches loops, runs thin_check when available (refusing a pool that
  // fails it), loads the pool and reconciles. Idempotent.
  absl::Status Activate();
  // Removes the pool device (and detaches its loops). Refuses while thin
  // devices are active unless `force`, which deactivates them first.
  absl::Status Deactivate(bool force = false);
  // Deactivates and forgets the pool; file-backed pools lose their files.
  // Refuses while thin devices are active unless `force`.
  absl::Status Destroy(bool force = false);
  absl::StatusOr<bool> IsActive() const;
  absl::StatusOr<PoolStatus> Status() const;
  // Grows data and/or metadata online (file: grow the file, refresh the
  // loop; device: use the grown device) and reloads the pool table.
  absl::Status Resize(std::optional<uint64_t> data_bytes,
                      std::optional<uint64_t> metadata_bytes);

  absl::StatusOr<ThinInfo> CreateThin(absl::string_view name, uint64_t size_bytes,
                                      bool activate = false);
  // Snapshot of `origin` (active or not; an active origin is suspended
  // around create_snap and always resumed).
  absl::StatusOr<ThinInfo> Snapshot(absl::string_view origin,
                                    absl::string_view name, bool activate = false);
  absl::Status DeleteThin(absl::string_view name, const DeleteOptions& options = {});
  // Grows thin device `name` to `size_bytes` (a multiple of 512; never
  // shrinks). The registry records the new size first [after_thin_size]
  // (a device larger than its filesystem is harmless, the reverse is not),
  // then an active device's table is reloaded with the new length. Retrying
  // after a crash finishes it: an active device shorter than its record is
  // reloaded even when the record already has the size.
  absl::StatusOr<ThinInfo> ResizeThin(absl::string_view name, uint64_t size_bytes);
  absl::StatusOr<ThinInfo> ActivateThin(absl::string_view name);
  absl::Status DeactivateThin(absl::string_view name);
  absl::StatusOr<ThinInfo> GetThinInfo(absl::string_view name) const;
  absl::StatusOr<std::vector<ThinInfo>> ListThins() const;

  // Compares the registry with the pool's metadata: the pending operation,
  // the transaction id, the set of thin ids (thin_dump, on a metadata
  // snapshot when the pool is active), the kernel's health flags, and — for
  // an inactive pool — thin_check. With `repair`: finishes or undoes a
  // pending operation (active pool), quarantines ids the registry does not
  // know (they are deleted at the next activation), and rebuilds the
  // metadata of an inactive file-backed pool that fails thin_check with
  // thin_repair (the damaged file is kept beside it).
  absl::StatusOr<CheckReport> Check(bool repair);

  // Reconciles a pending operation with the kernel (needs the pool active)
  // and deletes devices left in the kernel under quarantined ids. Returns
  // what it did ("rolled forward create_thin of 5", ...), or "".
  absl::StatusOr<std::string> Reconcile();

  // What this object's calls repaired on their own since the last call:
  // devices left suspended by a process that died (resumed by Open, every
  // operation and Check), operations rolled forward or back at Open. Check
  // reports them as actions; the monitor as "recovered" events.
  std::vector<std::string> TakeRecovered();

 private:
  Pool(StateDir& state, const dm::Control& dm, std::string name)
      : state_(state), dm_(dm), name_(std::move(name)) {}

  absl::Status ActivateLocked();
  absl::Status DeactivateLocked(bool force);
  // Under the pool lock: the pool device as one DM_DEV_STATUS tells it
  // (live table, devnum), resumed first if a dead process left it
  // suspended; nullopt when it has no live table.
  absl::StatusOr<std::optional<dm::DeviceInfo>> PoolDeviceLocked();
  // The same, FailedPrecondition when the pool is not active.
  absl::StatusOr<dm::DeviceInfo> ActivePoolDeviceLocked();
  // Compares the kernel with the registry and finishes or undoes a pending
  // operation; resumes the thins when a snapshot is pending. The pool
  // device must be active (PoolDeviceLocked).
  absl::StatusOr<std::string> ReconcileLocked();
  // Records an operation's intent with `begin` (Registry::BeginCreate or
  // BeginDelete), under the pool lock. When the registry finds an operation
  // already pending (a process died), that one is reconciled first
  // (ReconcileLocked; `*reconciled` set) and the intent begun again: the
  // intent's own transaction is the only registry read before it.
  absl::StatusOr<PendingOp> BeginLocked(
      absl::FunctionRef<absl::StatusOr<PendingOp>(std::optional<PendingOp>* blocking)> begin,
      bool* reconciled);
  // After the intent `op` is recorded, before any message (unless
  // BeginLocked `reconciled`): the kernel must be healthy and at
  // op.old_txid, as ReconcileLocked requires; otherwise the intent is
  // withdrawn and the error returned, nothing sent.
  absl::Status CheckIntentLocked(const PendingOp& op, bool reconciled);
  absl::Status ResumeLeftSuspended(bool thins);
  absl::Status ResumeThinsLeftSuspended();
  absl::Status ResumeIfLeftSuspended(const dm::DeviceInfo& info, const std::string& dm_name,
                                     absl::string_view what);
  absl::StatusOr<dm::ThinPoolStatus> KernelStatus(bool commit = false) const;
  absl::Status CleanUpQuarantined();
  absl::StatusOr<dm::Table> PoolTable(const PoolRecord& record, dm::DevNum meta,
                                      dm::DevNum data) const;
  absl::Status SendMessage(const dm::ThinPoolMessage& message) const;
  absl::Status SetTransactionId(uint64_t old_txid, uint64_t new_txid) const;
  absl::Status RollBackCreate(const PendingOp& op);
  absl::Status FinishDelete(const PendingOp& op);
  absl::Status RepairMetadataFile(const PoolRecord& rec, CheckReport* report);
  absl::StatusOr<ThinInfo> CreateLocked(absl::string_view name, uint64_t size,
                                        const std::optional<ThinRecord>& origin,
                                        bool activate);
  absl::StatusOr<ThinInfo> ActivateThinLocked(const ThinRecord& thin,
                                              std::optional<dm::DevNum> pool_dev = std::nullopt);
  // Makes the thin's dm device (or checks the one there) and returns it live;
  // ActivateThinLocked without the description. The pool's devnum when the
  // caller knows it (else looked up). Safe to run beside other pool calls.
  absl::StatusOr<dm::DeviceInfo> ActivateDevice(const ThinRecord& thin,
                                                std::optional<dm::DevNum> pool_dev) const;
  absl::Status DeactivateThinLocked(const ThinRecord& thin);
  // The registry's fields of a thin; Describe adds the kernel's.
  ThinInfo RecordInfo(const ThinRecord& thin) const;
  // `live`: the thin's device when the caller has it (else looked up).
  absl::StatusOr<ThinInfo> Describe(const ThinRecord& thin,
                                    std::optional<dm::DeviceInfo> live = std::nullopt) const;
  // `info` with the kernel's view of its live device `dev`.
  ThinInfo WithDevice(ThinInfo info, const dm::DeviceInfo& dev) const;
  // Names of this pool's active thin dm devices.
  absl::StatusOr<std::vector<std::string>> ActiveThinDmNames() const;
  std::string ThinDmName(absl::string_view thin) const;
  std::string ThinDmUuid(uint32_t dev_id) const;

  StateDir& state_;
  const dm::Control& dm_;
  std::string name_;
  std::vector<std::string> recovered_;
};

}  // namespace thinpool
DMTHIN_API_END

#endif  // DMTHIN_THINPOOL_POOL_H_
