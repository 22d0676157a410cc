// The zfs graph driver on real OpenZFS (run inside tests/vm/run --modules
// zfs, which loads the spl/zfs modules built by tests/vm/zfs-modules): the
// modules themselves (pool on a sparse file in the guest's tmpfs, dataset,
// snapshot, clone, destroy with the zpool/zfs commands), the conformance
// suite (a fresh dataset per case in one pool, zfs.fsname), the driver's
// own pool (zfs.poolsize) with quota, status, reopen and import, the crash
// points, and graphctl --driver zfs end to end.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status.h"
#include "graph/driver.h"
#include "graph/records.h"
#include "graph/store.h"
#include "gtest/gtest.h"
#include "tests/support/child_test.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"
#include "tests/support/zfs_pool.h"

namespace graph {
namespace {

namespace fs = std::filesystem;

#define ASSERT_OK(expr)                                              \
  do {                                                               \
    const absl::Status ok_status_ = (expr);                          \
    ASSERT_TRUE(ok_status_.ok()) << #expr << ": " << ok_status_;     \
  } while (0)

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Runs a zpool/zfs command (tests may exec; the driver never does).
std::string Must(const std::vector<std::string>& argv) {
  testsupport::RunResult r = testsupport::Run(argv);
  EXPECT_TRUE(r.ok()) << r.Describe() << "\n" << r.out;
  return Trim(r.out);
}

using testsupport::ScratchPool;
using testsupport::WhyNoZfs;

// Destroys the pool a driver made under `driver_root` (its zpool.name).
void DestroyDriverPool(const std::string& driver_root) {
  std::string name = Trim(ReadAll(driver_root + "/zpool.name"));
  if (name.empty()) return;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(driver_root + "/mnt", ec)) umount2(e.path().c_str(), MNT_DETACH);
  testsupport::RunResult r = testsupport::Run({"zpool", "destroy", "-f", name});
  EXPECT_TRUE(r.ok()) << r.Describe() << r.out;
}

// ------------------------------------------------------------ modules ---

TEST(ZfsKernel, PoolDatasetSnapshotCloneDestroy) {
  std::string why = WhyNoZfs();
  if (!why.empty()) GTEST_SKIP() << why;
  ScratchPool pool(256ull << 20);
  ASSERT_TRUE(pool.ok());
  std::string ds = pool.name() + "/data";
  Must({"zfs", "create", "-o", "mountpoint=legacy", ds});
  std::string mnt = "/tmp/" + testsupport::UniqueName("zfsmnt");
  fs::create_directories(mnt);
  Must({"mount", "-t", "zfs", ds, mnt});
  WriteAll(mnt + "/hello", "from zfs");
  Must({"umount", mnt});
  Must({"zfs", "snapshot", ds + "@s1"});
  Must({"zfs", "clone", "-o", "mountpoint=legacy", ds + "@s1", pool.name() + "/clone"});
  Must({"mount", "-t", "zfs", pool.name() + "/clone", mnt});
  EXPECT_EQ(ReadAll(mnt + "/hello"), "from zfs");
  Must({"umount", mnt});
  EXPECT_EQ(Must({"zfs", "get", "-H", "-o", "value", "origin", pool.name() + "/clone"}), ds + "@s1");
  Must({"zfs", "destroy", pool.name() + "/clone"});
  Must({"zfs", "destroy", ds + "@s1"});
  Must({"zfs", "destroy", ds});
  EXPECT_EQ(Must({"zfs", "list", "-H", "-o", "name", "-r", pool.name()}), pool.name());
  fs::remove(mnt);
}

// -------------------------------------------------------- conformance ---

// One pool for the whole suite, made by the first case that needs it and
// destroyed (with every case's dataset) when the binary's tests end. Each
// case gets a fresh parent dataset, made in-process by a zfs driver rooted
// at the pool's top dataset (a layer of that driver is a plain filesystem
// with mountpoint=legacy: what `zfs create` would make, without its exec
// and libzfs start-up under emulation). Nothing is destroyed per case.
class SuitePool {
 public:
  SuitePool() : pool_(4ull << 30) {
    if (!pool_.ok()) return;
    root_ = "/tmp/" + pool_.name() + "-cases";
    fs::create_directories(root_);
    auto d = OpenDriver("zfs", root_, {{"zfs.fsname", pool_.name()}});
    EXPECT_TRUE(d.ok()) << d.status();
    if (d.ok()) cases_ = std::move(*d);
  }
  ~SuitePool() {
    cases_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  absl::StatusOr<std::string> NewDataset() {
    if (cases_ == nullptr) return absl::FailedPreconditionError("no suite pool");
    std::string id = testsupport::UniqueName("case");
    RETURN_IF_ERROR(cases_->Create(id, "", {}));
    return pool_.name() + "/" + id;
  }

 private:
  ScratchPool pool_;
  std::string root_;
  std::unique_ptr<Driver> cases_;
};

SuitePool*& SuitePoolSlot() {
  static SuitePool* pool = nullptr;
  return pool;
}
class SuitePoolEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    delete SuitePoolSlot();
    SuitePoolSlot() = nullptr;
  }
};

// Layers of the deep-stack cases (containerd's 128LayersMount, graphtest's
// DeepLayerRead): 8, not 128. A zfs clone does not stack on its ancestors
// (a child is a clone of one snapshot of its parent; reads never walk the
// chain), so depth has no limit to reach, unlike overlay's lowerdir list,
// and each layer costs a snapshot, a clone and a mount, several txg syncs
// under TCG: 64 layers alone took >15 min on the loaded 2-core machine.
// DMTHIN_ZFS_DEEP_LAYERS=128 runs the full depth.
int DeepLayers() {
  const char* n = getenv("DMTHIN_ZFS_DEEP_LAYERS");
  int layers = n != nullptr ? std::atoi(n) : 0;
  return layers > 1 ? layers : 8;
}

const bool registered = [] {
  graph::testing::ConformanceTarget z;
  z.name = z.driver = "zfs";
  z.scratch_parent = []() -> absl::StatusOr<std::string> {
    std::string why = WhyNoZfs();
    if (!why.empty()) return absl::FailedPreconditionError(why);
    return std::string("/tmp");
  };
  z.per_case_options = [](const std::string&) -> absl::StatusOr<std::map<std::string, std::string>> {
    SuitePool*& pool = SuitePoolSlot();
    if (pool == nullptr) pool = new SuitePool;
    ASSIGN_OR_RETURN(std::string ds, pool->NewDataset());
    return std::map<std::string, std::string>{{"zfs.fsname", ds}};
  };
  z.per_case_teardown = [](const std::string& base) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(base + "/zfs/mnt", ec)) umount2(e.path().c_str(), MNT_DETACH);
  };
  z.deep_layers = DeepLayers();
  graph::testing::RegisterConformanceSuite(z);
  ::testing::AddGlobalTestEnvironment(new SuitePoolEnvironment);
  return true;
}();

// ------------------------------------------------------ driver's pool ---

std::map<std::string, std::string> PoolOptions() { return {{"zfs.poolsize", "1G"}}; }

class ZfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = WhyNoZfs();
    if (!why.empty()) GTEST_SKIP() << why;
    base_ = "/tmp/" + testsupport::UniqueName("zfsgraph");
    fs::create_directories(base_);
    root_ = base_ + "/zfs";
  }
  void TearDown() override {
    if (driver_) (void)driver_->Cleanup();
    driver_.reset();
    if (root_.empty()) return;
    DestroyDriverPool(root_);
    std::error_code ec;
    fs::remove_all(base_, ec);
  }
  void Open(std::map<std::string, std::string> options = PoolOptions()) {
    driver_.reset();
    auto d = OpenDriver("zfs", base_, options);
    ASSERT_TRUE(d.ok()) << d.status();
    driver_ = std::move(*d);
  }
  std::string MustGet(const std::string& id) {
    auto dir = driver_->Get(id, "");
    EXPECT_TRUE(dir.ok()) << dir.status();
    return dir.ok() ? *dir : "/nonexistent";
  }
  std::string Pool() { return Trim(ReadAll(root_ + "/zpool.name")); }
  // Every dataset under the pool is a layer, every snapshot is the origin
  // of a layer, and every layer's origin snapshot is marked for deferred
  // destruction; every record is ready and names its layer's dataset and
  // origin.
  void ExpectClean() { ExpectCleanOf(*driver_, root_ + "/records.db"); }
  // The same for `driver`, whose records are in `records_db`.
  void ExpectCleanOf(const Driver& driver, const std::string& records_db) {
    auto list = driver.List();
    ASSERT_TRUE(list.ok()) << list.status();
    auto records = LayerRecords::Open(records_db);
    ASSERT_TRUE(records.ok()) << records.status();
    auto recorded = (*records)->List();
    ASSERT_TRUE(recorded.ok()) << recorded.status();
    std::vector<std::string> ready;
    for (const LayerRecord& r : *recorded) {
      EXPECT_EQ(r.state, RecordState::kReady) << r.id << " is left " << RecordStateName(r.state);
      EXPECT_EQ(r.Field("dataset"), Pool() + "/" + r.id);
      if (!r.Field("parent").empty()) {
        EXPECT_EQ(r.Field("origin"), Pool() + "/" + r.Field("parent") + "@" + r.id);
      }
      ready.push_back(r.id);
    }
    EXPECT_EQ(ready, *list) << "a record for every layer, a layer for every record";
    std::string all = Must({"zfs", "list", "-H", "-t", "all", "-o", "name,clones,defer_destroy", "-r", Pool()});
    size_t datasets = 0;
    for (absl::string_view line : absl::StrSplit(all, '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, '\t');
      ASSERT_EQ(f.size(), 3u) << line;
      if (f[0] == Pool()) continue;
      auto at = f[0].find('@');
      if (at == std::string::npos) {
        ++datasets;
        continue;
      }
      std::string child = f[0].substr(at + 1);
      EXPECT_EQ(f[1], Pool() + "/" + child) << "snapshot " << f[0] << " is not its child layer's origin";
      EXPECT_EQ(f[2], "on") << "snapshot " << f[0] << " is not marked for deferred destruction";
    }
    EXPECT_EQ(datasets, list->size()) << all;
  }

  std::string base_, root_;
  std::unique_ptr<Driver> driver_;
};

TEST_F(ZfsTest, LifecycleQuotaStatusAndRemoval) {
  Open();
  EXPECT_EQ(driver_->Name(), "zfs");
  ASSERT_OK(driver_->Create("l0", "", {}));
  EXPECT_TRUE(driver_->Exists("l0"));
  EXPECT_EQ(driver_->Create("l0", "", {}).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(driver_->Create("x", "missing", {}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(driver_->Create("../x", "", {}).code(), absl::StatusCode::kInvalidArgument);
  CreateOptions bad;
  bad.storage_options["inodes"] = "5";
  EXPECT_EQ(driver_->Create("x", "", bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(driver_->Exists("x"));

  std::string d0 = MustGet("l0");
  EXPECT_EQ(d0, root_ + "/mnt/l0");
  WriteAll(d0 + "/hello", "from l0");
  EXPECT_EQ(MustGet("l0"), d0);
  ASSERT_OK(driver_->Put("l0"));
  EXPECT_TRUE(fs::exists(d0 + "/hello")) << "still mounted after one of two Puts";

  CreateOptions rw;
  rw.read_write = true;
  ASSERT_OK(driver_->Create("l1", "l0", rw));  // of a mounted parent
  ASSERT_OK(driver_->Put("l0"));
  EXPECT_FALSE(fs::exists(d0 + "/hello")) << "unmounted after the last Put";
  EXPECT_EQ(driver_->Put("l0").code(), absl::StatusCode::kFailedPrecondition);
  std::string d1 = MustGet("l1");
  EXPECT_EQ(ReadAll(d1 + "/hello"), "from l0");
  WriteAll(d1 + "/hello", "from l1");
  ASSERT_OK(driver_->Put("l1"));
  EXPECT_EQ(ReadAll(MustGet("l0") + "/hello"), "from l0") << "a child's writes never reach its parent";
  ASSERT_OK(driver_->Put("l0"));

  // size → quota.
  CreateOptions sized;
  sized.storage_options["size"] = "8M";
  ASSERT_OK(driver_->Create("small", "l0", sized));
  EXPECT_EQ(Must({"zfs", "get", "-Hp", "-o", "value", "quota", Pool() + "/small"}), std::to_string(8 << 20));
  std::string ds = MustGet("small");
  {
    std::ofstream big(ds + "/big", std::ios::binary);
    std::string mb(1 << 20, 'x');
    for (int i = 0; i < 32 && big; ++i) big << mb << std::flush;
    big.close();
    EXPECT_TRUE(big.fail()) << "a write past the quota fails";
  }
  ASSERT_OK(driver_->Put("small"));

  auto md = driver_->Metadata("l1");
  ASSERT_TRUE(md.ok()) << md.status();
  EXPECT_EQ((*md)["Dataset"], Pool() + "/l1");
  EXPECT_EQ((*md)["Mountpoint"], root_ + "/mnt/l1");
  auto mounts = driver_->Mounts("l1");
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  ASSERT_EQ(mounts->size(), 1u);
  EXPECT_EQ((*mounts)[0].type, "zfs");
  EXPECT_EQ((*mounts)[0].source, Pool() + "/l1");
  EXPECT_EQ(Must({"zfs", "get", "-H", "-o", "value", "mountpoint", Pool() + "/l1"}), "legacy");
  EXPECT_EQ((*mounts)[0].options, std::vector<std::string>{"rw"});
  mounts = driver_->Mounts("l0");
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  EXPECT_EQ((*mounts)[0].options, std::vector<std::string>{"ro"}) << "l0 was made without read_write";

  auto st = driver_->Status();
  std::map<std::string, std::string> m(st.begin(), st.end());
  EXPECT_EQ(m["Zpool"], Pool());
  EXPECT_EQ(m["Zpool Health"], "ONLINE");
  EXPECT_EQ(m["Parent Dataset"], Pool());
  EXPECT_GT(std::atoll(m["Space Used By Parent"].c_str()), 0);
  EXPECT_GT(std::atoll(m["Space Available"].c_str()), 0);
  EXPECT_EQ(m["Parent Quota"], "no");
  EXPECT_FALSE(m["Compression"].empty());

  auto list = driver_->List();
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(*list, (std::vector<std::string>{"l0", "l1", "small"}));
  ExpectClean();

  EXPECT_EQ(driver_->Remove("l0").code(), absl::StatusCode::kFailedPrecondition) << "l0 has children";
  EXPECT_TRUE(driver_->Exists("l0"));
  ASSERT_OK(driver_->Remove("l1"));
  ASSERT_OK(driver_->Remove("small"));
  EXPECT_EQ(driver_->Remove("l1").code(), absl::StatusCode::kNotFound);
  ASSERT_OK(driver_->Remove("l0"));
  EXPECT_EQ(Must({"zfs", "list", "-H", "-t", "all", "-o", "name", "-r", Pool()}), Pool())
      << "no dataset or snapshot left";
}

TEST_F(ZfsTest, ReopenAndImportKeepLayers) {
  Open();
  ASSERT_OK(driver_->Create("a", "", {}));
  WriteAll(MustGet("a") + "/data", "kept");
  ASSERT_OK(driver_->Create("b", "a", {}));
  // Shutdown with a layer mounted, then a reopen.
  ASSERT_OK(driver_->Cleanup());
  Open();
  EXPECT_EQ(ReadAll(MustGet("b") + "/data"), "kept");
  ASSERT_OK(driver_->Put("b"));
  // The pool exported (a reboot): the driver imports it from its file.
  ASSERT_OK(driver_->Cleanup());
  driver_.reset();
  Must({"zpool", "export", Pool()});
  Open();
  auto list = driver_->List();
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(*list, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ReadAll(MustGet("b") + "/data"), "kept");
  ASSERT_OK(driver_->Put("b"));
  ExpectClean();
}

// A store of a release that kept no records: its datasets are adopted at
// open (ready, read-write, the parent read from the origin), and the
// driver works on them as on its own.
TEST_F(ZfsTest, DatasetsWithoutRecordsAreAdopted) {
  Open();
  ASSERT_OK(driver_->Create("base", "", {}));
  WriteAll(MustGet("base") + "/f", "base");
  ASSERT_OK(driver_->Put("base"));
  ASSERT_OK(driver_->Create("child", "base", {}));
  driver_.reset();
  ASSERT_EQ(unlink((root_ + "/records.db").c_str()), 0);
  Open();
  auto list = driver_->List();
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(*list, (std::vector<std::string>{"base", "child"}));
  ExpectClean();
  auto records = LayerRecords::Open(root_ + "/records.db");
  ASSERT_TRUE(records.ok()) << records.status();
  auto child = (*records)->GetReady("child");
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ(child->Field("parent"), "base");
  EXPECT_EQ(child->Field("rw"), "1");
  EXPECT_EQ(ReadAll(MustGet("child") + "/f"), "base");
  ASSERT_OK(driver_->Put("child"));
  EXPECT_EQ(driver_->Remove("base").code(), absl::StatusCode::kFailedPrecondition) << "base has a child";
  ASSERT_OK(driver_->Remove("child"));
  ASSERT_OK(driver_->Remove("base"));
  EXPECT_EQ(Must({"zfs", "list", "-H", "-t", "all", "-o", "name", "-r", Pool()}), Pool());
  // Records name their datasets: another parent dataset is refused.
  ASSERT_OK(driver_->Create("kept", "", {}));
  driver_.reset();
  Must({"zfs", "create", "-o", "mountpoint=legacy", Pool() + "/elsewhere"});
  auto moved = OpenDriver("zfs", base_, {{"zfs.fsname", Pool() + "/elsewhere"}});
  EXPECT_EQ(moved.status().code(), absl::StatusCode::kFailedPrecondition) << moved.status();
  Must({"zfs", "destroy", Pool() + "/elsewhere"});
}

// A store's driver root keeps its records in the store's registry
// (<root>/records-home says so): the driver opened alone there would adopt
// the store's datasets into a records.db of its own, so it is refused, and
// nothing is touched; the store still has its layer.
TEST_F(ZfsTest, StoreRootRefusesTheDriverAlone) {
  {
    auto store = OpenLayerStore(base_, "zfs", PoolOptions());
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->Create("ctr", "", {}).ok());
    ASSERT_OK((*store)->driver().Cleanup());
  }
  EXPECT_EQ(Trim(ReadAll(root_ + "/records-home")), "store");
  auto alone = OpenDriver("zfs", base_, PoolOptions());
  EXPECT_EQ(alone.status().code(), absl::StatusCode::kFailedPrecondition) << alone.status();
  EXPECT_FALSE(fs::exists(root_ + "/records.db")) << "refused before any records were made";
  auto store = OpenLayerStore(base_, "zfs", PoolOptions());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->Stat("ctr").ok());
  ExpectCleanOf((*store)->driver(), base_ + "/layers.db");
  ASSERT_OK((*store)->Remove("ctr"));
  ASSERT_OK((*store)->driver().Cleanup());
}

TEST_F(ZfsTest, OptionsAndProbe) {
  for (const auto& r : ProbeDrivers(base_, {})) {
    if (r.name != "zfs") continue;
    EXPECT_EQ(GetUnsupported(r.status), Unsupported::kConfiguration) << r.status;
  }
  for (const auto& [k, v] : std::map<std::string, std::string>{{"zfs.poolsize", "1K"},
                                                               {"zfs.loopback", "maybe"},
                                                               {"zfs.fsname", "a//b"},
                                                               {"zfs.nonsense", "1"}}) {
    auto d = OpenDriver("zfs", base_, {{k, v}});
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << k << "=" << v << ": " << d.status();
  }
  auto missing = OpenDriver("zfs", base_, {{"zfs.fsname", "nosuchpool/x"}});
  EXPECT_EQ(GetUnsupported(missing.status()), Unsupported::kConfiguration) << missing.status();
  root_.clear();  // no pool was made
  std::error_code ec;
  fs::remove_all(base_, ec);
}

// ------------------------------------------------------- crash points ---

// Runs in a child (see ZfsCrashTest): opens the driver at
// DMTHIN_ZFS_CRASH_BASE, arms the failpoint and does the operation.
TEST(ZfsCrashHelper, Run) {
  const char* base = getenv("DMTHIN_ZFS_CRASH_BASE");
  const char* op = getenv("DMTHIN_ZFS_CRASH_OP");
  const char* point = getenv("DMTHIN_ZFS_CRASH_POINT");
  if (base == nullptr || op == nullptr || point == nullptr) GTEST_SKIP() << "helper for ZfsCrashTest";
  std::string what = op;
  if (what == "open") setenv("DMTHIN_FAILPOINT", point, 1);
  auto d = OpenDriver("zfs", base, PoolOptions());
  ASSERT_TRUE(d.ok()) << d.status();
  if (what == "create") {
    ASSERT_TRUE((*d)->Get("parent", "").ok());
    setenv("DMTHIN_FAILPOINT", point, 1);
    ASSERT_TRUE((*d)->Create("child", "parent", {}).ok());
  } else if (what == "remove") {
    setenv("DMTHIN_FAILPOINT", point, 1);
    ASSERT_TRUE((*d)->Remove("victim").ok());
  }
  _exit(0);
}

struct CrashCase {
  std::string op;
  std::string point;
};

class ZfsCrashTest : public ZfsTest, public ::testing::WithParamInterface<CrashCase> {
 protected:
  int RunHelper(const CrashCase& c) {
    return testsupport::RunTestInChild("ZfsCrashHelper.Run", {{"DMTHIN_ZFS_CRASH_BASE", base_},
                                                              {"DMTHIN_ZFS_CRASH_OP", c.op},
                                                              {"DMTHIN_ZFS_CRASH_POINT", c.point}});
  }
};

TEST_P(ZfsCrashTest, ReopenLeavesNoHalfLayer) {
  const CrashCase& c = GetParam();
  if (c.op != "open") {
    Open();
    ASSERT_OK(driver_->Create("parent", "", {}));
    WriteAll(MustGet("parent") + "/p", "parent data");
    ASSERT_OK(driver_->Put("parent"));
    ASSERT_OK(driver_->Create("victim", "parent", {}));
    driver_.reset();
  }
  EXPECT_EQ(RunHelper(c), testsupport::kFailpointExit) << "the child should have died at " << c.point;
  Open();
  if (c.op == "create") {
    if (!driver_->Exists("child")) {
      ASSERT_OK(driver_->Create("child", "parent", {}));  // rolled back: the id is free again
    }
    EXPECT_EQ(ReadAll(MustGet("child") + "/p"), "parent data");
    ASSERT_OK(driver_->Put("child"));
    ASSERT_OK(driver_->Remove("child"));
  } else if (c.op == "remove") {
    EXPECT_FALSE(driver_->Exists("victim")) << "the dataset is destroyed whole or not at all";
  }
  if (c.op != "open") {
    EXPECT_EQ(ReadAll(MustGet("parent") + "/p"), "parent data");
    ASSERT_OK(driver_->Put("parent"));
    if (driver_->Exists("victim")) ASSERT_OK(driver_->Remove("victim"));
    ASSERT_OK(driver_->Remove("parent"));
    EXPECT_EQ(Must({"zfs", "list", "-H", "-t", "all", "-o", "name", "-r", Pool()}), Pool())
        << "nothing left behind";
  } else {
    ASSERT_OK(driver_->Create("first", "", {}));
    EXPECT_TRUE(fs::is_empty(MustGet("first")));
    ASSERT_OK(driver_->Put("first"));
  }
  ExpectClean();
}

INSTANTIATE_TEST_SUITE_P(
    Points, ZfsCrashTest,
    ::testing::Values(CrashCase{"open", "zfs_before_pool_create"}, CrashCase{"create", "zfs_create_after_intent"},
                      CrashCase{"create", "zfs_after_snapshot"}, CrashCase{"create", "zfs_after_clone"},
                      CrashCase{"remove", "zfs_remove_after_intent"}, CrashCase{"remove", "zfs_after_destroy"}),
    [](const ::testing::TestParamInfo<CrashCase>& info) { return info.param.op + "_" + info.param.point; });

// --------------------------------------------------------------- graphctl ---

// graphctl --driver zfs end to end on a real rootfs tarball (a debootstrap
// image when DMTHIN_ROOTFS_TAR names one, else a small built tree): import,
// create a container layer, write, diff, rm, check.
TEST_F(ZfsTest, GraphctlEndToEnd) {
  std::string graphctl = testsupport::RepoRoot() + "/build/bin/graphctl";
  if (access(graphctl.c_str(), X_OK) != 0) GTEST_SKIP() << "build graphctl first";
  std::string rootfs = testsupport::BuildTar({{.path = "etc", .type = '5', .mode = 0755},
                                              {.path = "etc/os-release", .data = "ID=test\n"},
                                              {.path = "bin", .type = '5', .mode = 0755},
                                              {.path = "bin/sh", .data = "#!", .mode = 0755},
                                              {.path = "bin/dash", .type = '1', .link = "bin/sh"},
                                              {.path = "usr", .type = '5', .mode = 0755},
                                              {.path = "usr/bin", .type = '2', .link = "../bin"}});
  const char* real = getenv("DMTHIN_ROOTFS_TAR");
  if (real != nullptr && *real != '\0') rootfs = ReadAll(real);
  auto run = [&](std::vector<std::string> args, const std::string& stdin_data = "") {
    std::vector<std::string> argv = {graphctl, "--root", base_, "--driver", "zfs", "--storage-opt",
                                     "zfs.poolsize=1G"};
    argv.insert(argv.end(), args.begin(), args.end());
    testsupport::RunResult r = testsupport::Run(argv, stdin_data);
    EXPECT_TRUE(r.ok()) << r.Describe() << "\n" << r.out;
    return Trim(r.out);
  };
  std::string chain = run({"import", "-"}, rootfs);
  ASSERT_TRUE(absl::StartsWith(chain, "sha256:")) << chain;
  run({"create", "ctr", "--parent", chain, "--rw"});
  std::string dir = run({"mount", "ctr"});
  EXPECT_EQ(ReadAll(dir + "/etc/os-release").empty(), false) << dir;
  WriteAll(dir + "/hello", "from the container");
  fs::remove(dir + "/bin/sh");
  run({"umount", "ctr"});
  std::string changes = run({"changes", "ctr"});
  EXPECT_TRUE(absl::StrContains(changes, "/hello")) << changes;
  EXPECT_TRUE(absl::StrContains(changes, "/bin/sh")) << changes;
  std::string difftar = base_ + "/ctr.tar";
  std::string diff_id = run({"diff", "ctr", "--o", difftar});
  EXPECT_TRUE(absl::StrContains(diff_id, "sha256:")) << diff_id;
  testsupport::RunResult listing = testsupport::Run({"tar", "-tf", difftar});
  ASSERT_TRUE(listing.ok()) << listing.Describe();
  EXPECT_TRUE(absl::StrContains(listing.out, "hello")) << listing.out;
  EXPECT_TRUE(absl::StrContains(listing.out, "bin/.wh.sh")) << listing.out;
  std::string status = run({"status"});
  EXPECT_TRUE(absl::StrContains(status, "Zpool Health")) << status;
  run({"rm", "ctr"});
  run({"check"});
}

// graphctl --driver zfs dying at each step of the driver's create and
// remove (DMTHIN_FAILPOINT: the process exits there, as a kill would leave
// it): the store never lists a half-made layer, check --repair makes the store
// and the pool agree again (no dataset or snapshot is left that no layer
// owns), and the same name works afterwards.
TEST_F(ZfsTest, GraphctlCrashPointsRepair) {
  std::string graphctl = testsupport::RepoRoot() + "/build/bin/graphctl";
  if (access(graphctl.c_str(), X_OK) != 0) GTEST_SKIP() << "build graphctl first";
  auto run = [&](std::vector<std::string> args, const std::string& failpoint = "",
                 const std::string& stdin_data = "") {
    std::vector<std::string> argv;
    if (!failpoint.empty()) argv = {"env", "DMTHIN_FAILPOINT=" + failpoint};
    argv.insert(argv.end(), {graphctl, "--root", base_, "--driver", "zfs", "--storage-opt", "zfs.poolsize=1G"});
    argv.insert(argv.end(), args.begin(), args.end());
    return testsupport::Run(argv, stdin_data);
  };
  testsupport::RunResult imported = run({"import", "-"}, "",
                                        testsupport::BuildTar({{.path = "etc", .type = '5', .mode = 0755},
                                                               {.path = "etc/os-release", .data = "ID=test\n"}}));
  ASSERT_TRUE(imported.ok()) << imported.Describe();
  std::string chain = Trim(imported.out);
  const std::vector<std::string> create = {"create", "ctr", "--parent", chain, "--rw"};
  struct Step {
    std::vector<std::string> args;
    const char* failpoint;
  };
  for (const Step& step : {Step{create, "zfs_create_after_intent"}, Step{create, "zfs_after_snapshot"},
                           Step{create, "zfs_after_clone"}, Step{{"rm", "ctr"}, "zfs_remove_after_intent"},
                           Step{{"rm", "ctr"}, "zfs_after_destroy"}}) {
    SCOPED_TRACE(step.failpoint);
    if (step.args[0] == "rm") {
      ASSERT_TRUE(run(create).ok());
    }
    testsupport::RunResult died = run(step.args, step.failpoint);
    EXPECT_EQ(died.exit_code, testsupport::kFailpointExit) << died.Describe();
    if (step.args[0] == "create") {
      testsupport::RunResult ls = run({"ls"});
      EXPECT_FALSE(absl::StrContains(ls.out, "ctr")) << "a half layer is listed: " << ls.out;
    }
    testsupport::RunResult repair = run({"check", "--repair"});
    EXPECT_TRUE(repair.ok()) << repair.Describe() << "\n" << repair.out;
    testsupport::RunResult check = run({"check"});
    EXPECT_TRUE(check.ok()) << check.Describe() << "\n" << check.out;
    {
      // The driver's records in the store's registry: none left half-way.
      auto records = LayerRecords::Open(base_ + "/layers.db");
      ASSERT_TRUE(records.ok()) << records.status();
      auto all = (*records)->List();
      ASSERT_TRUE(all.ok()) << all.status();
      EXPECT_EQ(all->size(), 1u) << "the image layer's record only";
      for (const LayerRecord& r : *all) EXPECT_EQ(r.state, RecordState::kReady) << r.id;
    }
    // The interrupted create or remove was finished or undone: the name is free.
    testsupport::RunResult again = run(create);
    EXPECT_TRUE(again.ok()) << again.Describe();
    testsupport::RunResult rm = run({"rm", "ctr"});
    EXPECT_TRUE(rm.ok()) << rm.Describe();
    auto store = OpenLayerStore(base_, "zfs", PoolOptions());
    ASSERT_TRUE(store.ok()) << store.status();
    ExpectCleanOf((*store)->driver(), base_ + "/layers.db");
    auto layers = (*store)->driver().List();
    ASSERT_TRUE(layers.ok()) << layers.status();
    EXPECT_EQ(layers->size(), 1u) << "only the image layer is left";
  }
  EXPECT_TRUE(run({"check"}).ok());
}

}  // namespace
}  // namespace graph
