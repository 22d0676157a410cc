#include "base/sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/fsutil.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace base::sqlite {
namespace {

// On btrfs every rewrite of a file's block needs new space (copy on
// write), so on a full filesystem a commit could not rewrite its WAL, and a
// write to a clean page of the mapped WAL index (`path`-shm) would be SIGBUS
// (the page fault's space reservation fails: page_mkwrite). Files marked
// no-copy-on-write (FS_NOCOW_FL, settable only while a file is empty, so
// made here before SQLite makes them) are rewritten in place: the registry
// (when `create`), its WAL and its WAL index. Only on btrfs; missing
// sidecars of a registry that exists are made at every open (not only at
// creation), so a store made elsewhere, or whose -shm went, gets them too.
void PrepareNoCow(const std::string& path, bool create) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  struct statfs fs;
  if (::statfs(dir.c_str(), &fs) != 0 || static_cast<unsigned long>(fs.f_type) != BTRFS_SUPER_MAGIC) return;
  if (!create && ::access(path.c_str(), F_OK) != 0) return;  // no registry: make nothing beside it
  for (const char* suffix : {"", "-wal", "-shm"}) {
    if (*suffix == '\0' && !create) continue;
    std::string file = path + suffix;
    base::UniqueFd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd) base::SetNoCow(fd.get());  // else it exists, or cannot be made (full): SQLite decides
  }
}

// Less free space beside `path` than a few WAL transactions need.
bool LowOnSpace(const std::string& path) {
  constexpr uint64_t kLowBytes = 4 << 20;
  struct statvfs fs;
  if (::statvfs(path.c_str(), &fs) != 0) return false;
  return static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize < kLowBytes;
}

}  // namespace

// One connection to `path`. With `exclusive`, locking_mode=EXCLUSIVE is set
// before the first access, so SQLite keeps the WAL index in heap memory and
// never maps `path`-shm (https://sqlite.org/wal.html#noshm).
absl::StatusOr<std::unique_ptr<Db>> Db::OpenConnection(const std::string& path, bool create, bool exclusive) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) |
                               SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    absl::Status s = raw ? ErrorOf(raw, rc, absl::StrCat("open registry ", path))
                         : absl::UnavailableError(absl::StrCat("open registry ", path, ": ", sqlite3_errstr(rc)));
    sqlite3_close(raw);
    return s;
  }
  std::unique_ptr<Db> db(new Db(raw));
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);
  sqlite3_extended_result_codes(raw, 1);
  // The WAL keeps its file (and size) when the last connection closes
  // (SQLITE_FCNTL_PERSIST_WAL; sqlite3.h): on a full filesystem a removal
  // still has WAL pages to write its transaction into.
  int persist = 1;
  sqlite3_file_control(raw, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
  if (exclusive) {
    if (absl::Status s = db->Exec("PRAGMA locking_mode=EXCLUSIVE"); !s.ok()) return s;
  }
  // Opening must not need to write (a full disk must still allow ls, rm,
  // umount, check): the journal mode is persistent in the file, so it is set
  // only when it is not WAL yet; the other two are per connection.
  std::string mode;
  {
    ASSIGN_OR_RETURN(Stmt get, db->Prepare("PRAGMA journal_mode"));
    ASSIGN_OR_RETURN(bool row, get.Step());
    if (row) mode = get.Text(0);
  }  // finalized: a live statement is an open transaction
  if (mode != "wal") {
    if (absl::Status s = db->Exec("PRAGMA journal_mode=WAL"); !s.ok()) return s;
  }
  if (absl::Status s = db->Exec("PRAGMA synchronous=FULL"); !s.ok()) return s;
  if (absl::Status s = db->Exec("PRAGMA foreign_keys=ON"); !s.ok()) return s;
  if (LowOnSpace(path)) {
    // A WAL index rebuilt from the persisted WAL (the first connection
    // does that, and so does one in exclusive mode) counts its frames as not
    // yet copied back, so the next commit would append past them, into
    // space the filesystem does not have. The last close checkpointed them:
    // copying them again rewrites the same database pages in place, and
    // the next commit restarts the WAL at its start; a checkpoint after
    // every commit keeps each later one there too.
    (void)db->Exec("PRAGMA wal_checkpoint(RESTART)");
    (void)db->Exec("PRAGMA wal_autocheckpoint=1");
  }
  return db;
}

absl::StatusOr<std::unique_ptr<Db>> Db::Open(const std::string& path, bool create) {
  PrepareNoCow(path, create);
  absl::StatusOr<std::unique_ptr<Db>> db = OpenConnection(path, create, /*exclusive=*/false);
  // The first connection to open a WAL database resizes its index
  // (`path`-shm) from nothing, which a full filesystem refuses
  // (SQLITE_IOERR_SHMSIZE). Then the index lives in this connection's heap,
  // with the database locked for it alone until it closes; other processes
  // wait (busy timeout) as for a long transaction.
  if (!db.ok() && base::GetErrno(db.status()) == ENOSPC) {
    absl::StatusOr<std::unique_ptr<Db>> alone = OpenConnection(path, create, /*exclusive=*/true);
    if (alone.ok()) return alone;
  }
  return db;
}

Db::~Db() {
  if (db_ == nullptr) return;
  for (auto& [sql, stmts] : cache_) {
    for (sqlite3_stmt* st : stmts) sqlite3_finalize(st);
  }
  // The last connection to close copies the WAL back into the database
  // (fdatasync of the WAL, the directory and the database). A connection
  // that changed nothing skips it: an index rebuilt at open counts every
  // frame of the persisted WAL as not yet copied, so a read-only `ls` would
  // rewrite (and sync) pages the last writer already copied. Nothing durable
  // depends on it: a commit is in the WAL when it returns (docs/reliability.md).
  // A connection told so leaves it to the automatic checkpoint.
  if (!checkpoint_at_close_ || sqlite3_total_changes64(db_) == 0) {
    (void)sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  }
  sqlite3_close_v2(db_);
}

absl::Status Db::Error(int rc, absl::string_view what) const { return ErrorOf(db_, rc, what); }

absl::Status ErrorOf(sqlite3* db, int rc, absl::string_view what) {
  std::string msg = absl::StrCat(what, ": ", sqlite3_errmsg(db), " (sqlite ", rc, ")");
  // The system call's errno behind an I/O error or a full database: say
  // "No space left on device" when that is the cause.
  int sys = sqlite3_system_errno(db);
  if ((rc & 0xff) == SQLITE_FULL) sys = ENOSPC;
  if (((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL || (rc & 0xff) == SQLITE_CANTOPEN) &&
      sys != 0) {
    absl::StrAppend(&msg, ": ", std::strerror(sys));
    if (sys == ENOSPC || sys == EDQUOT) {
      return base::WithErrno(absl::ResourceExhaustedError(msg), sys);
    }
    return base::WithErrno(absl::InternalError(msg), sys);
  }
  // Only a UNIQUE or PRIMARY KEY conflict means "already exists"; a foreign
  // key, CHECK or NOT NULL failure is a broken precondition (a parent that
  // vanished, a bad state) and must not take an "already there" path.
  if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return absl::AlreadyExistsError(msg);
  }
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      return absl::FailedPreconditionError(msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_CANTOPEN:
      return absl::PermissionDeniedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<sqlite3_stmt*> Db::Take(absl::string_view sql, bool* whole) {
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    auto it = cache_.find(std::string(sql));
    if (it != cache_.end() && !it->second.empty()) {
      sqlite3_stmt* stmt = it->second.back();
      it->second.pop_back();
      --cached_;
      *whole = true;
      return stmt;
    }
  }
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, &tail);
  if (rc != SQLITE_OK) return Error(rc, absl::StrCat("registry: prepare ", sql.substr(0, 60)));
  absl::string_view rest = tail == nullptr ? "" : sql.substr(static_cast<size_t>(tail - sql.data()));
  *whole = rest.find_first_not_of(" \t\n;") == absl::string_view::npos;
  return stmt;
}

void Db::Release(sqlite3_stmt* stmt) {
  sqlite3_reset(stmt);  // ends its read of the database, if it was reading
  sqlite3_clear_bindings(stmt);
  constexpr size_t kMaxCached = 64;
  {
    std::lock_guard<std::mutex> l(cache_mu_);
    if (cached_ < kMaxCached) {
      cache_[sqlite3_sql(stmt)].push_back(stmt);
      ++cached_;
      return;
    }
  }
  sqlite3_finalize(stmt);
}

absl::Status Db::Exec(absl::string_view sql) {
  bool whole = false;
  ASSIGN_OR_RETURN(sqlite3_stmt* first, Take(sql, &whole));
  if (whole) {
    if (first == nullptr) return absl::OkStatus();  // nothing but comments
    return Stmt(this, first).Run();
  }
  sqlite3_finalize(first);  // several statements: SQLite runs them in turn
  std::string s(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    absl::Status status = Error(rc, absl::StrCat("registry: ", s.substr(0, 60)));
    sqlite3_free(err);
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<Stmt> Db::Prepare(absl::string_view sql) {
  bool whole = false;
  ASSIGN_OR_RETURN(sqlite3_stmt* stmt, Take(sql, &whole));
  return Stmt(this, stmt);
}

int64_t Db::Changes() const { return sqlite3_changes64(db_); }

absl::Status Db::SyncWal() {
  sqlite3_file* wal = nullptr;
  int rc = sqlite3_file_control(db_, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
  if (rc != SQLITE_OK) return Error(rc, "registry: finding the WAL to sync");
  if (wal == nullptr || wal->pMethods == nullptr) {
    return absl::InternalError("registry: no WAL open to sync (not in WAL mode?)");
  }
  errno = 0;
  rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
  if (rc != SQLITE_OK) {
    const int err = errno;
    std::string what = absl::StrCat("registry: syncing the WAL: ", sqlite3_errstr(rc), " (sqlite ", rc, ")");
    if (err == 0) return absl::InternalError(what);
    return base::ErrnoError(err, what);
  }
  return absl::OkStatus();
}

Stmt& Stmt::Bind(int i, absl::string_view v) {
  int rc = sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK && bind_error_.ok()) bind_error_ = db_->Error(rc, "registry: bind");
  return *this;
}

Stmt& Stmt::Bind(int i, int64_t v) {
  int rc = sqlite3_bind_int64(stmt_, i, v);
  if (rc != SQLITE_OK && bind_error_.ok()) bind_error_ = db_->Error(rc, "registry: bind");
  return *this;
}

Stmt& Stmt::BindNull(int i) {
  int rc = sqlite3_bind_null(stmt_, i);
  if (rc != SQLITE_OK && bind_error_.ok()) bind_error_ = db_->Error(rc, "registry: bind");
  return *this;
}

absl::StatusOr<bool> Stmt::Step() {
  if (!bind_error_.ok()) return bind_error_;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return db_->Error(rc, absl::StrCat("registry: ", std::string(sqlite3_sql(stmt_)).substr(0, 60)));
}

absl::Status Stmt::Run() {
  for (;;) {
    absl::StatusOr<bool> row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

std::string Stmt::Text(int col) const {
  const unsigned char* t = sqlite3_column_text(stmt_, col);
  if (t == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(t),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, col)));
}

int64_t Stmt::Int(int col) const { return sqlite3_column_int64(stmt_, col); }

bool Stmt::IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

absl::StatusOr<std::unique_ptr<Transaction>> Transaction::Begin(Db& db) {
  if (absl::Status s = db.Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  return std::unique_ptr<Transaction>(new Transaction(db));
}

Transaction::~Transaction() {
  if (!done_) (void)db_.Exec("ROLLBACK");
}

absl::Status Transaction::Commit() {
  absl::Status s = db_.Exec("COMMIT");
  if (s.ok()) done_ = true;
  return s;
}

}  // namespace base::sqlite
