#include "thinpool/registry.h"

#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/sqlite.h"
#include "base/sqlite_shared.h"
#include "base/status.h"

namespace thinpool {

using base::sqlite::Db;
using base::sqlite::SharedDb;
using base::sqlite::Stmt;
using base::sqlite::Writer;

absl::string_view PoolBackingName(PoolBacking backing) {
  return backing == PoolBacking::kFiles ? "files" : "devices";
}

absl::string_view OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kCreateThin: return "create_thin";
    case OpKind::kCreateSnap: return "create_snap";
    case OpKind::kDelete: return "delete";
  }
  return "?";
}

namespace {

// 1: a thin being deleted was spelled 'deleting'; 2: 'removing', as every
// registry's state machine spells it (base/record_state.h).
constexpr int kSchemaVersion = 2;

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS pools(
  name TEXT PRIMARY KEY,
  backing TEXT NOT NULL CHECK(backing IN ('files','devices')),
  data_path TEXT NOT NULL,
  metadata_path TEXT NOT NULL,
  data_bytes INTEGER NOT NULL,
  metadata_bytes INTEGER NOT NULL,
  block_sectors INTEGER NOT NULL,
  low_water_blocks INTEGER NOT NULL,
  features TEXT NOT NULL,
  transaction_id INTEGER NOT NULL,
  next_id INTEGER NOT NULL DEFAULT 1,
  created_unix INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS free_ids(
  pool TEXT NOT NULL REFERENCES pools(name) ON DELETE CASCADE,
  dev_id INTEGER NOT NULL,
  PRIMARY KEY(pool, dev_id)
);
CREATE TABLE IF NOT EXISTS thins(
  pool TEXT NOT NULL REFERENCES pools(name) ON DELETE CASCADE,
  dev_id INTEGER NOT NULL CHECK(dev_id BETWEEN 0 AND 16777215),
  name TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  parent_id INTEGER,
  state TEXT NOT NULL CHECK(state IN ('creating','ready','removing')),
  created_unix INTEGER NOT NULL,
  PRIMARY KEY(pool, dev_id),
  UNIQUE(pool, name)
);
CREATE INDEX IF NOT EXISTS thins_by_parent ON thins(pool, parent_id);
CREATE TABLE IF NOT EXISTS quarantine(
  pool TEXT NOT NULL REFERENCES pools(name) ON DELETE CASCADE,
  dev_id INTEGER NOT NULL,
  reason TEXT NOT NULL,
  at_unix INTEGER NOT NULL,
  PRIMARY KEY(pool, dev_id)
);
CREATE TABLE IF NOT EXISTS pending(
  pool TEXT PRIMARY KEY REFERENCES pools(name) ON DELETE CASCADE,
  kind TEXT NOT NULL CHECK(kind IN ('create_thin','create_snap','delete')),
  dev_id INTEGER NOT NULL,
  origin_id INTEGER,
  old_txid INTEGER NOT NULL,
  new_txid INTEGER NOT NULL,
  started_unix INTEGER NOT NULL
);
)sql";

// Version 1 to 2 (inside the caller's transaction): the thins table again
// with the state CHECK of version 2 (SQLite cannot change a CHECK in place:
// https://sqlite.org/lang_altertable.html#otheralter), its rows copied with
// 'deleting' spelled 'removing'. No other table refers to thins.
constexpr const char* kThinsV1ToV2 = R"sql(
ALTER TABLE thins RENAME TO thins_v1;
DROP INDEX thins_by_parent;
)sql";
constexpr const char* kThinsV1Copy = R"sql(
INSERT INTO thins(pool, dev_id, name, size_bytes, parent_id, state, created_unix)
  SELECT pool, dev_id, name, size_bytes, parent_id,
         CASE state WHEN 'deleting' THEN 'removing' ELSE state END, created_unix
  FROM thins_v1;
DROP TABLE thins_v1;
)sql";

absl::StatusOr<int64_t> SchemaVersion(Db& db) {
  ASSIGN_OR_RETURN(Stmt version, db.Prepare("PRAGMA user_version"));
  ASSIGN_OR_RETURN(bool row, version.Step());
  return row ? version.Int(0) : 0;
}

absl::StatusOr<OpKind> ParseKind(const std::string& s) {
  if (s == "create_thin") return OpKind::kCreateThin;
  if (s == "create_snap") return OpKind::kCreateSnap;
  if (s == "delete") return OpKind::kDelete;
  return absl::DataLossError(absl::StrCat("registry: unknown op kind '", s, "'"));
}

#define POOL_COLUMNS \
  "name, backing, data_path, metadata_path, data_bytes, metadata_bytes, " \
  "block_sectors, low_water_blocks, features, transaction_id"

PoolRecord ReadPool(const Stmt& s) {
  PoolRecord p;
  p.name = s.Text(0);
  p.backing = s.Text(1) == "devices" ? PoolBacking::kDevices : PoolBacking::kFiles;
  p.data_path = s.Text(2);
  p.metadata_path = s.Text(3);
  p.data_bytes = s.Int(4);
  p.metadata_bytes = s.Int(5);
  p.block_sectors = static_cast<uint32_t>(s.Int(6));
  p.low_water_blocks = s.Int(7);
  std::string features = s.Text(8);
  if (!features.empty()) p.features = absl::StrSplit(features, ' ');
  p.transaction_id = s.Int(9);
  return p;
}

#define THIN_COLUMNS "pool, dev_id, name, size_bytes, parent_id, state, created_unix"

absl::StatusOr<ThinRecord> ReadThin(const Stmt& s) {
  ThinRecord t;
  t.pool = s.Text(0);
  t.dev_id = static_cast<uint32_t>(s.Int(1));
  t.name = s.Text(2);
  t.size_bytes = s.Int(3);
  if (!s.IsNull(4)) t.parent_id = static_cast<uint32_t>(s.Int(4));
  ASSIGN_OR_RETURN(t.state, base::RecordStateFromRegistry(s.Text(5), "thin device", t.name));
  t.created_unix = s.Int(6);
  return t;
}

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

absl::StatusOr<PoolRecord> GetPoolIn(Db& db, absl::string_view name) {
  ASSIGN_OR_RETURN(Stmt s, db.Prepare("SELECT " POOL_COLUMNS " FROM pools WHERE name=?"));
  s.Bind(1, name);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) {
    return absl::NotFoundError(absl::StrCat("no pool named '", name, "'"));
  }
  return ReadPool(s);
}

absl::StatusOr<ThinRecord> GetThinIn(Db& db, absl::string_view pool, absl::string_view name) {
  ASSIGN_OR_RETURN(Stmt s, db.Prepare("SELECT " THIN_COLUMNS " FROM thins WHERE pool=? AND name=?"));
  s.Bind(1, pool).Bind(2, name);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) {
    return absl::NotFoundError(
        absl::StrCat("no thin device '", name, "' in pool '", pool, "'"));
  }
  return ReadThin(s);
}

absl::StatusOr<std::optional<PendingOp>> GetPendingIn(Db& db, absl::string_view pool) {
  ASSIGN_OR_RETURN(Stmt s, db.Prepare("SELECT pool, kind, dev_id, origin_id, old_txid, new_txid FROM pending "
                                      "WHERE pool=?"));
  s.Bind(1, pool);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return std::optional<PendingOp>();
  PendingOp op;
  op.pool = s.Text(0);
  ASSIGN_OR_RETURN(op.kind, ParseKind(s.Text(1)));
  op.dev_id = static_cast<uint32_t>(s.Int(2));
  if (!s.IsNull(3)) op.origin_id = static_cast<uint32_t>(s.Int(3));
  op.old_txid = s.Int(4);
  op.new_txid = s.Int(5);
  return std::optional<PendingOp>(op);
}

// A fresh device id, from what BeginCreate's read found: the lowest freed id
// (`freed`), else the next never-used one (`next_id`, and whether a row of
// thins or quarantine holds it already: `next_used`); both O(log n), so
// allocation stays flat with 10,000 devices.
absl::StatusOr<uint32_t> AllocateIdIn(Db& db, absl::string_view pool, std::optional<int64_t> freed,
                                      int64_t next_id, bool next_used) {
  if (freed.has_value()) {
    ASSIGN_OR_RETURN(Stmt take, db.Prepare("DELETE FROM free_ids WHERE pool=? AND dev_id=?"));
    take.Bind(1, pool).Bind(2, *freed);
    RETURN_IF_ERROR(take.Run());
    return static_cast<uint32_t>(*freed);
  }
  int64_t id = next_id;
  // Skip ids taken by hand (Quarantine) or rows from outside the counter.
  for (bool used = next_used; used;) {
    ++id;
    if (id > kMaxDeviceId) break;
    ASSIGN_OR_RETURN(Stmt check, db.Prepare("SELECT EXISTS(SELECT 1 FROM thins WHERE pool=?1 AND dev_id=?2) OR "
                                            "EXISTS(SELECT 1 FROM quarantine WHERE pool=?1 AND dev_id=?2)"));
    check.Bind(1, pool).Bind(2, id);
    ASSIGN_OR_RETURN(bool r, check.Step());
    used = r && check.Int(0) != 0;
  }
  if (id > kMaxDeviceId) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "pool '", pool, "' has no free 24-bit device id left"));
  }
  ASSIGN_OR_RETURN(Stmt bump, db.Prepare("UPDATE pools SET next_id=? WHERE name=?"));
  bump.Bind(1, id + 1).Bind(2, pool);
  RETURN_IF_ERROR(bump.Run());
  return static_cast<uint32_t>(id);
}

absl::Status FreeId(Db& db, absl::string_view pool, uint32_t dev_id) {
  ASSIGN_OR_RETURN(Stmt s, db.Prepare("INSERT OR IGNORE INTO free_ids(pool, dev_id) VALUES(?,?)"));
  s.Bind(1, pool).Bind(2, static_cast<int64_t>(dev_id));
  return s.Run();
}

// Runs `sql` with `pool` and `dev_id` bound to its two parameters.
absl::Status RunOnThin(Db& db, const char* sql, absl::string_view pool, uint32_t dev_id) {
  ASSIGN_OR_RETURN(Stmt s, db.Prepare(sql));
  s.Bind(1, pool).Bind(2, static_cast<int64_t>(dev_id));
  return s.Run();
}

absl::Status NoPending(Db& db, absl::string_view pool, std::optional<PendingOp>* blocking = nullptr) {
  ASSIGN_OR_RETURN(auto pending, GetPendingIn(db, pool));
  if (pending) {
    if (blocking != nullptr) *blocking = pending;
    return absl::FailedPreconditionError(absl::StrCat(
        "pool '", pool, "' already has a pending ", OpKindName(pending->kind),
        " of device ", pending->dev_id));
  }
  return absl::OkStatus();
}

// Removes the pending row, which must still be the one the caller holds
// (one statement: the check and the removal).
absl::Status TakePending(Db& db, const PendingOp& op) {
  ASSIGN_OR_RETURN(Stmt s, db.Prepare("DELETE FROM pending WHERE pool=? AND kind=? AND dev_id=? AND new_txid=?"));
  s.Bind(1, op.pool)
      .Bind(2, OpKindName(op.kind))
      .Bind(3, static_cast<int64_t>(op.dev_id))
      .Bind(4, static_cast<int64_t>(op.new_txid));
  RETURN_IF_ERROR(s.Run());
  if (db.Changes() == 1) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "pool '", op.pool, "': pending ", OpKindName(op.kind), " of device ", op.dev_id,
      " is no longer recorded (finished by another process?)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Registry>> Registry::Open(const std::string& path) {
  // WAL, synchronous=FULL, foreign keys, a busy timeout (base/sqlite.h).
  ASSIGN_OR_RETURN(std::unique_ptr<Db> db, Db::Open(path, /*create=*/true));
  // Checkpoint early so the WAL wraps while it is small: a commit that
  // overwrites WAL pages already on disk is a data-only fdatasync, while one
  // that grows the file also commits the host filesystem's journal (the
  // default, 1000 pages, lets a young registry's WAL grow for a long time).
  // Only lowered: on a nearly full filesystem Db::Open asked for every page.
  int64_t autocheckpoint = 0;
  {
    ASSIGN_OR_RETURN(Stmt get, db->Prepare("PRAGMA wal_autocheckpoint"));
    ASSIGN_OR_RETURN(bool row, get.Step());
    if (row) autocheckpoint = get.Int(0);
  }
  if (autocheckpoint <= 0 || autocheckpoint > 64) RETURN_IF_ERROR(db->Exec("PRAGMA wal_autocheckpoint=64"));
  // That checkpoint, not the close, copies the WAL back into the database
  // (docs/thinpool.md, "The registry and the transaction protocol").
  db->LeaveCheckpointsToAutocheckpoint();
  auto conn = std::make_unique<SharedDb>(std::move(db));
  // Every write below goes through Write(): the intents sync the WAL after
  // their COMMIT, the relaxed commits do not, neither sets a PRAGMA.
  RETURN_IF_ERROR(conn->SyncCommitsExplicitly());
  // Read first: an open that finds the current schema takes no write lock.
  int64_t have = 0;
  {
    auto lock = conn->Lock();
    ASSIGN_OR_RETURN(have, SchemaVersion(conn->db()));
  }
  if (have != kSchemaVersion) {
    ASSIGN_OR_RETURN(Writer w, conn->Write());
    ASSIGN_OR_RETURN(have, SchemaVersion(w.db()));
    if (have > kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          "registry ", path, " has schema version ", have,
          ", newer than this build understands (", kSchemaVersion, ")"));
    }
    if (have == 1) RETURN_IF_ERROR(w.db().Exec(kThinsV1ToV2));
    if (have < kSchemaVersion) {
      RETURN_IF_ERROR(w.db().Exec(kSchema));
      if (have == 1) RETURN_IF_ERROR(w.db().Exec(kThinsV1Copy));
      RETURN_IF_ERROR(w.db().Exec(absl::StrCat("PRAGMA user_version=", kSchemaVersion)));
    }
    RETURN_IF_ERROR(w.Commit());
  }
  return std::unique_ptr<Registry>(new Registry(std::move(conn), path));
}

Registry::Registry(std::unique_ptr<SharedDb> conn, std::string path)
    : conn_(std::move(conn)), path_(std::move(path)) {}

Registry::~Registry() = default;

absl::Status Registry::AddPool(const PoolRecord& pool) {
  ASSIGN_OR_RETURN(Writer w, conn_->Write());
  ASSIGN_OR_RETURN(Stmt s, w.db().Prepare(
                               "INSERT INTO pools(name, backing, data_path, metadata_path, data_bytes, "
                               "metadata_bytes, block_sectors, low_water_blocks, features, "
                               "transaction_id, created_unix) VALUES(?,?,?,?,?,?,?,?,?,?,?)"));
  s.Bind(1, pool.name)
      .Bind(2, PoolBackingName(pool.backing))
      .Bind(3, pool.data_path)
      .Bind(4, pool.metadata_path)
      .Bind(5, static_cast<int64_t>(pool.data_bytes))
      .Bind(6, static_cast<int64_t>(pool.metadata_bytes))
      .Bind(7, static_cast<int64_t>(pool.block_sectors))
      .Bind(8, static_cast<int64_t>(pool.low_water_blocks))
      .Bind(9, absl::StrJoin(pool.features, " "))
      .Bind(10, static_cast<int64_t>(pool.transaction_id))
      .Bind(11, Now());
  absl::Status status = s.Run();
  if (status.code() == absl::StatusCode::kAlreadyExists) {
    return absl::AlreadyExistsError(
        absl::StrCat("pool '", pool.name, "' already exists in ", path_));
  }
  RETURN_IF_ERROR(status);
  return w.Commit();
}

absl::StatusOr<PoolRecord> Registry::GetPool(absl::string_view name) {
  auto lock = conn_->Lock();
  return GetPoolIn(conn_->db(), name);
}

absl::StatusOr<std::vector<PoolRecord>> Registry::ListPools() {
  auto lock = conn_->Lock();
  ASSIGN_OR_RETURN(Stmt s, conn_->db().Prepare("SELECT " POOL_COLUMNS " FROM pools ORDER BY name"));
  std::vector<PoolRecord> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(ReadPool(s));
  }
  return out;
}

absl::Status Registry::RemovePool(absl::string_view name, bool even_if_pending) {
  ASSIGN_OR_RETURN(Writer w, conn_->Write());
  RETURN_IF_ERROR(GetPoolIn(w.db(), name).status());
  ASSIGN_OR_RETURN(auto pending, GetPendingIn(w.db(), name));
  if (pending && !even_if_pending) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pool '", name, "' has a pending ", OpKindName(pending->kind),
        " of device ", pending->dev_id, "; open the pool to reconcile first"));
  }
  ASSIGN_OR_RETURN(Stmt s, w.db().Prepare("DELETE FROM pools WHERE name=?"));
  s.Bind(1, name);
  RETURN_IF_ERROR(s.Run());
  return w.Commit();
}

absl::Status Registry::SetPoolSizes(absl::string_view name, uint64_t data_bytes,
                                    uint64_t metadata_bytes) {
  ASSIGN_OR_RETURN(Writer w, conn_->Write());
  ASSIGN_OR_RETURN(Stmt s, w.db().Prepare("UPDATE pools SET data_bytes=?, metadata_bytes=? WHERE name=?"));
  s.Bind(1, static_cast<int64_t>(data_bytes))
      .Bind(2, static_cast<int64_t>(metadata_bytes))
      .Bind(3, name);
  RETURN_IF_ERROR(s.Run());
  if (w.db().Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("no pool named '", name, "'"));
  }
  return w.Commit();
}

absl::Status Registry::SetThinSize(absl::string_view pool, absl::string_view name,
                                   uint64_t size_bytes) {
  ASSIGN_OR_RETURN(Writer w, conn_->Write());
  ASSIGN_OR_RETURN(Stmt s, w.db().Prepare("UPDATE thins SET size_bytes=? WHERE pool=? AND name=? AND state='ready'"));
  s.Bind(1, static_cast<int64_t>(size_bytes)).Bind(2, pool).Bind(3, name);
  RETURN_IF_ERROR(s.Run());
  if (w.db().Changes() == 0) {
    return absl::NotFoundError(
        absl::StrCat("no ready thin device '", name, "' in pool '", pool, "'"));
  }
  return w.Commit();
}

absl::StatusOr<std::vector<ThinRecord>> Registry::ListThins(
    absl::string_view pool) {
  auto lock = conn_->Lock();
  ASSIGN_OR_RETURN(Stmt s, conn_->db().Prepare("SELECT " THIN_COLUMNS " FROM thins WHERE pool=? ORDER BY dev_id"));
  s.Bind(1, pool);
  std::vector<ThinRecord> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    ASSIGN_OR_RETURN(ThinRecord t, ReadThin(s));
    out.push_back(std::move(t));
  }
  return out;
}

absl::StatusOr<ThinRecord> Registry::GetThin(absl::string_view pool,
                                             absl::string_view name) {
  auto lock = conn_->Lock();
  return GetThinIn(conn_->db(), pool, name);
}

absl::StatusOr<ThinRecord> Registry::GetThinById(absl::string_view pool,
                                                 uint32_t dev_id) {
  auto lock = conn_->Lock();
  ASSIGN_OR_RETURN(Stmt s, conn_->db().Prepare("SELECT " THIN_COLUMNS " FROM thins WHERE pool=? AND dev_id=?"));
  s.Bind(1, pool).Bind(2, static_cast<int64_t>(dev_id));
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) {
    return absl::NotFoundError(
        absl::StrCat("no thin device with id ", dev_id, " in pool '", pool, "'"));
  }
  return ReadThin(s);
}

absl::StatusOr<std::optional<PendingOp>> Registry::GetPending(
    absl::string_view pool) {
  auto lock = conn_->Lock();
  return GetPendingIn(conn_->db(), pool);
}

absl::StatusOr<PendingOp> Registry::BeginCreate(
    absl::string_view pool, absl::string_view name, uint64_t size_bytes,
    std::optional<uint32_t> origin_id, std::optional<PendingOp>* blocking) {
  ASSIGN_OR_RETURN(Writer w, conn_->Write());
  Db& db = w.db();
  // What the intent depends on, in one read: the pool's transaction id and
  // id counter, whether an operation is pending or the name taken, the
  // lowest freed id, whether the counter's next id is held already.
  int64_t txid = 0, next_id = 0;
  std::optional<int64_t> freed;
  bool next_used = false;
  {
    ASSIGN_OR_RETURN(Stmt s, db.Prepare(
                                 "SELECT transaction_id, next_id, "
                                 "EXISTS(SELECT 1 FROM pending WHERE pool=?1), "
                                 "EXISTS(SELECT 1 FROM thins WHERE pool=?1 AND name=?2), "
                                 "(SELECT MIN(dev_id) FROM free_ids WHERE pool=?1), "
                                 "EXISTS(SELECT 1 FROM thins WHERE pool=?1 AND dev_id=next_id) OR "
                                 "EXISTS(SELECT 1 FROM quarantine WHERE pool=?1 AND dev_id=next_id) "
                                 "FROM pools WHERE name=?1"));
    s.Bind(1, pool).Bind(2, name);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no pool named '", pool, "'"));
    txid = s.Int(0);
    next_id = s.Int(1);
    if (s.Int(2) != 0) return NoPending(db, pool, blocking);
    if (s.Int(3) != 0) {
      return absl::AlreadyExistsError(absl::StrCat(
          "thin device '", name, "' already exists in pool '", pool, "'"));
    }
    if (!s.IsNull(4)) freed = s.Int(4);
    next_used = s.Int(5) != 0;
  }
  ASSIGN_OR_RETURN(uint32_t id, AllocateIdIn(db, pool, freed, next_id, next_used));
  PendingOp op;
  op.pool = std::string(pool);
  op.kind = origin_id ? OpKind::kCreateSnap : OpKind::kCreateThin;
  op.dev_id = id;
  op.origin_id = origin_id;
  op.old_txid = static_cast<uint64_t>(txid);
  op.new_txid = op.old_txid + 1;

  {
    ASSIGN_OR_RETURN(Stmt thin, db.Prepare("INSERT INTO thins(pool, dev_id, name, size_bytes, parent_id, state, "
                                           "created_unix) VALUES(?,?,?,?,?,'creating',?)"));
    thin.Bind(1, pool)
        .Bind(2, static_cast<int64_t>(id))
        .Bind(3, name)
        .Bind(4, static_cast<int64_t>(size_bytes))
        .BindOrNull(5, origin_id)
        .Bind(6, Now());
    RETURN_IF_ERROR(thin.Run());
  }
  ASSIGN_OR_RETURN(Stmt rec, db.Prepare("INSERT INTO pending(pool, kind, dev_id, origin_id, old_txid, "
                                        "new_txid, started_unix) VALUES(?,?,?,?,?,?,?)"));
  rec.Bind(1, pool)
      .Bind(2, OpKindName(op.kind))
      .Bind(3, static_cast<int64_t>(id))
      .BindOrNull(4, origin_id)
      .Bind(5, static_cast<int64_t>(op.old_txid))
      .Bind(6, static_cast<int64_t>(op.new_txid))
      .Bind(7, Now());
  RETURN_IF_ERROR(rec.Run());
  RETURN_IF_ERROR(w.Commit());
  return op;
}

absl::StatusOr<PendingOp> Registry::BeginDelete(absl::string_view pool, absl::string_view name,
                                                std::optional<PendingOp>* blocking) {
  ASSIGN_OR_RETURN(Writer w, conn_->Write());
  Db& db = w.db();
  // The pool's transaction id, whether an operation is pending, the thin's
  // id and state, in one read.
  PendingOp op;
  {
    ASSIGN_OR_RETURN(Stmt s, db.Prepare("SELECT p.transaction_id, EXISTS(SELECT 1 FROM pending WHERE pool=?1), "
                                        "t.dev_id, t.state FROM pools p "
                                        "LEFT JOIN thins t ON t.pool=p.name AND t.name=?2 WHERE p.name=?1"));
    s.Bind(1, pool).Bind(2, name);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("no pool named '", pool, "'"));
    if (s.Int(1) != 0) return NoPending(db, pool, blocking);
    if (s.IsNull(2)) {
      return absl::NotFoundError(
          absl::StrCat("no thin device '", name, "' in pool '", pool, "'"));
    }
    ASSIGN_OR_RETURN(ThinState state, base::RecordStateFromRegistry(s.Text(3), "thin device", name));
    if (state != ThinState::kReady) {
      return absl::FailedPreconditionError(absl::StrCat(
          "thin device '", name, "' is ", ThinStateName(state)));
    }
    op.old_txid = static_cast<uint64_t>(s.Int(0));
    op.dev_id = static_cast<uint32_t>(s.Int(2));
  }
  op.pool = std::string(pool);
  op.kind = OpKind::kDelete;
  op.new_txid = op.old_txid + 1;
  RETURN_IF_ERROR(RunOnThin(db, "UPDATE thins SET state='removing' WHERE pool=? AND dev_id=?", pool, op.dev_id));
  ASSIGN_OR_RETURN(Stmt rec, db.Prepare("INSERT INTO pending(pool, kind, dev_id, origin_id, old_txid, "
                                        "new_txid, started_unix) VALUES(?,'delete',?,NULL,?,?,?)"));
  rec.Bind(1, pool)
      .Bind(2, static_cast<int64_t>(op.dev_id))
      .Bind(3, static_cast<int64_t>(op.old_txid))
      .Bind(4, static_cast<int64_t>(op.new_txid))
      .Bind(5, Now());
  RETURN_IF_ERROR(rec.Run());
  RETURN_IF_ERROR(w.Commit());
  return op;
}

absl::Status Registry::CommitOp(const PendingOp& op) {
  // Not waiting for the disk (see registry.h).
  ASSIGN_OR_RETURN(Writer w, conn_->Write(/*relaxed=*/true));
  Db& db = w.db();
  RETURN_IF_ERROR(TakePending(db, op));
  if (op.kind == OpKind::kDelete) {
    RETURN_IF_ERROR(RunOnThin(db, "DELETE FROM thins WHERE pool=? AND dev_id=?", op.pool, op.dev_id));
    // Snapshots outlive their origin; the id may be reused, so forget it.
    RETURN_IF_ERROR(RunOnThin(db, "UPDATE thins SET parent_id=NULL WHERE pool=? AND parent_id=?", op.pool, op.dev_id));
    RETURN_IF_ERROR(FreeId(db, op.pool, op.dev_id));
  } else {
    RETURN_IF_ERROR(RunOnThin(db, "UPDATE thins SET state='ready' WHERE pool=? AND dev_id=?", op.pool, op.dev_id));
  }
  {
    ASSIGN_OR_RETURN(Stmt tx, db.Prepare("UPDATE pools SET transaction_id=? WHERE name=?"));
    tx.Bind(1, static_cast<int64_t>(op.new_txid)).Bind(2, op.pool);
    RETURN_IF_ERROR(tx.Run());
  }
  return w.Commit();
}

absl::Status Registry::AbortOp(const PendingOp& op,
                               std::optional<std::string> quarantine_reason) {
  ASSIGN_OR_RETURN(Writer w, conn_->Write());
  Db& db = w.db();
  RETURN_IF_ERROR(TakePending(db, op));
  if (op.kind == OpKind::kDelete && !quarantine_reason) {
    RETURN_IF_ERROR(RunOnThin(db, "UPDATE thins SET state='ready' WHERE pool=? AND dev_id=?", op.pool, op.dev_id));
  } else {
    RETURN_IF_ERROR(RunOnThin(db, "DELETE FROM thins WHERE pool=? AND dev_id=?", op.pool, op.dev_id));
  }
  if (!quarantine_reason && op.kind != OpKind::kDelete) {
    RETURN_IF_ERROR(FreeId(db, op.pool, op.dev_id));
  }
  if (quarantine_reason) {
    ASSIGN_OR_RETURN(Stmt q, db.Prepare("INSERT OR REPLACE INTO quarantine(pool, dev_id, reason, at_unix) "
                                        "VALUES(?,?,?,?)"));
    q.Bind(1, op.pool)
        .Bind(2, static_cast<int64_t>(op.dev_id))
        .Bind(3, *quarantine_reason)
        .Bind(4, Now());
    RETURN_IF_ERROR(q.Run());
  }
  return w.Commit();
}

absl::Status Registry::Quarantine(absl::string_view pool, uint32_t dev_id,
                                  absl::string_view reason) {
  if (dev_id > kMaxDeviceId) {
    return absl::InvalidArgumentError(
        absl::StrCat("device id ", dev_id, " is not a 24-bit id"));
  }
  ASSIGN_OR_RETURN(Writer w, conn_->Write());
  Db& db = w.db();
  RETURN_IF_ERROR(GetPoolIn(db, pool).status());
  {
    ASSIGN_OR_RETURN(Stmt q, db.Prepare("INSERT OR REPLACE INTO quarantine(pool, dev_id, reason, at_unix) "
                                        "VALUES(?,?,?,?)"));
    q.Bind(1, pool).Bind(2, static_cast<int64_t>(dev_id)).Bind(3, reason).Bind(4, Now());
    RETURN_IF_ERROR(q.Run());
  }
  RETURN_IF_ERROR(RunOnThin(db, "DELETE FROM free_ids WHERE pool=? AND dev_id=?", pool, dev_id));
  return w.Commit();
}

absl::StatusOr<std::vector<QuarantinedId>> Registry::ListQuarantined(
    absl::string_view pool) {
  auto lock = conn_->Lock();
  ASSIGN_OR_RETURN(Stmt s, conn_->db().Prepare("SELECT dev_id, reason FROM quarantine WHERE pool=? ORDER BY dev_id"));
  s.Bind(1, pool);
  std::vector<QuarantinedId> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back({static_cast<uint32_t>(s.Int(0)), s.Text(1)});
  }
  return out;
}

#undef POOL_COLUMNS
#undef THIN_COLUMNS

}  // namespace thinpool
