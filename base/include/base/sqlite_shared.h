// base::sqlite::SharedDb — one SQLite connection shared by the threads and
// the components of a process (the layer store and the driver it opened
// keep their records in one registry, on one connection: one writer per
// process, no connection contending with another of the same process).
//
// Every use of the connection holds its mutex, but never while waiting for
// another process: a writer (Write) takes SQLite's write lock with BEGIN
// IMMEDIATE without a busy timeout and, while another process holds it,
// lets go of the mutex between tries. So a reader (WAL readers never wait
// for SQLite's locks) waits only for this process's registry work in
// progress, never behind a writer that waits for another process.
//
// The mutex is not recursive: a thread that holds it and asks again (a
// driver call made under the store's lock) is a bug; Lock() aborts with a
// message rather than hang, and HeldByThisThread() lets a caller refuse
// with an error first.
#ifndef DMTHIN_BASE_SQLITE_SHARED_H_
#define DMTHIN_BASE_SQLITE_SHARED_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/export.h"
#include "base/sqlite.h"

DMTHIN_API_BEGIN
namespace base::sqlite {

// A mutex that knows which thread holds it.
class OwnedMutex {
 public:
  void lock();
  void unlock();
  bool HeldByThisThread() const { return owner_.load() == std::this_thread::get_id(); }

 private:
  std::mutex mu_;
  std::atomic<std::thread::id> owner_{};
};

class SharedDb;

// A write transaction on a SharedDb: the connection's mutex and SQLite's
// write lock, held until destroyed; rolled back unless committed.
class Writer {
 public:
  Writer(Writer&& o) noexcept
      : lock_(std::move(o.lock_)), db_(std::exchange(o.db_, nullptr)),
        restore_full_(o.restore_full_), sync_wal_(o.sync_wal_), txn_(std::move(o.txn_)) {}
  Writer& operator=(Writer&&) = delete;
  ~Writer();
  Db& db() { return *db_; }
  absl::Status Commit();

 private:
  friend class SharedDb;
  Writer(std::unique_lock<OwnedMutex> lock, Db* db, bool restore_full, bool sync_wal,
         std::unique_ptr<Transaction> txn)
      : lock_(std::move(lock)), db_(db), restore_full_(restore_full), sync_wal_(sync_wal),
        txn_(std::move(txn)) {}
  std::unique_lock<OwnedMutex> lock_;
  Db* db_;
  bool restore_full_;  // sets synchronous=FULL again when done
  bool sync_wal_;      // Commit syncs the WAL itself (SyncCommitsExplicitly)
  std::unique_ptr<Transaction> txn_;
};

class SharedDb {
 public:
  explicit SharedDb(std::unique_ptr<Db> db) : db_(std::move(db)) {}

  Db& db() { return *db_; }
  OwnedMutex& mutex() { return mu_; }
  bool HeldByThisThread() const { return mu_.HeldByThisThread(); }

  // The connection for reading (or one statement of its own).
  std::unique_lock<OwnedMutex> Lock() { return std::unique_lock<OwnedMutex>(mu_); }

  // BEGIN IMMEDIATE, waiting up to Db::kBusyTimeoutMs for another process's
  // write without holding the mutex meanwhile (Unavailable after that).
  // `relaxed`: the commit does not wait for the disk (synchronous=NORMAL):
  // only for records a later synchronous commit of the same connection
  // makes durable, or whose loss to a power cut a check repairs (WAL never
  // leaves a torn database; a crash of the process loses nothing).
  absl::StatusOr<Writer> Write(bool relaxed = false);
  // From now on the connection rests at synchronous=NORMAL and a Writer that
  // is not relaxed syncs the WAL itself once its COMMIT is done (Db::SyncWal:
  // the same fdatasync a synchronous=FULL commit makes), so no transaction
  // sets the level: a PRAGMA that sets it is compiled again at every run
  // (SQLite runs such a pragma once per preparation), ~0.3-0.5 ms per relaxed
  // transaction under the vm tier's TCG. Only for a connection whose every
  // write goes through Write(): any other write would not be synced. Another
  // process may read a synced commit just before it is on disk (between
  // COMMIT and the sync), as it may a relaxed one: whoever acts outside the
  // database on what it read must first take the lock the writer held
  // (thinpool's pool lock); inside the database, any later synced commit
  // covers the earlier frames of the WAL.
  absl::Status SyncCommitsExplicitly();

 private:
  bool explicit_sync_ = false;
  OwnedMutex mu_;
  std::unique_ptr<Db> db_;
};

}  // namespace base::sqlite
DMTHIN_API_END

#endif  // DMTHIN_BASE_SQLITE_SHARED_H_
