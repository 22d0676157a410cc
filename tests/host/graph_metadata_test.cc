// One home for metadata: overlay, vfs and btrfs keep their per-layer
// records in the layer store's registry (graph/records.h), overlay's l/
// links and link files are derived and rebuilt by check --repair, stores of
// the previous release (records in files) are migrated at open, and a crash
// (DMTHIN_FAILPOINT, _exit in a child process) at every step of Prepare,
// Commit and Remove leaves a store that check --repair makes clean with no
// data lost and that goes on working.
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "graph/fsutil.h"
#include "graph/store.h"
#include "gtest/gtest.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/graph_tar.h"
#include "tests/support/child_test.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/store_crash.h"

namespace graph {
namespace {

using testsupport::BuildTar;
using testsupport::ReadFileOrEmpty;
using testsupport::ScratchDir;
using testsupport::TarEntry;
using testsupport::WriteFileOrDie;

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// Rows of `sql` (one text column) in the registry at `db`.
std::vector<std::string> Query(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  std::vector<std::string> out;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(h);
    ADD_FAILURE() << "open " << db;
    return out;
  }
  sqlite3_busy_timeout(h, 10000);
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(h, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << sql << ": " << sqlite3_errmsg(h);
  } else {
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(s, 0);
      out.emplace_back(t ? reinterpret_cast<const char*>(t) : "");
    }
    if (rc != SQLITE_DONE) ADD_FAILURE() << sql << ": " << sqlite3_errmsg(h);
  }
  sqlite3_finalize(s);
  sqlite3_close(h);
  return out;
}

class MetadataTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    if (GetParam() == "btrfs") {
      auto fs = testing::ScratchBtrfs::Create();
      if (!fs.ok()) GTEST_SKIP() << "no scratch btrfs: " << fs.status();
      btrfs_ = std::move(*fs);
      base_ = btrfs_->path();
    } else {
      dir_ = std::make_unique<ScratchDir>("graph-metadata");
      base_ = dir_->path();
    }
    auto probe = OpenLayerStore(Root("probe"), GetParam());
    if (!probe.ok() && GetUnsupported(probe.status()).has_value()) GTEST_SKIP() << probe.status();
    ASSERT_TRUE(probe.ok()) << probe.status();
    ASSERT_TRUE((*probe)->driver().Cleanup().ok());
  }

  std::string Root(const std::string& name) const { return absl::StrCat(base_, "/", name); }
  std::string DriverRoot(const std::string& root) const { return absl::StrCat(root, "/", GetParam()); }

  std::unique_ptr<LayerStore> Open(const std::string& root) {
    auto s = OpenLayerStore(root, GetParam());
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // A store with an imported base layer (etc/hello) and an active layer
  // "ctr" on it; returns the base's name.
  std::string Populate(LayerStore& store) {
    std::string tar = BuildTar({{"etc/", '5'}, {"etc/hello", '0', "world"}});
    StringSource src(tar);
    auto base = store.Import(src, {});
    EXPECT_TRUE(base.ok()) << base.status();
    if (!base.ok()) return "";
    CreateLayerOptions o;
    o.init_layer = true;
    auto ctr = store.Create("ctr", base->name, o);
    EXPECT_TRUE(ctr.ok()) << ctr.status();
    return base->name;
  }

  // `name` mounts and shows the base's file.
  void ExpectWorks(LayerStore& store, const std::string& name) {
    auto dir = store.Mount(name);
    ASSERT_TRUE(dir.ok()) << dir.status();
    EXPECT_EQ(ReadFileOrEmpty(*dir + "/etc/hello"), "world") << name;
    EXPECT_TRUE(store.Unmount(name).ok());
  }

  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<testing::ScratchBtrfs> btrfs_;
  std::string base_;
};

TEST_P(MetadataTest, DriverRecordsLiveInTheStoreRegistry) {
  std::string root = Root("store");
  auto store = Open(root);
  ASSERT_TRUE(store);
  std::string base = Populate(*store);
  auto ctr = store->Stat("ctr");
  ASSERT_TRUE(ctr.ok()) << ctr.status();
  auto rows = Query(root + "/layers.db", "SELECT id || ' ' || state FROM driver_records ORDER BY id");
  std::set<std::string> want = {absl::StrCat(ctr->cache_id, " ready"), absl::StrCat(ctr->init_id, " ready")};
  auto b = store->Stat(base);
  ASSERT_TRUE(b.ok());
  want.insert(absl::StrCat(b->cache_id, " ready"));
  EXPECT_EQ(std::set<std::string>(rows.begin(), rows.end()), want);
  EXPECT_FALSE(PathExists(DriverRoot(root) + "/records.db")) << "no second home";
  if (GetParam() == "overlay") {
    for (const char* f : {"lower", "parent", "rw"}) {
      EXPECT_FALSE(PathExists(absl::StrCat(DriverRoot(root), "/", ctr->cache_id, "/", f))) << f;
    }
    EXPECT_TRUE(PathExists(absl::StrCat(DriverRoot(root), "/", ctr->cache_id, "/link"))) << "derived, kept";
  }
  if (GetParam() == "vfs") {
    EXPECT_FALSE(PathExists(DriverRoot(root) + "/info"));
  }
  ExpectWorks(*store, "ctr");
  EXPECT_TRUE(store->Remove("ctr").ok());
  rows = Query(root + "/layers.db", "SELECT id FROM driver_records");
  EXPECT_EQ(rows, std::vector<std::string>{b->cache_id});
  EXPECT_TRUE(store->driver().Cleanup().ok());
}

// A driver record left half-way that no layer owns (a driver's create or
// removal whose store row is gone): check reports it, --repair has the
// driver finish it.
TEST_P(MetadataTest, HalfWayRecordWithoutALayerIsFinishedByRepair) {
  std::string root = Root("stray");
  auto store = Open(root);
  ASSERT_TRUE(store);
  std::string base = Populate(*store);
  Query(root + "/layers.db", "INSERT INTO driver_records(id, state, fields) VALUES('stray', 'creating', '')");
  Query(root + "/layers.db", "INSERT INTO driver_records(id, state, fields) VALUES('gone', 'removing', '')");
  auto found = store->Check(false);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->problems.size(), 2u) << testsupport::CheckReportText(*found);
  EXPECT_TRUE(testsupport::RepairLeavesStoreClean(*store));
  EXPECT_TRUE(Query(root + "/layers.db", "SELECT id FROM driver_records WHERE id IN ('stray', 'gone')").empty());
  ExpectWorks(*store, "ctr");
  EXPECT_TRUE(store->driver().Cleanup().ok());
}

// A driver used without a store (the Docker plugin) keeps its records in
// <driver root>/records.db.
TEST_P(MetadataTest, DriverWithoutStoreKeepsItsOwnRecords) {
  std::string base = Root("plain");
  auto d = OpenDriver(GetParam(), base);
  ASSERT_TRUE(d.ok()) << d.status();
  CreateOptions rw;
  rw.read_write = true;
  ASSERT_TRUE((*d)->Create("a", "", {}).ok());
  ASSERT_TRUE((*d)->Create("b", "a", rw).ok());
  auto rows = Query(absl::StrCat(base, "/", GetParam(), "/records.db"), "SELECT id FROM driver_records ORDER BY id");
  EXPECT_EQ(rows, (std::vector<std::string>{"a", "b"}));
  d->reset();
  auto again = OpenDriver(GetParam(), base);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE((*again)->Exists("b"));
  auto mounts = (*again)->Mounts("b");
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  ASSERT_TRUE((*again)->Remove("b").ok());
  ASSERT_TRUE((*again)->Remove("a").ok());
  EXPECT_TRUE((*again)->Cleanup().ok());
}

// A store's driver root keeps its records in the store's registry
// (<driver root>/records-home says "store"): the driver opened alone there
// would make a records.db of its own beside the store's layers (btrfs would
// adopt their subvolumes into it), so it is refused and nothing is touched;
// a driver's own root is refused by a store too. A root made by a
// build before records-home (no file) opens the way it was made, which
// writes the file.
TEST_P(MetadataTest, StoreRootRefusesTheDriverAlone) {
  const std::string root = Root("store");
  {
    auto store = Open(root);
    ASSERT_TRUE(store);
    Populate(*store);
    ASSERT_TRUE(store->driver().Cleanup().ok());
  }
  const std::string home = DriverRoot(root) + "/records-home";
  EXPECT_EQ(ReadFileOrEmpty(home), "store\n");
  auto alone = OpenDriver(GetParam(), root);
  EXPECT_EQ(alone.status().code(), absl::StatusCode::kFailedPrecondition) << alone.status();
  EXPECT_FALSE(PathExists(DriverRoot(root) + "/records.db")) << "refused before any records were made";
  ASSERT_EQ(::unlink(home.c_str()), 0);  // as an earlier build left it
  {
    auto store = Open(root);
    ASSERT_TRUE(store);
    EXPECT_EQ(ReadFileOrEmpty(home), "store\n");
    auto check = store->Check(false);
    ASSERT_TRUE(check.ok()) << check.status();
    EXPECT_TRUE(check->clean()) << testsupport::CheckReportText(*check);
    ExpectWorks(*store, "ctr");
    ASSERT_TRUE(store->driver().Cleanup().ok());
  }
  // The reverse: a driver's own root.
  const std::string plain = Root("plain");
  const std::string own_home = DriverRoot(plain) + "/records-home";
  {
    auto d = OpenDriver(GetParam(), plain);
    ASSERT_TRUE(d.ok()) << d.status();
    ASSERT_TRUE((*d)->Create("a", "", {}).ok());
  }
  EXPECT_EQ(ReadFileOrEmpty(own_home), "own\n");
  // The store refuses it before its driver is opened (a root with driver
  // data but no layers.db: DataLoss); records-home would refuse it next.
  auto as_store = OpenLayerStore(plain, GetParam());
  EXPECT_TRUE(absl::IsDataLoss(as_store.status()) || absl::IsFailedPrecondition(as_store.status()))
      << as_store.status();
  EXPECT_EQ(ReadFileOrEmpty(own_home), "own\n");
  ASSERT_EQ(::unlink(own_home.c_str()), 0);
  auto d = OpenDriver(GetParam(), plain);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(ReadFileOrEmpty(own_home), "own\n");
  EXPECT_TRUE((*d)->Exists("a"));
  ASSERT_TRUE((*d)->Remove("a").ok());
  EXPECT_TRUE((*d)->Cleanup().ok());
}

TEST_P(MetadataTest, OverlayDerivedFilesAreRebuiltByRepair) {
  if (GetParam() != "overlay") GTEST_SKIP() << "only overlay derives files";
  std::string root = Root("store");
  auto store = Open(root);
  ASSERT_TRUE(store);
  Populate(*store);
  auto ctr = store->Stat("ctr");
  ASSERT_TRUE(ctr.ok());
  std::string droot = DriverRoot(root);
  // Every l/ link and every link file gone.
  ASSERT_TRUE(RemoveTree(droot + "/l").ok());
  ASSERT_EQ(::mkdir((droot + "/l").c_str(), 0700), 0);
  for (const std::string& id : {ctr->cache_id, ctr->init_id}) {
    ASSERT_EQ(::unlink(absl::StrCat(droot, "/", id, "/link").c_str()), 0);
  }
  auto found = store->Check(false);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_FALSE(found->clean());
  EXPECT_GE(found->problems.size(), 5u) << testsupport::CheckReportText(*found);  // 3 links + 2 link files
  auto repaired = store->Check(true);
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_GE(repaired->repaired.size(), 5u) << testsupport::CheckReportText(*repaired);
  auto after = store->Check(false);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->clean()) << testsupport::CheckReportText(*after);
  ExpectWorks(*store, "ctr");
  // A link no record owns is removed by repair.
  ASSERT_EQ(::symlink("../nosuch/diff", (droot + "/l/ZZZZ").c_str()), 0);
  auto stray = store->Check(true);
  ASSERT_TRUE(stray.ok());
  EXPECT_FALSE(PathExists(droot + "/l/ZZZZ")) << testsupport::CheckReportText(*stray);
  EXPECT_TRUE(store->driver().Cleanup().ok());
}

// A store of the previous release: the same registry without the
// driver_records table, the driver's records in files. Opening it moves
// them into the registry; every layer survives.
TEST_P(MetadataTest, PreviousReleaseStoreIsMigratedAtOpen) {
  std::string root = Root("old");
  std::string droot = DriverRoot(root);
  std::string base;
  LayerInfo ctr, b;
  {
    auto store = Open(root);
    ASSERT_TRUE(store);
    base = Populate(*store);
    CreateLayerOptions view;
    view.kind = LayerKind::kView;
    ASSERT_TRUE(store->Create("view", base, view).ok());
    ctr = *store->Stat("ctr");
    b = *store->Stat(base);
    ASSERT_TRUE(store->driver().Cleanup().ok());
  }
  // Rewrite as the previous release kept it.
  std::string db = root + "/layers.db";
  auto records = Query(db, "SELECT id || char(10) || fields FROM driver_records");
  ASSERT_EQ(records.size(), 4u);
  for (const std::string& rec : records) {
    std::vector<std::string> lines = absl::StrSplit(rec, '\n', absl::SkipEmpty());
    std::string id = lines[0];
    std::map<std::string, std::string> f;
    for (size_t i = 1; i < lines.size(); ++i) {
      size_t eq = lines[i].find('=');
      f[lines[i].substr(0, eq)] = lines[i].substr(eq + 1);
    }
    if (GetParam() == "overlay") {
      std::string dir = absl::StrCat(droot, "/", id);
      WriteFileOrDie(dir + "/link", f["link"]);
      WriteFileOrDie(dir + "/parent", f["parent"]);
      if (!f["lower"].empty()) WriteFileOrDie(dir + "/lower", f["lower"]);
      if (f["rw"] == "1") WriteFileOrDie(dir + "/rw", "");
    } else if (GetParam() == "vfs") {
      ::mkdir((droot + "/info").c_str(), 0700);
      WriteFileOrDie(absl::StrCat(droot, "/info/", id), absl::StrCat("parent=", f["parent"], "\nrw=", f["rw"], "\n"));
    }
  }
  Query(db, "DROP TABLE driver_records");
  ASSERT_EQ(Query(db, "SELECT name FROM sqlite_master WHERE name = 'driver_records'").size(), 0u);
  ASSERT_EQ(::unlink((droot + "/records-home").c_str()), 0);  // that release had none

  auto store = Open(root);
  ASSERT_TRUE(store);
  auto rows = Query(db, "SELECT id || ' ' || state FROM driver_records ORDER BY id");
  EXPECT_EQ(rows.size(), 4u) << absl::StrJoin(rows, ", ");
  EXPECT_EQ(ReadFileOrEmpty(droot + "/records-home"), "store\n");
  for (const std::string& r : rows) EXPECT_TRUE(absl::EndsWith(r, " ready")) << r;
  if (GetParam() == "overlay") {
    for (const char* f : {"lower", "parent", "rw"}) {
      EXPECT_FALSE(PathExists(absl::StrCat(droot, "/", ctr.cache_id, "/", f))) << f << " moved into the registry";
    }
  }
  if (GetParam() == "vfs") {
    EXPECT_FALSE(PathExists(droot + "/info"));
  }
  auto check = store->Check(false);
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_TRUE(check->clean()) << testsupport::CheckReportText(*check);
  ExpectWorks(*store, "ctr");
  ExpectWorks(*store, "view");
  ExpectWorks(*store, base);
  auto mounts = store->Mounts("ctr");
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  // Writable as before.
  auto dir = store->Mount("ctr");
  ASSERT_TRUE(dir.ok());
  WriteFileOrDie(*dir + "/etc/new", "x");
  EXPECT_TRUE(store->Unmount("ctr").ok());
  EXPECT_TRUE(store->Remove("ctr").ok());
  EXPECT_TRUE(store->Remove("view").ok());
  EXPECT_TRUE(store->Remove(base).ok());
  EXPECT_TRUE(Query(db, "SELECT id FROM driver_records").empty());
  EXPECT_TRUE(store->driver().Cleanup().ok());
}

// ------------------------------------------------------------ crash tests ---

using Op = testsupport::StoreOp;

struct CrashCase {
  std::string failpoint;
  Op op;
};

std::vector<CrashCase> CrashCases(const std::string& driver) {
  std::vector<CrashCase> cases = {
      {"store_import_after_intent", Op::kImport}, {"store_import_after_apply", Op::kImport},
      {"store_create_after_intent", Op::kCreate}, {"store_create_after_init", Op::kCreate},
      {"store_create_after_driver", Op::kCreate}, {"store_commit_before_commit", Op::kCommit},
      {"store_remove_after_intent", Op::kRemove}, {"store_remove_after_driver", Op::kRemove},
  };
  std::vector<std::string> create, remove;
  if (driver == "overlay") {
    create = {"overlay_create_after_intent", "overlay_create_after_link", "overlay_create_after_publish"};
    remove = {"overlay_remove_after_intent", "overlay_remove_after_hide", "overlay_remove_after_tree"};
  } else if (driver == "vfs") {
    create = {"vfs_create_after_intent", "vfs_create_after_copy", "vfs_create_after_publish"};
    remove = {"vfs_remove_after_intent", "vfs_remove_after_hide"};
  } else if (driver == "btrfs") {
    create = {"btrfs_create_after_intent", "btrfs_create_after_subvolume"};
    remove = {"btrfs_remove_after_intent", "btrfs_remove_after_delete"};
  }
  for (const std::string& f : create) cases.push_back({f, Op::kCreate});
  for (const std::string& f : remove) cases.push_back({f, Op::kRemove});
  return cases;
}

TEST_P(MetadataTest, CrashAtEveryStepLeavesARepairableStore) {
  int n = 0;
  for (const CrashCase& c : CrashCases(GetParam())) {
    SCOPED_TRACE(c.failpoint);
    std::string root = Root(absl::StrCat("crash", n++));
    std::string base;
    {
      auto store = Open(root);
      ASSERT_TRUE(store);
      base = Populate(*store);
      ASSERT_TRUE(store->driver().Cleanup().ok());
    }
    ASSERT_EQ(testsupport::RunStoreOpUntilFailpoint(root, GetParam(), {}, c.failpoint, c.op, base),
              testsupport::kFailpointExit)
        << "the failpoint was not reached";

    auto store = Open(root);
    ASSERT_TRUE(store);
    EXPECT_TRUE(testsupport::RepairLeavesStoreClean(*store));
    // Nothing half-made or half-removed is left in the registry.
    EXPECT_TRUE(Query(root + "/layers.db", "SELECT id FROM driver_records WHERE state != 'ready'").empty());
    EXPECT_TRUE(Query(root + "/layers.db", "SELECT cache_id FROM layers WHERE state != 'ready'").empty());
    auto ids = Query(root + "/layers.db", "SELECT id FROM driver_records");
    auto drv = Query(root + "/layers.db",
                     "SELECT cache_id FROM layers UNION SELECT init_id FROM layers WHERE init_id IS NOT NULL");
    EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()), std::set<std::string>(drv.begin(), drv.end()))
        << "one record per driver layer";
    // No data lost: the base is intact; "ctr" is whole unless its removal
    // was asked for; the interrupted create can be made again.
    ExpectWorks(*store, base);
    if (c.op != Op::kRemove) ExpectWorks(*store, "ctr");
    if (c.op == Op::kRemove && store->Stat("ctr").ok()) ExpectWorks(*store, "ctr");
    CreateLayerOptions o;
    o.init_layer = true;
    store->Remove("ctr2").IgnoreError();
    auto again = store->Create("ctr2", base, o);
    ASSERT_TRUE(again.ok()) << again.status();
    ExpectWorks(*store, "ctr2");
    EXPECT_TRUE(store->Remove("ctr2").ok());
    auto last = store->Check(false);
    ASSERT_TRUE(last.ok());
    EXPECT_TRUE(last->clean()) << testsupport::CheckReportText(*last);
    EXPECT_TRUE(store->driver().Cleanup().ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Drivers, MetadataTest, ::testing::Values("overlay", "vfs", "btrfs"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace graph
