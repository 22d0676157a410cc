#include "thinpool/registry.h"

#include <sqlite3.h>

#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status.h"

namespace thinpool {

absl::string_view PoolBackingName(PoolBacking backing) {
  return backing == PoolBacking::kFiles ? "files" : "devices";
}

absl::string_view ThinStateName(ThinState state) {
  switch (state) {
    case ThinState::kCreating: return "creating";
    case ThinState::kReady: return "ready";
    case ThinState::kDeleting: return "deleting";
  }
  return "?";
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

constexpr int kSchemaVersion = 1;
constexpr int kBusyTimeoutMs = 30000;

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
  state TEXT NOT NULL CHECK(state IN ('creating','ready','deleting')),
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

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what) {
  absl::StatusCode code = absl::StatusCode::kInternal;
  int primary = rc & 0xff;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
    code = absl::StatusCode::kUnavailable;
  } else if (primary == SQLITE_CONSTRAINT) {
    code = absl::StatusCode::kAlreadyExists;
  } else if (primary == SQLITE_CANTOPEN || primary == SQLITE_PERM ||
             primary == SQLITE_READONLY) {
    code = absl::StatusCode::kPermissionDenied;
  } else if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) {
    code = absl::StatusCode::kDataLoss;
  }
  return absl::Status(code, absl::StrCat("registry: ", what, ": ",
                                         db ? sqlite3_errmsg(db)
                                            : sqlite3_errstr(rc)));
}

// A prepared statement with positional binding.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
    sql_ = sql;
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  absl::Status status() const {
    if (rc_ == SQLITE_OK) return absl::OkStatus();
    return SqliteError(db_, rc_, absl::StrCat("preparing ", sql_));
  }
  Stmt& Bind(int i, absl::string_view v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& BindOpt(int i, std::optional<uint32_t> v) {
    if (v) {
      sqlite3_bind_int64(stmt_, i, *v);
    } else {
      sqlite3_bind_null(stmt_, i);
    }
    return *this;
  }
  // True when a row is ready; false when done.
  absl::StatusOr<bool> Step() {
    RETURN_IF_ERROR(status());
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteError(db_, rc, sql_);
  }
  absl::Status Run() {
    ASSIGN_OR_RETURN(bool row, Step());
    (void)row;
    return absl::OkStatus();
  }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  bool IsNull(int col) const {
    return sqlite3_column_type(stmt_, col) == SQLITE_NULL;
  }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           sqlite3_column_bytes(stmt_, col))
             : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
  const char* sql_;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back unless committed.
//
// A transaction that only records what the kernel has already committed
// (CommitOp) need not be durable on its own: if a power loss takes it, the
// pending row it would have deleted is still there and the next reconcile
// finds the kernel at the new transaction id and rolls forward again. Such a
// transaction runs with synchronous=NORMAL (in WAL mode: no fsync at commit;
// https://www.sqlite.org/pragma.html#pragma_synchronous) and becomes durable
// with the next FULL commit, which syncs the WAL up to and including it.
class Txn {
 public:
  enum class Sync { kFull, kLazy };
  explicit Txn(sqlite3* db, Sync sync = Sync::kFull) : db_(db), sync_(sync) {}
  absl::Status Begin() {
    if (sync_ == Sync::kLazy) {
      int rc = sqlite3_exec(db_, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
      if (rc != SQLITE_OK) return SqliteError(db_, rc, "PRAGMA synchronous=NORMAL");
      lazy_ = true;
    }
    int rc = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db_, rc, "BEGIN IMMEDIATE");
    open_ = true;
    return absl::OkStatus();
  }
  absl::Status Commit() {
    int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db_, rc, "COMMIT");
    open_ = false;
    return absl::OkStatus();
  }
  ~Txn() {
    if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    if (lazy_) sqlite3_exec(db_, "PRAGMA synchronous=FULL", nullptr, nullptr, nullptr);
  }

 private:
  sqlite3* db_;
  Sync sync_;
  bool open_ = false;
  bool lazy_ = false;
};

absl::StatusOr<ThinState> ParseState(const std::string& s) {
  if (s == "creating") return ThinState::kCreating;
  if (s == "ready") return ThinState::kReady;
  if (s == "deleting") return ThinState::kDeleting;
  return absl::DataLossError(absl::StrCat("registry: unknown thin state '", s, "'"));
}

absl::StatusOr<OpKind> ParseKind(const std::string& s) {
  if (s == "create_thin") return OpKind::kCreateThin;
  if (s == "create_snap") return OpKind::kCreateSnap;
  if (s == "delete") return OpKind::kDelete;
  return absl::DataLossError(absl::StrCat("registry: unknown op kind '", s, "'"));
}

constexpr const char* kPoolColumns =
    "name, backing, data_path, metadata_path, data_bytes, metadata_bytes, "
    "block_sectors, low_water_blocks, features, transaction_id";

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

constexpr const char* kThinColumns =
    "pool, dev_id, name, size_bytes, parent_id, state, created_unix";

absl::StatusOr<ThinRecord> ReadThin(const Stmt& s) {
  ThinRecord t;
  t.pool = s.Text(0);
  t.dev_id = static_cast<uint32_t>(s.Int(1));
  t.name = s.Text(2);
  t.size_bytes = s.Int(3);
  if (!s.IsNull(4)) t.parent_id = static_cast<uint32_t>(s.Int(4));
  ASSIGN_OR_RETURN(t.state, ParseState(s.Text(5)));
  t.created_unix = s.Int(6);
  return t;
}

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

}  // namespace

absl::StatusOr<std::unique_ptr<Registry>> Registry::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteError(db, rc, absl::StrCat("opening ", path));
    sqlite3_close(db);
    return status;
  }
  std::unique_ptr<Registry> registry(new Registry(db, path));
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  sqlite3_extended_result_codes(db, 1);
  // journal_mode=WAL itself needs a lock; the busy timeout covers it.
  RETURN_IF_ERROR(registry->Exec("PRAGMA journal_mode=WAL"));
  RETURN_IF_ERROR(registry->Exec("PRAGMA synchronous=FULL"));
  // Checkpoint early so the WAL wraps while it is small: a commit that
  // overwrites WAL pages already on disk is a data-only fdatasync, while one
  // that grows the file also commits the host filesystem's journal (the
  // default, 1000 pages, lets a young registry's WAL grow for a long time).
  RETURN_IF_ERROR(registry->Exec("PRAGMA wal_autocheckpoint=64"));
  RETURN_IF_ERROR(registry->Exec("PRAGMA foreign_keys=ON"));
  {
    Txn txn(db);
    RETURN_IF_ERROR(txn.Begin());
    Stmt version(db, "PRAGMA user_version");
    ASSIGN_OR_RETURN(bool row, version.Step());
    int64_t have = row ? version.Int(0) : 0;
    if (have > kSchemaVersion) {
      return absl::FailedPreconditionError(absl::StrCat(
          "registry ", path, " has schema version ", have,
          ", newer than this build understands (", kSchemaVersion, ")"));
    }
    if (have < kSchemaVersion) {
      RETURN_IF_ERROR(registry->Exec(kSchema));
      RETURN_IF_ERROR(registry->Exec(
          absl::StrCat("PRAGMA user_version=", kSchemaVersion).c_str()));
    }
    RETURN_IF_ERROR(txn.Commit());
  }
  return registry;
}

Registry::~Registry() { sqlite3_close(db_); }

absl::Status Registry::Exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteError(db_, rc, sql);
    sqlite3_free(err);
    return status;
  }
  return absl::OkStatus();
}

absl::Status Registry::AddPool(const PoolRecord& pool) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "INSERT INTO pools(name, backing, data_path, metadata_path, data_bytes, "
         "metadata_bytes, block_sectors, low_water_blocks, features, "
         "transaction_id, created_unix) VALUES(?,?,?,?,?,?,?,?,?,?,?)");
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
  return status;
}

absl::StatusOr<PoolRecord> Registry::GetPoolLocked(absl::string_view name) {
  Stmt s(db_, absl::StrCat("SELECT ", kPoolColumns,
                           " FROM pools WHERE name=?").c_str());
  s.Bind(1, name);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) {
    return absl::NotFoundError(absl::StrCat("no pool named '", name, "'"));
  }
  return ReadPool(s);
}

absl::StatusOr<PoolRecord> Registry::GetPool(absl::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetPoolLocked(name);
}

absl::StatusOr<std::vector<PoolRecord>> Registry::ListPools() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kPoolColumns,
                           " FROM pools ORDER BY name").c_str());
  std::vector<PoolRecord> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back(ReadPool(s));
  }
  return out;
}

absl::Status Registry::RemovePool(absl::string_view name, bool even_if_pending) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begin());
  RETURN_IF_ERROR(GetPoolLocked(name).status());
  ASSIGN_OR_RETURN(auto pending, GetPendingLocked(name));
  if (pending && !even_if_pending) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pool '", name, "' has a pending ", OpKindName(pending->kind),
        " of device ", pending->dev_id, "; open the pool to reconcile first"));
  }
  Stmt s(db_, "DELETE FROM pools WHERE name=?");
  s.Bind(1, name);
  RETURN_IF_ERROR(s.Run());
  return txn.Commit();
}

absl::Status Registry::SetPoolSizes(absl::string_view name, uint64_t data_bytes,
                                    uint64_t metadata_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "UPDATE pools SET data_bytes=?, metadata_bytes=? WHERE name=?");
  s.Bind(1, static_cast<int64_t>(data_bytes))
      .Bind(2, static_cast<int64_t>(metadata_bytes))
      .Bind(3, name);
  RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(absl::StrCat("no pool named '", name, "'"));
  }
  return absl::OkStatus();
}

absl::Status Registry::SetThinSize(absl::string_view pool, absl::string_view name,
                                   uint64_t size_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "UPDATE thins SET size_bytes=? WHERE pool=? AND name=? AND state='ready'");
  s.Bind(1, static_cast<int64_t>(size_bytes)).Bind(2, pool).Bind(3, name);
  RETURN_IF_ERROR(s.Run());
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(
        absl::StrCat("no ready thin device '", name, "' in pool '", pool, "'"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ThinRecord>> Registry::ListThins(
    absl::string_view pool) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kThinColumns,
                           " FROM thins WHERE pool=? ORDER BY dev_id").c_str());
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

absl::StatusOr<ThinRecord> Registry::GetThinLocked(absl::string_view pool,
                                                   absl::string_view name) {
  Stmt s(db_, absl::StrCat("SELECT ", kThinColumns,
                           " FROM thins WHERE pool=? AND name=?").c_str());
  s.Bind(1, pool).Bind(2, name);
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) {
    return absl::NotFoundError(
        absl::StrCat("no thin device '", name, "' in pool '", pool, "'"));
  }
  return ReadThin(s);
}

absl::StatusOr<ThinRecord> Registry::GetThin(absl::string_view pool,
                                             absl::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetThinLocked(pool, name);
}

absl::StatusOr<ThinRecord> Registry::GetThinById(absl::string_view pool,
                                                 uint32_t dev_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, absl::StrCat("SELECT ", kThinColumns,
                           " FROM thins WHERE pool=? AND dev_id=?").c_str());
  s.Bind(1, pool).Bind(2, static_cast<int64_t>(dev_id));
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) {
    return absl::NotFoundError(
        absl::StrCat("no thin device with id ", dev_id, " in pool '", pool, "'"));
  }
  return ReadThin(s);
}

absl::StatusOr<uint32_t> Registry::AllocateIdLocked(absl::string_view pool) {
  // The lowest freed id first (one index lookup), else the next never-used
  // id; both O(log n), so allocation stays flat with 10,000 devices.
  Stmt freed(db_, "SELECT MIN(dev_id) FROM free_ids WHERE pool=?");
  freed.Bind(1, pool);
  ASSIGN_OR_RETURN(bool row, freed.Step());
  if (row && !freed.IsNull(0)) {
    int64_t id = freed.Int(0);
    Stmt take(db_, "DELETE FROM free_ids WHERE pool=? AND dev_id=?");
    take.Bind(1, pool).Bind(2, id);
    RETURN_IF_ERROR(take.Run());
    return static_cast<uint32_t>(id);
  }
  Stmt next(db_, "SELECT next_id FROM pools WHERE name=?");
  next.Bind(1, pool);
  ASSIGN_OR_RETURN(row, next.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no pool named '", pool, "'"));
  int64_t id = next.Int(0);
  for (;; ++id) {
    if (id > kMaxDeviceId) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "pool '", pool, "' has no free 24-bit device id left"));
    }
    // Skip ids taken by hand (Quarantine) or rows from outside the counter.
    Stmt used(db_,
              "SELECT EXISTS(SELECT 1 FROM thins WHERE pool=?1 AND dev_id=?2) OR "
              "EXISTS(SELECT 1 FROM quarantine WHERE pool=?1 AND dev_id=?2)");
    used.Bind(1, pool).Bind(2, id);
    ASSIGN_OR_RETURN(bool r, used.Step());
    if (!r || used.Int(0) == 0) break;
  }
  Stmt bump(db_, "UPDATE pools SET next_id=? WHERE name=?");
  bump.Bind(1, id + 1).Bind(2, pool);
  RETURN_IF_ERROR(bump.Run());
  return static_cast<uint32_t>(id);
}

namespace {
absl::Status FreeId(sqlite3* db, absl::string_view pool, uint32_t dev_id) {
  Stmt s(db, "INSERT OR IGNORE INTO free_ids(pool, dev_id) VALUES(?,?)");
  s.Bind(1, pool).Bind(2, static_cast<int64_t>(dev_id));
  return s.Run();
}
}  // namespace

absl::StatusOr<std::optional<PendingOp>> Registry::GetPendingLocked(
    absl::string_view pool) {
  Stmt s(db_,
         "SELECT pool, kind, dev_id, origin_id, old_txid, new_txid FROM pending "
         "WHERE pool=?");
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

absl::StatusOr<std::optional<PendingOp>> Registry::GetPending(
    absl::string_view pool) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetPendingLocked(pool);
}

absl::StatusOr<PendingOp> Registry::BeginCreate(
    absl::string_view pool, absl::string_view name, uint64_t size_bytes,
    std::optional<uint32_t> origin_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(PoolRecord p, GetPoolLocked(pool));
  ASSIGN_OR_RETURN(auto pending, GetPendingLocked(pool));
  if (pending) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pool '", pool, "' already has a pending ", OpKindName(pending->kind),
        " of device ", pending->dev_id));
  }
  if (GetThinLocked(pool, name).ok()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "thin device '", name, "' already exists in pool '", pool, "'"));
  }
  ASSIGN_OR_RETURN(uint32_t id, AllocateIdLocked(pool));
  PendingOp op;
  op.pool = std::string(pool);
  op.kind = origin_id ? OpKind::kCreateSnap : OpKind::kCreateThin;
  op.dev_id = id;
  op.origin_id = origin_id;
  op.old_txid = p.transaction_id;
  op.new_txid = p.transaction_id + 1;

  Stmt thin(db_,
            "INSERT INTO thins(pool, dev_id, name, size_bytes, parent_id, state, "
            "created_unix) VALUES(?,?,?,?,?,'creating',?)");
  thin.Bind(1, pool)
      .Bind(2, static_cast<int64_t>(id))
      .Bind(3, name)
      .Bind(4, static_cast<int64_t>(size_bytes))
      .BindOpt(5, origin_id)
      .Bind(6, Now());
  RETURN_IF_ERROR(thin.Run());
  Stmt rec(db_,
           "INSERT INTO pending(pool, kind, dev_id, origin_id, old_txid, "
           "new_txid, started_unix) VALUES(?,?,?,?,?,?,?)");
  rec.Bind(1, pool)
      .Bind(2, OpKindName(op.kind))
      .Bind(3, static_cast<int64_t>(id))
      .BindOpt(4, origin_id)
      .Bind(5, static_cast<int64_t>(op.old_txid))
      .Bind(6, static_cast<int64_t>(op.new_txid))
      .Bind(7, Now());
  RETURN_IF_ERROR(rec.Run());
  RETURN_IF_ERROR(txn.Commit());
  return op;
}

absl::StatusOr<PendingOp> Registry::BeginDelete(absl::string_view pool,
                                                absl::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(PoolRecord p, GetPoolLocked(pool));
  ASSIGN_OR_RETURN(auto pending, GetPendingLocked(pool));
  if (pending) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pool '", pool, "' already has a pending ", OpKindName(pending->kind),
        " of device ", pending->dev_id));
  }
  ASSIGN_OR_RETURN(ThinRecord t, GetThinLocked(pool, name));
  if (t.state != ThinState::kReady) {
    return absl::FailedPreconditionError(absl::StrCat(
        "thin device '", name, "' is ", ThinStateName(t.state)));
  }
  PendingOp op;
  op.pool = std::string(pool);
  op.kind = OpKind::kDelete;
  op.dev_id = t.dev_id;
  op.old_txid = p.transaction_id;
  op.new_txid = p.transaction_id + 1;
  Stmt mark(db_, "UPDATE thins SET state='deleting' WHERE pool=? AND dev_id=?");
  mark.Bind(1, pool).Bind(2, static_cast<int64_t>(t.dev_id));
  RETURN_IF_ERROR(mark.Run());
  Stmt rec(db_,
           "INSERT INTO pending(pool, kind, dev_id, origin_id, old_txid, "
           "new_txid, started_unix) VALUES(?,'delete',?,NULL,?,?,?)");
  rec.Bind(1, pool)
      .Bind(2, static_cast<int64_t>(t.dev_id))
      .Bind(3, static_cast<int64_t>(op.old_txid))
      .Bind(4, static_cast<int64_t>(op.new_txid))
      .Bind(5, Now());
  RETURN_IF_ERROR(rec.Run());
  RETURN_IF_ERROR(txn.Commit());
  return op;
}

namespace {
// The pending row must still be the one the caller holds.
absl::Status CheckPendingMatches(const std::optional<PendingOp>& have,
                                 const PendingOp& want) {
  if (!have || have->dev_id != want.dev_id || have->kind != want.kind ||
      have->new_txid != want.new_txid) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pool '", want.pool, "': pending ", OpKindName(want.kind), " of device ",
        want.dev_id, " is no longer recorded (finished by another process?)"));
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status Registry::CommitOp(const PendingOp& op) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_, Txn::Sync::kLazy);
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(auto pending, GetPendingLocked(op.pool));
  RETURN_IF_ERROR(CheckPendingMatches(pending, op));
  if (op.kind == OpKind::kDelete) {
    Stmt s(db_, "DELETE FROM thins WHERE pool=? AND dev_id=?");
    s.Bind(1, op.pool).Bind(2, static_cast<int64_t>(op.dev_id));
    RETURN_IF_ERROR(s.Run());
    // Snapshots outlive their origin; the id may be reused, so forget it.
    Stmt orphans(db_, "UPDATE thins SET parent_id=NULL WHERE pool=? AND parent_id=?");
    orphans.Bind(1, op.pool).Bind(2, static_cast<int64_t>(op.dev_id));
    RETURN_IF_ERROR(orphans.Run());
    RETURN_IF_ERROR(FreeId(db_, op.pool, op.dev_id));
  } else {
    Stmt s(db_, "UPDATE thins SET state='ready' WHERE pool=? AND dev_id=?");
    s.Bind(1, op.pool).Bind(2, static_cast<int64_t>(op.dev_id));
    RETURN_IF_ERROR(s.Run());
  }
  Stmt tx(db_, "UPDATE pools SET transaction_id=? WHERE name=?");
  tx.Bind(1, static_cast<int64_t>(op.new_txid)).Bind(2, op.pool);
  RETURN_IF_ERROR(tx.Run());
  Stmt done(db_, "DELETE FROM pending WHERE pool=?");
  done.Bind(1, op.pool);
  RETURN_IF_ERROR(done.Run());
  return txn.Commit();
}

absl::Status Registry::AbortOp(const PendingOp& op,
                               std::optional<std::string> quarantine_reason) {
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(auto pending, GetPendingLocked(op.pool));
  RETURN_IF_ERROR(CheckPendingMatches(pending, op));
  if (op.kind == OpKind::kDelete && !quarantine_reason) {
    Stmt s(db_, "UPDATE thins SET state='ready' WHERE pool=? AND dev_id=?");
    s.Bind(1, op.pool).Bind(2, static_cast<int64_t>(op.dev_id));
    RETURN_IF_ERROR(s.Run());
  } else {
    Stmt s(db_, "DELETE FROM thins WHERE pool=? AND dev_id=?");
    s.Bind(1, op.pool).Bind(2, static_cast<int64_t>(op.dev_id));
    RETURN_IF_ERROR(s.Run());
  }
  if (!quarantine_reason && op.kind != OpKind::kDelete) {
    RETURN_IF_ERROR(FreeId(db_, op.pool, op.dev_id));
  }
  if (quarantine_reason) {
    Stmt q(db_,
           "INSERT OR REPLACE INTO quarantine(pool, dev_id, reason, at_unix) "
           "VALUES(?,?,?,?)");
    q.Bind(1, op.pool)
        .Bind(2, static_cast<int64_t>(op.dev_id))
        .Bind(3, *quarantine_reason)
        .Bind(4, Now());
    RETURN_IF_ERROR(q.Run());
  }
  Stmt done(db_, "DELETE FROM pending WHERE pool=?");
  done.Bind(1, op.pool);
  RETURN_IF_ERROR(done.Run());
  return txn.Commit();
}

absl::Status Registry::Quarantine(absl::string_view pool, uint32_t dev_id,
                                  absl::string_view reason) {
  if (dev_id > kMaxDeviceId) {
    return absl::InvalidArgumentError(
        absl::StrCat("device id ", dev_id, " is not a 24-bit id"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  Txn txn(db_);
  RETURN_IF_ERROR(txn.Begin());
  RETURN_IF_ERROR(GetPoolLocked(pool).status());
  Stmt q(db_,
         "INSERT OR REPLACE INTO quarantine(pool, dev_id, reason, at_unix) "
         "VALUES(?,?,?,?)");
  q.Bind(1, pool).Bind(2, static_cast<int64_t>(dev_id)).Bind(3, reason).Bind(4, Now());
  RETURN_IF_ERROR(q.Run());
  Stmt unfree(db_, "DELETE FROM free_ids WHERE pool=? AND dev_id=?");
  unfree.Bind(1, pool).Bind(2, static_cast<int64_t>(dev_id));
  RETURN_IF_ERROR(unfree.Run());
  return txn.Commit();
}

absl::StatusOr<std::vector<QuarantinedId>> Registry::ListQuarantined(
    absl::string_view pool) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT dev_id, reason FROM quarantine WHERE pool=? ORDER BY dev_id");
  s.Bind(1, pool);
  std::vector<QuarantinedId> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back({static_cast<uint32_t>(s.Int(0)), s.Text(1)});
  }
  return out;
}

}  // namespace thinpool
