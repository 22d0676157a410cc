// base::sqlite on a full filesystem (host: a tmpfs of its own). The WAL
// index (`DB-shm`) is a file SQLite maps and grows itself; where it cannot
// be grown, the connection keeps the index in its heap
// (locking_mode=EXCLUSIVE) rather than fail (docs/reliability.md).
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/sqlite.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "gtest/gtest.h"
#include "tests/support/scratch_dir.h"

namespace {

using base::sqlite::Db;

std::string LockingMode(Db& db) {
  auto stmt = db.Prepare("PRAGMA locking_mode");
  if (!stmt.ok()) return stmt.status().ToString();
  auto row = stmt->Step();
  if (!row.ok() || !*row) return "?";
  return stmt->Text(0);
}

int64_t CountRows(Db& db) {
  auto stmt = db.Prepare("SELECT count(*) FROM t");
  if (!stmt.ok()) return -1;
  auto row = stmt->Step();
  return row.ok() && *row ? stmt->Int(0) : -1;
}

// Writes until the filesystem has not one byte left.
void FillToTheLastByte(const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd.valid()) << strerror(errno);
  std::string chunk(64 << 10, 'x');
  for (size_t size = chunk.size(); size > 0; size /= 2) {
    while (::write(fd.get(), chunk.data(), size) == static_cast<ssize_t>(size)) {
    }
  }
  ASSERT_EQ(errno, ENOSPC);
}

// A registry whose WAL index is gone (copied or restored without its -shm,
// or deleted), opened on a filesystem with no byte free: the first
// connection must make the index and grow it to 32 KiB, which fails with
// SQLITE_IOERR_SHMSIZE (ENOSPC). Without the fallback in Db::Open the open
// fails; with it the database is readable and writable by this connection,
// which holds it alone until it closes.
TEST(SqliteFullDisk, IndexThatCannotBeMadeLivesInTheHeap) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (a tmpfs of its own)";
  testsupport::ScratchDir dir("sqlite-full");
  const std::string small = dir.path() + "/small";
  ASSERT_EQ(::mkdir(small.c_str(), 0755), 0);
  ASSERT_EQ(::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=1m"), 0) << strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{small};
  const std::string path = small + "/test.db";
  {
    auto db = Db::Open(path);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE((*db)->Exec("CREATE TABLE t(x)").ok());
    ASSERT_TRUE((*db)->Exec("INSERT INTO t VALUES (1), (2)").ok());
    EXPECT_EQ(LockingMode(**db), "normal");
  }
  struct stat st;
  ASSERT_EQ(::stat((path + "-shm").c_str(), &st), 0) << "the WAL index persists across closes";
  ASSERT_EQ(::unlink((path + "-shm").c_str()), 0);
  FillToTheLastByte(small + "/filler");

  // Opening only, and opening as a registry that may be created (which
  // first makes an empty -shm, beside the database, if it can).
  int64_t rows = 2;
  for (bool create : {false, true}) {
    SCOPED_TRACE(create ? "create" : "open only");
    auto db = Db::Open(path, create);
    ASSERT_TRUE(db.ok()) << db.status();
    EXPECT_EQ(LockingMode(**db), "exclusive");
    EXPECT_EQ(CountRows(**db), rows);
    // A removal commits (into the persisted WAL's pages).
    ASSERT_TRUE((*db)->Exec(absl::StrCat("DELETE FROM t WHERE x = ", rows)).ok());
    EXPECT_EQ(CountRows(**db), --rows);
  }

  // With space again, connections share the database as usual.
  ASSERT_EQ(::unlink((small + "/filler").c_str()), 0);
  auto db = Db::Open(path);
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ(LockingMode(**db), "normal");
  EXPECT_EQ(CountRows(**db), 0);
}

}  // namespace
