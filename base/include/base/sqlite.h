// A small RAII wrapper over SQLite for the registries (layer store, volumes).
#ifndef DMTHIN_BASE_SQLITE_H_
#define DMTHIN_BASE_SQLITE_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace base::sqlite {

class Stmt;

// A status for SQLite result `rc` on connection `db`: the code by kind
// (constraint: AlreadyExists, busy: Unavailable, corrupt / not a database:
// DataLoss, full: ResourceExhausted), the system errno attached.
absl::Status ErrorOf(sqlite3* db, int rc, absl::string_view what);

class Db {
 public:
  // How long a connection waits for another's lock before SQLITE_BUSY.
  static constexpr int kBusyTimeoutMs = 30000;

  // Opens `path` (creating it only if `create`) with WAL journaling,
  // synchronous=FULL, foreign keys on and a busy timeout so concurrent
  // processes wait, not fail. Writes nothing to a database already in WAL
  // mode. Errors carry the system errno where SQLite had one (ENOSPC on a
  // full filesystem: ResourceExhausted). The WAL persists across closes; on
  // a filesystem too full for the WAL index the connection holds the
  // database alone (locking_mode=EXCLUSIVE, index in memory) until closed.
  static absl::StatusOr<std::unique_ptr<Db>> Open(const std::string& path, bool create = true);
  ~Db();

  // Runs `sql` (one statement from the cache below, or several).
  absl::Status Exec(absl::string_view sql);
  // A statement for `sql`: compiled once per connection and kept (up to 64
  // texts); the Stmt gives it back, reset and unbound, when destroyed, so a
  // registry's fixed statements are not compiled again at every call.
  absl::StatusOr<Stmt> Prepare(absl::string_view sql);
  int64_t Changes() const;
  // Syncs the WAL as a synchronous=FULL commit does (the VFS's own xSync of
  // the journal file, SQLITE_FCNTL_JOURNAL_POINTER): every transaction
  // committed so far is then on disk. For a connection that commits at
  // synchronous=NORMAL (SharedDb::SyncCommitsExplicitly).
  absl::Status SyncWal();
  sqlite3* raw() { return db_; }

  // This connection's close does not copy the WAL back into the database,
  // even when it changed something and is the last to close: SQLite's
  // automatic checkpoint (PRAGMA wal_autocheckpoint, after a commit that
  // leaves that many pages in the WAL) does, in whichever process commits
  // then. For a registry that processes open, change a little and close (a
  // CLI): the close's checkpoint would cost a sync of the WAL and of the
  // database every time. Durability does not depend on it (a commit is in
  // the WAL when it returns; the WAL persists).
  void LeaveCheckpointsToAutocheckpoint() { checkpoint_at_close_ = false; }

  // Error status for the last failure on this connection.
  absl::Status Error(int rc, absl::string_view what) const;

 private:
  friend class Stmt;
  explicit Db(sqlite3* db) : db_(db) {}
  static absl::StatusOr<std::unique_ptr<Db>> OpenConnection(const std::string& path, bool create,
                                                            bool exclusive);
  // A statement for the first statement of `sql`, from the cache or
  // compiled; `whole`: `sql` held no other statement.
  absl::StatusOr<sqlite3_stmt*> Take(absl::string_view sql, bool* whole);
  // Takes a statement back into the cache (or finalizes it).
  void Release(sqlite3_stmt* stmt);
  sqlite3* db_;
  std::mutex cache_mu_;
  std::unordered_map<std::string, std::vector<sqlite3_stmt*>> cache_;
  size_t cached_ = 0;
  bool checkpoint_at_close_ = true;
};

class Stmt {
 public:
  Stmt(Db* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Stmt(Stmt&& o) noexcept : db_(o.db_), stmt_(o.stmt_) { o.stmt_ = nullptr; }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() {
    if (stmt_ != nullptr) db_->Release(stmt_);
  }

  // Binds by 1-based position; std::nullopt / empty optional binds NULL.
  Stmt& Bind(int i, absl::string_view v);
  Stmt& Bind(int i, int64_t v);
  Stmt& BindNull(int i);
  Stmt& BindOrNull(int i, const std::string& v) {
    return v.empty() ? BindNull(i) : Bind(i, v);
  }
  Stmt& BindOrNull(int i, std::optional<int64_t> v) {
    return v.has_value() ? Bind(i, *v) : BindNull(i);
  }

  // Steps once: true if a row is available, false when done.
  absl::StatusOr<bool> Step();
  // Steps to completion (for statements without rows).
  absl::Status Run();

  std::string Text(int col) const;
  int64_t Int(int col) const;
  bool IsNull(int col) const;

 private:
  Db* db_;
  sqlite3_stmt* stmt_;
  absl::Status bind_error_;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back on destruction unless committed.
class Transaction {
 public:
  static absl::StatusOr<std::unique_ptr<Transaction>> Begin(Db& db);
  ~Transaction();
  absl::Status Commit();

 private:
  explicit Transaction(Db& db) : db_(db) {}
  Db& db_;
  bool done_ = false;
};

}  // namespace base::sqlite
DMTHIN_API_END

#endif  // DMTHIN_BASE_SQLITE_H_
