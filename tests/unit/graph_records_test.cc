// graph::LayerRecords: the drivers' per-layer records and their one state
// machine (creating -> ready -> removing -> dropped), in SQLite.
#include "graph/records.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/scratch_dir.h"

namespace graph {
namespace {

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

}  // namespace
}  // namespace graph
