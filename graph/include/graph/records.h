// graph::LayerRecords — the one home of what a driver must remember about
// its layers (overlay's short link, lower chain and parent; devicemapper's
// thin device; vfs's and btrfs's parent and read-write flag).
//
// Records live in SQLite (base/sqlite.h), table `driver_records`:
//  - in the layer store's own registry (`<store root>/layers.db`) when the
//    driver is opened by the store (OpenLayerStore passes them in
//    DriverOptions::records), beside the `layers` table whose rows name the
//    same ids (a layer's cache id, and `<cache id>-init` for its init layer);
//  - in `<driver root>/records.db` when a driver is used on its own (the
//    Docker plugin with dockerd's ids, graph::OpenDriver callers).
// A driver keeps no other metadata. Files the kernel or outside tools need
// (overlay's `l/` links and `<id>/link`) are derived from the records and
// rebuilt by Driver::CheckDerived (graphctl check --repair).
//
// One state machine for every layer, the store's and the drivers' alike
// (RecordState): a driver records its intent before it acts on the kernel
// or the filesystem and marks it done after, as thinpool does:
//
//    Begin(id, fields)  -> creating   (nothing made yet, or half made)
//    Ready(id, fields)  -> ready      (the layer is whole)
//    Removing(id)       -> removing   (about to be taken apart)
//    Drop(id)           -> no record  (nothing left)
//
// Each transition, with the record's fields, is one SQLite transaction. A
// driver opened after a crash finds `creating` and `removing` records and
// finishes them (undoes a create, completes a removal); only `ready` records
// are layers (Exists, List). Migrate() brings records a previous release
// kept in files into the database in one transaction.
//
// Thread-safe: one connection of its own, serialised by a mutex; callers
// never hold the store's registry lock across a call (drivers write records
// only inside Create, Remove and their own open).
#ifndef DMTHIN_GRAPH_RECORDS_H_
#define DMTHIN_GRAPH_RECORDS_H_

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"

namespace base::sqlite {
class Db;
}

DMTHIN_API_BEGIN
namespace graph {

// The states of a layer, shared by the layer store's rows and the drivers'
// records (their SQL spelling is RecordStateName's).
enum class RecordState { kCreating, kReady, kRemoving };

const char* RecordStateName(RecordState state);  // "creating", "ready", "removing"
std::optional<RecordState> ParseRecordState(absl::string_view name);

// One driver record: a layer id, its state and the driver's fields.
struct LayerRecord {
  std::string id;
  RecordState state = RecordState::kCreating;
  std::map<std::string, std::string> fields;

  // fields[key], or "" when absent.
  std::string Field(const std::string& key) const;
};

class LayerRecords {
 public:
  // The SQL that makes the records table (idempotent); the layer store puts
  // it in its own schema.
  static const char* Schema();

  // Opens (creating if missing) the records of database `path`: the store's
  // registry or a driver's own records.db.
  static absl::StatusOr<std::shared_ptr<LayerRecords>> Open(const std::string& path);

  // DriverOptions::records if the caller gave some, else `<root>/records.db`
  // (the driver root is created first if missing).
  static absl::StatusOr<std::shared_ptr<LayerRecords>> ForDriver(
      const std::string& root, const std::shared_ptr<LayerRecords>& given);

  ~LayerRecords();

  // The database file these records are in.
  const std::string& path() const { return path_; }

  // Intent: a `creating` record. AlreadyExists if `id` has any record.
  absl::Status Begin(const std::string& id, const std::map<std::string, std::string>& fields);
  // Done: the record becomes `ready` with `fields` (which replace the
  // intent's). NotFound if `id` has no record.
  absl::Status Ready(const std::string& id, const std::map<std::string, std::string>& fields);
  // Intent to remove: `removing`, fields kept. NotFound without a record.
  absl::Status Removing(const std::string& id);
  // Back to `ready` (a removal refused half-way, e.g. a busy device).
  absl::Status Restore(const std::string& id);
  // No record left (OK if there was none).
  absl::Status Drop(const std::string& id);

  // The record of `id` in any state; nullopt if none.
  absl::StatusOr<std::optional<LayerRecord>> Get(const std::string& id) const;
  // The record of `id` if it is ready; NotFound ("layer ID does not exist")
  // otherwise.
  absl::StatusOr<LayerRecord> GetReady(const std::string& id) const;
  // Every record, by id.
  absl::StatusOr<std::vector<LayerRecord>> List() const;

  // Writes `records` (ids without a record yet) in one transaction: what a
  // driver found in a previous release's files. Existing records win.
  absl::Status Migrate(const std::vector<LayerRecord>& records);

 private:
  LayerRecords(std::string path, std::unique_ptr<base::sqlite::Db> db);
  absl::Status SetState(const std::string& id, RecordState state, const char* what);

  const std::string path_;
  mutable std::mutex mu_;
  std::unique_ptr<base::sqlite::Db> db_;
};

}  // namespace graph
DMTHIN_API_END

#endif  // DMTHIN_GRAPH_RECORDS_H_
