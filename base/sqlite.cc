#include "base/sqlite.h"

#include "absl/strings/str_cat.h"

namespace base::sqlite {

absl::StatusOr<std::unique_ptr<Db>> Db::Open(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                               SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    sqlite3_close(raw);
    return absl::UnavailableError(absl::StrCat("open registry ", path, ": ", msg));
  }
  std::unique_ptr<Db> db(new Db(raw));
  sqlite3_busy_timeout(raw, 30000);
  sqlite3_extended_result_codes(raw, 1);
  // journal_mode returns a row; Exec ignores rows.
  if (absl::Status s = db->Exec("PRAGMA journal_mode=WAL"); !s.ok()) return s;
  if (absl::Status s = db->Exec("PRAGMA synchronous=FULL"); !s.ok()) return s;
  if (absl::Status s = db->Exec("PRAGMA foreign_keys=ON"); !s.ok()) return s;
  return db;
}

Db::~Db() { sqlite3_close_v2(db_); }

absl::Status Db::Error(int rc, absl::string_view what) const {
  std::string msg = absl::StrCat(what, ": ", sqlite3_errmsg(db_), " (sqlite ", rc, ")");
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

absl::Status Db::Exec(absl::string_view sql) {
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
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) return Error(rc, absl::StrCat("registry: prepare ", sql.substr(0, 60)));
  return Stmt(this, stmt);
}

int64_t Db::Changes() const { return sqlite3_changes64(db_); }

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
