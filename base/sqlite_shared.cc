// base::sqlite::SharedDb: one connection, one writer, readers never behind
// another process's writer.
#include "base/sqlite_shared.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <utility>

namespace base::sqlite {

void OwnedMutex::lock() {
  if (HeldByThisThread()) {
    std::fprintf(stderr, "dmthin: registry connection locked twice by one thread (a call under the "
                         "registry lock re-entered it); aborting rather than deadlocking\n");
    std::abort();
  }
  mu_.lock();
  owner_.store(std::this_thread::get_id());
}

void OwnedMutex::unlock() {
  owner_.store(std::thread::id());
  mu_.unlock();
}

Writer::~Writer() {
  if (db_ == nullptr) return;  // moved from
  txn_.reset();                // ROLLBACK unless committed; before the pragma
  if (restore_full_) (void)db_->Exec("PRAGMA synchronous=FULL");
}

absl::Status Writer::Commit() {
  if (absl::Status s = txn_->Commit(); !s.ok()) return s;
  return sync_wal_ ? db_->SyncWal() : absl::OkStatus();
}

absl::Status SharedDb::SyncCommitsExplicitly() {
  std::unique_lock<OwnedMutex> lock(mu_);
  if (absl::Status s = db_->Exec("PRAGMA synchronous=NORMAL"); !s.ok()) return s;
  explicit_sync_ = true;
  return absl::OkStatus();
}

absl::StatusOr<Writer> SharedDb::Write(bool relaxed) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(Db::kBusyTimeoutMs);
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    std::unique_lock<OwnedMutex> lock(mu_);
    // Set outside a transaction (SQLite refuses inside one).
    bool relaxed_now = relaxed && !explicit_sync_ && db_->Exec("PRAGMA synchronous=NORMAL").ok();
    sqlite3_busy_timeout(db_->raw(), 0);
    absl::StatusOr<std::unique_ptr<Transaction>> txn = Transaction::Begin(*db_);
    sqlite3_busy_timeout(db_->raw(), Db::kBusyTimeoutMs);
    if (txn.ok()) {
      return Writer(std::move(lock), db_.get(), relaxed_now, explicit_sync_ && !relaxed,
                    std::move(*txn));
    }
    if (relaxed_now) (void)db_->Exec("PRAGMA synchronous=FULL");
    lock.unlock();
    if (!absl::IsUnavailable(txn.status()) || std::chrono::steady_clock::now() >= deadline) {
      return txn.status();
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(5000));
  }
}

}  // namespace base::sqlite
