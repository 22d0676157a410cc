// The registry: one SQLite database per state dir holding pools, thin
// devices and the one pending operation per pool.
//
// The database is opened through base::sqlite (base/sqlite.h, the wrapper
// the layer store and the volume store use): WAL mode, every commit synced
// (the WAL's fdatasync after it: SharedDb::SyncCommitsExplicitly; CommitOp
// excepted, see there), a busy timeout, one connection per
// Registry shared by its threads (base/sqlite_shared.h), so several
// processes can share a state dir; every write is one IMMEDIATE
// transaction. The registry alone does not serialise pool operations across
// processes: callers hold the pool's lock (StateDir::LockPool) around an
// operation's whole intent → message → set_transaction_id → done sequence.
//
// A thin row's state is the state machine every registry of dmthin shares
// (base/record_state.h): creating → ready → removing → gone.
//
// Device ids are 24-bit (1 .. 2^24-1). An id is in use while a thin row holds
// it; a freed id is handed out again; an id quarantined after a crash left
// its device in an unknown state is never handed out again.
#ifndef DMTHIN_THINPOOL_REGISTRY_H_
#define DMTHIN_THINPOOL_REGISTRY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"
#include "base/record_state.h"

namespace base::sqlite {
class SharedDb;
}  // namespace base::sqlite

DMTHIN_API_BEGIN
namespace thinpool {

inline constexpr uint32_t kMaxDeviceId = (1u << 24) - 1;

enum class PoolBacking { kFiles, kDevices };
absl::string_view PoolBackingName(PoolBacking backing);

struct PoolRecord {
  std::string name;
  PoolBacking backing = PoolBacking::kFiles;
  std::string data_path;      // sparse file or block device
  std::string metadata_path;  // sparse file or block device
  uint64_t data_bytes = 0;
  uint64_t metadata_bytes = 0;
  uint32_t block_sectors = 128;   // 64 KiB
  uint64_t low_water_blocks = 0;  // data blocks
  std::vector<std::string> features;  // thin-pool feature args
  uint64_t transaction_id = 0;        // last committed
};

// kCreating: intent to create recorded, not yet committed; kReady;
// kRemoving: intent to delete recorded (spelled "removing").
using ThinState = base::RecordState;
inline absl::string_view ThinStateName(ThinState state) { return base::RecordStateName(state); }

struct ThinRecord {
  std::string pool;
  uint32_t dev_id = 0;
  std::string name;
  uint64_t size_bytes = 0;
  std::optional<uint32_t> parent_id;  // origin of a snapshot
  ThinState state = ThinState::kReady;
  int64_t created_unix = 0;
};

enum class OpKind { kCreateThin, kCreateSnap, kDelete };
absl::string_view OpKindName(OpKind kind);

// The one operation in flight on a pool.
struct PendingOp {
  std::string pool;
  OpKind kind = OpKind::kCreateThin;
  uint32_t dev_id = 0;
  std::optional<uint32_t> origin_id;  // create_snap
  uint64_t old_txid = 0;
  uint64_t new_txid = 0;
};

struct QuarantinedId {
  uint32_t dev_id = 0;
  std::string reason;
};

class Registry {
 public:
  // Opens (creating if needed) the database at `path`. A registry of an
  // earlier schema is brought to this one in one transaction (version 1
  // spelled a thin being deleted "deleting"); a newer one is refused.
  static absl::StatusOr<std::unique_ptr<Registry>> Open(const std::string& path);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  const std::string& path() const { return path_; }

  // Pools.
  absl::Status AddPool(const PoolRecord& pool);  // AlreadyExists if taken
  absl::StatusOr<PoolRecord> GetPool(absl::string_view name);  // NotFound
  absl::StatusOr<std::vector<PoolRecord>> ListPools();
  // Removes the pool with its thins and quarantine; refuses while an
  // operation is pending unless `even_if_pending`.
  absl::Status RemovePool(absl::string_view name, bool even_if_pending = false);
  absl::Status SetPoolSizes(absl::string_view name, uint64_t data_bytes,
                            uint64_t metadata_bytes);

  // Thin devices.
  absl::StatusOr<std::vector<ThinRecord>> ListThins(absl::string_view pool);
  absl::StatusOr<ThinRecord> GetThin(absl::string_view pool,
                                     absl::string_view name);
  absl::StatusOr<ThinRecord> GetThinById(absl::string_view pool,
                                         uint32_t dev_id);
  // Records a ready thin's new size (Pool::ResizeThin's intent: the pool's
  // metadata has no device sizes, only the table does). NotFound if no
  // ready thin has that name.
  absl::Status SetThinSize(absl::string_view pool, absl::string_view name,
                           uint64_t size_bytes);

  // The protocol. Begin* records the intent (thin row in state creating or
  // removing + pending op with old/new transaction ids) in one transaction;
  // FailedPrecondition if an operation is already pending, that operation
  // in `*blocking` when given (the caller reconciles it and begins again,
  // without a read of its own before every intent).
  absl::StatusOr<PendingOp> BeginCreate(absl::string_view pool,
                                        absl::string_view name,
                                        uint64_t size_bytes,
                                        std::optional<uint32_t> origin_id,
                                        std::optional<PendingOp>* blocking = nullptr);
  absl::StatusOr<PendingOp> BeginDelete(absl::string_view pool,
                                        absl::string_view name,
                                        std::optional<PendingOp>* blocking = nullptr);
  absl::StatusOr<std::optional<PendingOp>> GetPending(absl::string_view pool);
  // Roll forward: the kernel has the new transaction id. Created rows become
  // ready, deleted rows go (freeing their id), the pool's txid advances.
  // Not fsynced by itself (a lost CommitOp is redone by the next reconcile);
  // the next durable write makes it durable too.
  absl::Status CommitOp(const PendingOp& op);
  // Roll back: the kernel kept the old transaction id and the device's state
  // was restored. A created row goes; a removing row is ready again. With
  // `quarantine_reason`, the id is quarantined instead of freed.
  absl::Status AbortOp(const PendingOp& op,
                       std::optional<std::string> quarantine_reason);

  // Quarantine an id by hand (e.g. a device found in the kernel but not in
  // the registry).
  absl::Status Quarantine(absl::string_view pool, uint32_t dev_id,
                          absl::string_view reason);
  absl::StatusOr<std::vector<QuarantinedId>> ListQuarantined(
      absl::string_view pool);

 private:
  Registry(std::unique_ptr<base::sqlite::SharedDb> conn, std::string path);

  // One connection; its mutex serialises this process's threads on it.
  std::unique_ptr<base::sqlite::SharedDb> conn_;
  std::string path_;
};

}  // namespace thinpool
DMTHIN_API_END

#endif  // DMTHIN_THINPOOL_REGISTRY_H_
