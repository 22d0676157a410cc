// graph::LayerRecords: the drivers' per-layer records and their one state
// machine (creating -> ready -> removing -> dropped), in SQLite.
#include "graph/records.h"

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/sqlite.h"
#include "base/sqlite_shared.h"
#include "gtest/gtest.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/sqlite_column.h"

namespace graph {
namespace {

using testsupport::SqlColumn;

TEST(LayerRecordsTest, StateMachineAndFields) {
  testsupport::ScratchDir dir("graph-records");
  auto opened = LayerRecords::Open(dir.path() + "/records.db");
  ASSERT_TRUE(opened.ok()) << opened.status();
  LayerRecords& r = **opened;
  std::map<std::string, std::string> f = {{"link", "ABCD"}, {"lower", "l/A:l/B"}, {"odd", "a=b\nc\\d"}};
  ASSERT_TRUE(r.Begin("x", f).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(r.Begin("x", f)));
  EXPECT_TRUE(absl::IsNotFound(r.GetReady("x").status())) << "creating is not a layer yet";
  auto got = r.Get("x");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->state, RecordState::kCreating);
  EXPECT_EQ((*got)->fields, f);
  f["link"] = "EFGH";
  ASSERT_TRUE(r.Ready("x", f).ok());
  auto ready = r.GetReady("x");
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(ready->Field("link"), "EFGH");
  EXPECT_EQ(ready->Field("odd"), "a=b\nc\\d");
  EXPECT_EQ(ready->Field("none"), "");
  ASSERT_TRUE(r.Begin("y", {}).ok());
  auto ids = r.Ids();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::set<std::string>{"x", "y"})) << "every state has an id";
  ASSERT_TRUE(r.Drop("y").ok());
  ASSERT_TRUE(r.Removing("x").ok());
  EXPECT_TRUE(absl::IsNotFound(r.GetReady("x").status()));
  ASSERT_TRUE(r.Restore("x").ok());
  EXPECT_TRUE(r.GetReady("x").ok());
  ASSERT_TRUE(r.Drop("x").ok());
  EXPECT_TRUE(r.Drop("x").ok()) << "dropping nothing is fine";
  EXPECT_TRUE(absl::IsNotFound(r.Ready("x", f)));
  EXPECT_TRUE(absl::IsNotFound(r.Removing("x")));
}

TEST(LayerRecordsTest, MigrateKeepsExistingRecordsAndPersists) {
  testsupport::ScratchDir dir("graph-records");
  std::string path = dir.path() + "/records.db";
  {
    auto r = LayerRecords::Open(path);
    ASSERT_TRUE(r.ok());
    ASSERT_TRUE((*r)->Begin("a", {{"v", "new"}}).ok());
    ASSERT_TRUE((*r)->Migrate({{"a", RecordState::kReady, {{"v", "old"}}},
                               {"b", RecordState::kReady, {{"v", "old"}}}}).ok());
  }
  auto r = LayerRecords::Open(path);
  ASSERT_TRUE(r.ok());
  auto all = (*r)->List();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].id, "a");
  EXPECT_EQ((*all)[0].Field("v"), "new");
  EXPECT_EQ((*all)[0].state, RecordState::kCreating);
  EXPECT_EQ((*all)[1].id, "b");
  EXPECT_EQ((*all)[1].state, RecordState::kReady);
  EXPECT_EQ(ParseRecordState(RecordStateName(RecordState::kRemoving)), RecordState::kRemoving);
  EXPECT_FALSE(ParseRecordState("deleting").has_value());
}

// Driver-wide entries: put (replacing), read by kind and name, deleted;
// DropWithEntry drops the record and writes the entry together; Migrate
// writes records and entries in one transaction, existing ones winning; a
// records.db made before the entries' table gets it at open.
TEST(LayerRecordsTest, DriverEntries) {
  testsupport::ScratchDir dir("graph-records");
  std::string path = dir.path() + "/records.db";
  {
    // As an earlier release made it: the records' table only.
    auto db = base::sqlite::Db::Open(path, /*create=*/true);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE((*db)->Exec("CREATE TABLE driver_records(id TEXT PRIMARY KEY, state TEXT NOT NULL, "
                            "fields TEXT NOT NULL DEFAULT '')").ok());
  }
  {
    auto opened = LayerRecords::Open(path);
    ASSERT_TRUE(opened.ok()) << opened.status();
    LayerRecords& r = **opened;
    ASSERT_TRUE(r.PutEntry({"base", "base", {{"state", "creating"}}}, /*relaxed=*/true).ok());
    ASSERT_TRUE(r.PutEntry({"base", "base", {{"state", "ready"}}}, /*relaxed=*/false).ok());
    ASSERT_TRUE(r.PutEntry({"deactivate", "b", {}}, /*relaxed=*/true).ok());
    ASSERT_TRUE(r.PutEntry({"deactivate", "a", {}}, /*relaxed=*/true).ok());
    auto base = r.GetEntry("base", "base");
    ASSERT_TRUE(base.ok() && base->has_value());
    EXPECT_EQ((*base)->Field("state"), "ready");
    auto none = r.GetEntry("base", "other");
    ASSERT_TRUE(none.ok());
    EXPECT_FALSE(none->has_value());
    auto queued = r.Entries("deactivate");
    ASSERT_TRUE(queued.ok()) << queued.status();
    ASSERT_EQ(queued->size(), 2u);
    EXPECT_EQ((*queued)[0].name, "a");
    ASSERT_TRUE(r.DeleteEntry("deactivate", "a").ok());
    ASSERT_TRUE(r.DeleteEntry("deactivate", "a").ok()) << "deleting nothing is fine";
    ASSERT_TRUE(r.Begin("gone", {{"thin", "t1"}}).ok());
    ASSERT_TRUE(r.Ready("gone", {{"thin", "t1"}}).ok());
    ASSERT_TRUE(r.DropWithEntry("gone", {"deferred", "t1", {{"id", "gone"}}}).ok());
    ASSERT_TRUE(r.Migrate({{"old", RecordState::kReady, {}}},
                          {{"base", "base", {{"state", "creating"}}}, {"deferred", "t2", {{"id", "x"}}}})
                    .ok());
  }
  auto r = LayerRecords::Open(path);
  ASSERT_TRUE(r.ok());
  auto gone = (*r)->Get("gone");
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
  auto deferred = (*r)->Entries("deferred");
  ASSERT_TRUE(deferred.ok());
  ASSERT_EQ(deferred->size(), 2u);
  EXPECT_EQ((*deferred)[0].name, "t1");
  EXPECT_EQ((*deferred)[0].Field("id"), "gone");
  auto base = (*r)->GetEntry("base", "base");
  ASSERT_TRUE(base.ok() && base->has_value());
  EXPECT_EQ((*base)->Field("state"), "ready") << "an existing entry wins over a migrated one";
  auto queued = (*r)->Entries("deactivate");
  ASSERT_TRUE(queued.ok());
  ASSERT_EQ(queued->size(), 1u);
  EXPECT_TRUE((*r)->GetReady("old").ok());
}

// <root>/records-home: written at the first claim, the same claim again is
// fine, the other way is refused.
TEST(LayerRecordsTest, ClaimHomeRefusesTheOtherWay) {
  testsupport::ScratchDir dir("graph-records");
  std::string store_root = dir.path() + "/store/drv";
  ASSERT_TRUE(LayerRecords::ClaimHome(store_root, /*own=*/false, "test").ok());
  EXPECT_TRUE(LayerRecords::ClaimHome(store_root, /*own=*/false, "test").ok());
  absl::Status alone = LayerRecords::ClaimHome(store_root, /*own=*/true, "test");
  EXPECT_TRUE(absl::IsFailedPrecondition(alone)) << alone;
  std::string own_root = dir.path() + "/own";
  ASSERT_TRUE(LayerRecords::ClaimHome(own_root, /*own=*/true, "test").ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(LayerRecords::ClaimHome(own_root, /*own=*/false, "test")));
}

// In a store, Ready is held in memory (visible to this process) until the
// store's transaction writes it: the record and the layer commit together.
TEST(LayerRecordsTest, InStoreReadyCommitsWithTheStoresTransaction) {
  testsupport::ScratchDir dir("graph-records");
  std::string path = dir.path() + "/layers.db";
  auto db = base::sqlite::Db::Open(path, true);
  ASSERT_TRUE(db.ok());
  ASSERT_TRUE((*db)->Exec(LayerRecords::Schema()).ok());
  auto conn = std::make_shared<base::sqlite::SharedDb>(std::move(*db));
  std::shared_ptr<LayerRecords> r = LayerRecords::InStore(path, conn);
  ASSERT_TRUE(r->Begin("x", {{"link", "A"}}).ok());
  EXPECT_EQ(SqlColumn(path, "SELECT state FROM driver_records WHERE id = 'x'"),
            std::vector<std::string>{"creating"});
  ASSERT_TRUE(r->Ready("x", {{"link", "B"}}).ok());
  auto here = r->GetReady("x");
  ASSERT_TRUE(here.ok()) << here.status();
  EXPECT_EQ(here->Field("link"), "B");
  EXPECT_EQ(SqlColumn(path, "SELECT state FROM driver_records WHERE id = 'x'"),
            std::vector<std::string>{"creating"}) << "not yet committed";
  {
    auto w = conn->Write();
    ASSERT_TRUE(w.ok());
    EXPECT_TRUE(absl::IsInternal(r->Get("x").status())) << "a call under the lock refuses, not hangs";
    ASSERT_TRUE(r->WriteStaged(*w, {"x", "unknown"}).ok());
    ASSERT_TRUE(w->Commit().ok());
  }
  EXPECT_EQ(SqlColumn(path, "SELECT state || ' ' || fields FROM driver_records WHERE id = 'x'"),
            std::vector<std::string>{"ready link=B\n"});
  // An unfinished create taken apart: the staged Ready is forgotten.
  ASSERT_TRUE(r->Begin("y", {}).ok());
  ASSERT_TRUE(r->Ready("y", {{"k", "v"}}).ok());
  ASSERT_TRUE(r->Removing("y").ok());
  EXPECT_TRUE(absl::IsNotFound(r->GetReady("y").status()));
  ASSERT_TRUE(r->Drop("y").ok());
  EXPECT_TRUE(SqlColumn(path, "SELECT id FROM driver_records WHERE id = 'y'").empty());
}

// A reader of a shared connection never waits behind a writer that waits
// for another process's write lock.
TEST(SharedDbTest, ReadersDoNotWaitBehindAWaitingWriter) {
  testsupport::ScratchDir dir("graph-records");
  std::string path = dir.path() + "/db";
  auto other = base::sqlite::Db::Open(path, true);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->Exec("CREATE TABLE t(v)").ok());
  auto mine = base::sqlite::Db::Open(path, false);
  ASSERT_TRUE(mine.ok());
  base::sqlite::SharedDb conn(std::move(*mine));
  ASSERT_TRUE((*other)->Exec("BEGIN IMMEDIATE").ok());  // "another process" holds the write lock
  std::atomic<bool> written{false};
  std::thread writer([&] {
    auto w = conn.Write();
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE(w->db().Exec("INSERT INTO t VALUES(1)").ok());
    ASSERT_TRUE(w->Commit().ok());
    written = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (int i = 0; i < 20; ++i) {
    auto start = std::chrono::steady_clock::now();
    {
      auto l = conn.Lock();
      auto s = conn.db().Prepare("SELECT count(*) FROM t");
      ASSERT_TRUE(s.ok());
      ASSERT_TRUE(s->Step().ok());
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(written) << "the writer waits for the other's lock";
  ASSERT_TRUE((*other)->Exec("COMMIT").ok());
  writer.join();
  EXPECT_TRUE(written);
  EXPECT_EQ(SqlColumn(path, "SELECT count(*) FROM t"), std::vector<std::string>{"1"});
}

}  // namespace
}  // namespace graph
