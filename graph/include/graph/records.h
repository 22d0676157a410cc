// graph::LayerRecords — the one home of what a driver must remember about
// its layers (overlay's short link, lower chain and parent; devicemapper's
// thin device; vfs's and btrfs's parent and read-write flag; zfs's dataset,
// origin snapshot, parent and read-write flag).
//
// Records live in SQLite (base/sqlite.h), table `driver_records`:
//  - in the layer store's own registry (`<store root>/layers.db`) when the
//    driver is opened by the store (OpenLayerStore passes them in
//    DriverOptions::records), beside the `layers` table whose rows name the
//    same ids (a layer's cache id, and `<cache id>-init` for its init layer),
//    on the store's own connection (base/sqlite_shared.h: one writer per
//    process, readers never wait behind a writer that waits for another
//    process);
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
// On their own, each transition, with the record's fields, is one SQLite
// transaction. In a store, the intents (Begin, Removing) and Drop are
// transactions of their own on the store's connection, committed without
// waiting for the disk (the store's next synchronous commit makes them
// durable; a power cut that loses one leaves what Check repairs), and
// Ready is held in memory (this process's readers see it) until the store
// writes it in the transaction that makes its layer ready (WriteStaged):
// a driver's finished record and its layer's state commit together.
//
// Alone, a driver may commit a transition relaxed where its own durable
// state repairs the loss (the `relaxed` arguments below; devicemapper).
//
// A driver opened after a crash finds `creating` and `removing` records and
// finishes them (undoes a create, or finishes one found whole, completes a
// removal); only `ready` records
// are layers (Exists, List). Migrate() brings records a previous release
// kept in files into the database in one transaction.
//
// Driver-wide entries (DriverEntry, table `driver_entries`) are what a
// driver remembers that is no layer's record: devicemapper's base device,
// the thins whose deletion waits for their device to close, the layers
// whose deactivation the last Put queued. They are in the same database,
// and a driver writes one in the same transaction as the layer state it
// belongs to (DropWithEntry).
//
// <driver root>/records-home (ClaimHome) says where a driver root's records
// are ("store" or "own"): a root opened the other way would see none of its
// layers and take their storage for orphans, so it is refused.
//
// Thread-safe. A driver never calls these while the store holds its
// registry lock (they would refuse with Internal rather than deadlock).
#ifndef DMTHIN_GRAPH_RECORDS_H_
#define DMTHIN_GRAPH_RECORDS_H_

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"
#include "base/record_state.h"

namespace base::sqlite {
class SharedDb;
class Writer;
}

DMTHIN_API_BEGIN
namespace graph {

// The states of a layer, shared by the layer store's rows, the drivers'
// records and thinpool's thin devices (base/record_state.h; their SQL
// spelling is RecordStateName's).
using RecordState = base::RecordState;
using base::ParseRecordState;        // nullopt for any other text
using base::RecordStateFromRegistry;  // DataLoss for any other text
using base::RecordStateName;         // "creating", "ready", "removing"

// One driver record: a layer id, its state and the driver's fields.
struct LayerRecord {
  std::string id;
  RecordState state = RecordState::kCreating;
  std::map<std::string, std::string> fields;

  // fields[key], or "" when absent.
  std::string Field(const std::string& key) const;
};

// A driver-wide entry: `kind` (the driver's own word: devicemapper's
// "base", "deferred", "deactivate"), `name` (unique within its kind) and
// fields.
struct DriverEntry {
  std::string kind;
  std::string name;
  std::map<std::string, std::string> fields;

  // fields[key], or "" when absent.
  std::string Field(const std::string& key) const;
};

class LayerRecords {
 public:
  // The SQL that makes the records' tables (idempotent); the layer store
  // puts it in its own schema.
  static const char* Schema();
  // The tables Schema() makes (a registry lacking one needs it applied).
  static std::vector<std::string> SchemaTables();

  // <root>/records-home: refuses (FailedPrecondition, naming `driver`) a
  // driver root whose records are the other way (`own`: <root>/records.db,
  // else the store's registry); writes it (durably) when the root has none
  // yet, creating the root if missing. Drivers call it before ForDriver.
  static absl::Status ClaimHome(const std::string& root, bool own, absl::string_view driver);

  // Opens (creating if missing) a driver's own records.db at `path`.
  static absl::StatusOr<std::shared_ptr<LayerRecords>> Open(const std::string& path);

  // The records in a layer store's registry, on the store's connection
  // `conn` (whose schema has the table). Ready is staged until the store's
  // WriteStaged.
  static std::shared_ptr<LayerRecords> InStore(const std::string& path,
                                               std::shared_ptr<base::sqlite::SharedDb> conn);

  // DriverOptions::records if the caller gave some, else `<root>/records.db`
  // (the driver root is created first if missing).
  static absl::StatusOr<std::shared_ptr<LayerRecords>> ForDriver(
      const std::string& root, const std::shared_ptr<LayerRecords>& given);

  ~LayerRecords();

  // The database file these records are in.
  const std::string& path() const { return path_; }

  // `relaxed` (Begin, Removing, Drop; Ready below): the commit does not wait for the
  // disk, for a driver whose durable state elsewhere repairs the loss of
  // the transition to a power cut (devicemapper: the pool's registry says
  // whether the thin exists, and the open deletes a thin no record names
  // and drops a record whose thin is gone). A process crash loses nothing
  // (the commit is in the WAL, in the page cache), and the next durable
  // commit makes it durable too. In a store these are always relaxed.

  // Intent: a `creating` record. AlreadyExists if `id` has any record.
  absl::Status Begin(const std::string& id, const std::map<std::string, std::string>& fields,
                     bool relaxed = false);
  // Done: the record becomes `ready` with `fields` (which replace the
  // intent's). NotFound if `id` has no record. `relaxed` (a driver's own
  // records; in a store Ready waits for the store's commit): for a driver
  // whose open rolls a `creating` record forward when its work is found
  // whole (devicemapper: the thin is in the pool), so that the durable
  // intent is the one commit that waits for the disk.
  absl::Status Ready(const std::string& id, const std::map<std::string, std::string>& fields,
                     bool relaxed = false);
  // Intent to remove: `removing`, fields kept. NotFound without a record.
  absl::Status Removing(const std::string& id, bool relaxed = false);
  // Back to `ready` (a removal refused half-way, e.g. a busy device).
  absl::Status Restore(const std::string& id);
  // No record left (OK if there was none).
  absl::Status Drop(const std::string& id, bool relaxed = false);

  // The record of `id` in any state; nullopt if none.
  absl::StatusOr<std::optional<LayerRecord>> Get(const std::string& id) const;
  // The record of `id` if it is ready; NotFound ("layer ID does not exist")
  // otherwise.
  absl::StatusOr<LayerRecord> GetReady(const std::string& id) const;
  // Every record, by id.
  absl::StatusOr<std::vector<LayerRecord>> List() const;
  // The ids that have a record, in any state (the id index only: no
  // record's fields are read).
  absl::StatusOr<std::set<std::string>> Ids() const;
  // Of `names` (the layers a driver finds on disk), those whose record is
  // ready or which no record owns: what a driver's List reports (check
  // removes the unowned ones), leaving out creates and removals in progress.
  absl::StatusOr<std::vector<std::string>> ReadyOrUnowned(const std::vector<std::string>& names) const;

  // Writes `records` (ids without a record yet) and `entries` in one
  // transaction: what a driver found in a previous release's files.
  // Existing records and entries win.
  absl::Status Migrate(const std::vector<LayerRecord>& records, const std::vector<DriverEntry>& entries = {});

  // Driver-wide entries. PutEntry writes (or replaces) one; `relaxed`: the
  // commit does not wait for the disk (for an entry whose loss to a power
  // cut costs nothing the next open does not redo, as a queued deactivation
  // whose device the power cut took too). In a store every write but a
  // durable PutEntry is relaxed, as the records' intents are.
  absl::Status PutEntry(const DriverEntry& entry, bool relaxed);
  // No entry left (OK if there was none). Relaxed.
  absl::Status DeleteEntry(const std::string& kind, const std::string& name);
  absl::StatusOr<std::optional<DriverEntry>> GetEntry(const std::string& kind, const std::string& name) const;
  // The entries of `kind`, by name.
  absl::StatusOr<std::vector<DriverEntry>> Entries(const std::string& kind) const;
  // Drop(id) and PutEntry(entry) in one transaction (a removed layer whose
  // storage a driver must still free later).
  absl::Status DropWithEntry(const std::string& id, const DriverEntry& entry);

  // For the store, inside its transaction `w` on this connection: writes
  // the staged Ready of `ids` (those without one are left alone), so they
  // commit with it. No-op for a driver's own records.
  absl::Status WriteStaged(base::sqlite::Writer& w, const std::vector<std::string>& ids);

 private:
  LayerRecords(std::string path, std::shared_ptr<base::sqlite::SharedDb> conn, bool staged);
  absl::Status SetState(const std::string& id, RecordState state, bool relaxed, const char* what);
  absl::Status Reentered(const char* what) const;
  // The staged ready record of `id`, if any.
  std::optional<LayerRecord> Staged(const std::string& id) const;

  const std::string path_;
  std::shared_ptr<base::sqlite::SharedDb> conn_;
  const bool staged_;
  mutable std::mutex staged_mu_;  // guards staged_ready_ only; never held across SQLite
  std::map<std::string, LayerRecord> staged_ready_;
};

}  // namespace graph
DMTHIN_API_END

#endif  // DMTHIN_GRAPH_RECORDS_H_
