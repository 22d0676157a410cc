// base::sqlite's statement cache (shared by threads) and close (no privileges: a
// registry in a scratch directory).
#include <sys/stat.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/sqlite.h"
#include "base/sqlite_shared.h"
#include "gtest/gtest.h"
#include "tests/support/scratch_dir.h"

namespace {

using base::sqlite::Db;
using base::sqlite::SharedDb;

int64_t IntOf(Db& db, const std::string& sql) {
  auto stmt = db.Prepare(sql);
  if (!stmt.ok()) return -1;
  auto row = stmt->Step();
  return row.ok() && *row ? stmt->Int(0) : -1;
}

class SqliteCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = Db::Open(dir_.Sub("r.db"));
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    ASSERT_TRUE(db_->Exec("CREATE TABLE t(x INTEGER); INSERT INTO t VALUES(1), (2), (3);").ok());
  }
  testsupport::ScratchDir dir_{"sqlite-cache"};
  std::unique_ptr<Db> db_;
};

TEST_F(SqliteCacheTest, AReusedStatementStartsUnboundAndFromTheTop) {
  for (int round = 0; round < 3; ++round) {
    auto s = db_->Prepare("SELECT ?, x FROM t ORDER BY x");
    ASSERT_TRUE(s.ok()) << s.status();
    auto row = s->Step();
    ASSERT_TRUE(row.ok() && *row);
    EXPECT_TRUE(s->IsNull(0)) << "round " << round << ": bindings of the last use are cleared";
    EXPECT_EQ(s->Int(1), 1) << "round " << round << ": the statement restarts";
    s->Bind(1, int64_t{7});  // left bound, and the statement half read
  }
  // Two live uses of one text at once get two statements.
  auto a = db_->Prepare("SELECT x FROM t ORDER BY x");
  auto b = db_->Prepare("SELECT x FROM t ORDER BY x");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(*a->Step());
  ASSERT_TRUE(*b->Step());
  ASSERT_TRUE(*b->Step());
  EXPECT_EQ(a->Int(0), 1);
  EXPECT_EQ(b->Int(0), 2);
}

TEST_F(SqliteCacheTest, AStatementGivenBackHoldsNoReadOfTheDatabase) {
  {
    auto s = db_->Prepare("SELECT x FROM t");
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE(*s->Step());  // reading, then abandoned
  }
  auto other = Db::Open(dir_.Sub("r.db"), /*create=*/false);
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE((*other)->Exec("INSERT INTO t VALUES(4)").ok());
  // A checkpoint that must copy every frame: a reader left open would block it.
  auto ck = (*other)->Prepare("PRAGMA wal_checkpoint(TRUNCATE)");
  ASSERT_TRUE(ck.ok());
  ASSERT_TRUE(*ck->Step());
  EXPECT_EQ(ck->Int(0), 0) << "checkpoint was blocked by a reader";
  EXPECT_EQ(IntOf(*db_, "SELECT count(*) FROM t"), 4);
}

// SharedDb's threads share one connection and its cache: a statement is
// taken out of the cache while in use, so two threads asking for the same
// text at once never get the same statement (graph_concurrency_test's
// 2 processes x 8 threads use it the same way).
TEST_F(SqliteCacheTest, SharedDbThreadsNeverShareAStatement) {
  auto db = Db::Open(dir_.Sub("r.db"), /*create=*/false);
  ASSERT_TRUE(db.ok()) << db.status();
  SharedDb shared(std::move(*db));
  constexpr int kThreads = 8, kRounds = 200;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        if (i % 10 == 0) {
          auto w = shared.Write(/*relaxed=*/i % 20 == 0);
          if (!w.ok()) {
            ++errors;
            continue;
          }
          auto ins = w->db().Prepare("INSERT INTO t VALUES(?)");
          if (!ins.ok() || !ins->Bind(1, int64_t{100 + t}).Run().ok() || !w->Commit().ok()) ++errors;
          continue;
        }
        auto l = shared.Lock();
        auto s = shared.db().Prepare("SELECT x FROM t WHERE x <= ? ORDER BY x");
        if (!s.ok()) {
          ++errors;
          continue;
        }
        s->Bind(1, int64_t{3});
        int64_t sum = 0;
        for (;;) {
          auto row = s->Step();
          if (!row.ok()) {
            ++errors;
            break;
          }
          if (!*row) break;
          sum += s->Int(0);
        }
        if (sum != 6) ++errors;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  auto l = shared.Lock();
  EXPECT_EQ(IntOf(shared.db(), "SELECT count(*) FROM t"), 3 + kThreads * (kRounds / 10));
}

// A connection that changed nothing leaves the database file alone when it
// closes (no checkpoint: SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE), so a read-only
// command syncs nothing.
TEST_F(SqliteCacheTest, AReadOnlyConnectionDoesNotCheckpointAtClose) {
  db_.reset();  // the writer's close copies the WAL into the file
  struct stat before;
  ASSERT_EQ(::stat(dir_.Sub("r.db").c_str(), &before), 0);
  {
    auto reader = Db::Open(dir_.Sub("r.db"), /*create=*/false);
    ASSERT_TRUE(reader.ok()) << reader.status();
    EXPECT_EQ(IntOf(**reader, "SELECT count(*) FROM t"), 3);
  }
  struct stat after;
  ASSERT_EQ(::stat(dir_.Sub("r.db").c_str(), &after), 0);
  EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
  EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec) << "a read-only close rewrote the database";
}

TEST_F(SqliteCacheTest, ErrorsStillNameTheStatement) {
  auto bad = db_->Prepare("SELECT nope FROM t");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("no such column"), std::string::npos) << bad.status();
  absl::Status dup = db_->Exec("CREATE TABLE t(y)");
  EXPECT_FALSE(dup.ok());
}

}  // namespace
