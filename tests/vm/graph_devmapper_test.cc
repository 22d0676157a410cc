// The devicemapper graph driver against the real dm-thin target (run inside
// tests/vm/run): layer lifecycle, content through snapshots, diffs, status
// and metadata, reopening, busy removal with the reaper, pool-full refusal,
// orphans, and the crash-point matrix (every driver and thinpool failpoint,
// in a child process that dies there; the reopened driver must show no
// orphaned thin id and no half-made layer). In a layer store: the records
// live in its registry, previous releases' metadata/<id> files are migrated
// at open, and a crash at every step of Prepare, Commit and Remove leaves a
// store that check --repair makes clean.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "graph/driver.h"
#include "graph/records.h"
#include "graph/store.h"
#include "graph/stream.h"
#include "gtest/gtest.h"
#include "libdm/control.h"
#include "tests/support/child_test.h"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"
#include "tests/support/store_crash.h"
#include "tests/support/thinpool_cleanup.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

namespace graph {
namespace {

namespace fs = std::filesystem;

inline const absl::Status& StatusOf(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}
#define ASSERT_OK(expr)                        \
  do {                                         \
    const auto& ok_result_ = (expr);           \
    ASSERT_TRUE(StatusOf(ok_result_).ok()) << #expr << ": " << StatusOf(ok_result_); \
  } while (0)
#define EXPECT_OK(expr)                        \
  do {                                         \
    const auto& ok_result_ = (expr);           \
    EXPECT_TRUE(StatusOf(ok_result_).ok()) << #expr << ": " << StatusOf(ok_result_); \
  } while (0)
using testsupport::BuildTar;
using testsupport::TarEntry;

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

std::string StatusValue(const Driver& d, const std::string& key) {
  for (const auto& [k, v] : d.Status()) {
    if (k == key) return v;
  }
  return "";
}

std::map<std::string, std::string> BaseOptions() {
  return {{"dm.loopdatasize", "2G"},
          {"dm.basesize", "512M"},
          {"dm.reaper_interval", "100ms"}};
}

// Thins of the driver's pool whose names carry the driver's tag.
std::vector<thinpool::ThinInfo> DriverThins(const Driver& d) {
  auto state = thinpool::StateDir::Open(StatusValue(d, "Pool State Dir"));
  EXPECT_TRUE(state.ok()) << state.status();
  auto dm = dm::Control::Open();
  EXPECT_TRUE(dm.ok()) << dm.status();
  auto pool = thinpool::Pool::Open(**state, **dm, StatusValue(d, "Pool Name"));
  EXPECT_TRUE(pool.ok()) << pool.status();
  auto thins = (*pool)->ListThins();
  EXPECT_TRUE(thins.ok()) << thins.status();
  std::vector<thinpool::ThinInfo> out;
  std::string tag = StatusValue(d, "Thin Prefix");
  for (const auto& t : *thins) {
    if (absl::StartsWith(t.name, tag)) out.push_back(t);
  }
  return out;
}

// A child process in its own mount namespace (private propagation) that
// bind-mounts a layer's mount elsewhere and keeps it: a "leaked" mount, as a
// container that unshared and pivot_root'ed into the layer leaves behind.
// (A copy left on the same mount point would not do: since Linux 3.18,
// removing a mount point dentry detaches the mounts on it in every
// namespace, and Remove does remove it.)
class LeakedMounts {
 public:
  LeakedMounts() = default;
  ~LeakedMounts() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (hold_ >= 0) close(hold_);
  }
  // OK once the child holds `dir` bind-mounted on `hold_at` (an empty
  // directory outside the driver root).
  bool Start(const std::string& dir, const std::string& hold_at) {
    int ready[2], hold[2];
    if (pipe(ready) != 0 || pipe(hold) != 0) return false;
    pid_ = fork();
    if (pid_ == 0) {
      close(ready[0]);
      close(hold[1]);
      if (unshare(CLONE_NEWNS) != 0) _exit(2);
      if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(3);
      if (mount(dir.c_str(), hold_at.c_str(), nullptr, MS_BIND, nullptr) != 0) _exit(5);
      char c = 'r';
      if (write(ready[1], &c, 1) != 1) _exit(4);
      (void)!read(hold[0], &c, 1);  // until the parent lets go
      _exit(0);
    }
    close(ready[1]);
    close(hold[0]);
    hold_ = hold[1];
    char c;
    bool ok = read(ready[0], &c, 1) == 1;
    close(ready[0]);
    return ok;
  }
  // Ends the child (and with it the namespace); true if it exited cleanly.
  bool Release() {
    close(hold_);
    hold_ = -1;
    int status = 0;
    bool ok = waitpid(pid_, &status, 0) == pid_ && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    pid_ = -1;
    return ok;
  }

 private:
  pid_t pid_ = -1;
  int hold_ = -1;
};

// The driver-wide entries of `kind` in the records at `db`, by name.
std::vector<std::string> EntryNames(const std::string& db, const std::string& kind) {
  auto records = LayerRecords::Open(db);
  EXPECT_TRUE(records.ok()) << records.status();
  if (!records.ok()) return {};
  auto entries = (*records)->Entries(kind);
  EXPECT_TRUE(entries.ok()) << entries.status();
  std::vector<std::string> out;
  if (entries.ok()) {
    for (const DriverEntry& e : *entries) out.push_back(e.name);
  }
  return out;
}

// Rewrites a driver root as the previous release kept it: the records in
// `db` become <driver_root>/metadata/<id> files ("thin=..\nparent=..\nrw=..
// \nstate=ready\n") and leave `db`, the base device's entry becomes
// <driver_root>/base; records-home goes. Returns the records.
std::vector<LayerRecord> ToPreviousRelease(const std::string& db, const std::string& driver_root) {
  auto records = LayerRecords::Open(db);
  EXPECT_TRUE(records.ok()) << records.status();
  if (!records.ok()) return {};
  auto all = (*records)->List();
  EXPECT_TRUE(all.ok()) << all.status();
  if (!all.ok()) return {};
  fs::create_directories(driver_root + "/metadata");
  for (const LayerRecord& r : *all) {
    WriteAll(driver_root + "/metadata/" + r.id, absl::StrCat("thin=", r.Field("thin"), "\nparent=", r.Field("parent"),
                                                             "\nrw=", r.Field("rw"), "\nstate=ready\n"));
    EXPECT_OK((*records)->Drop(r.id));
  }
  auto base = (*records)->GetEntry("base", "base");
  EXPECT_TRUE(base.ok() && base->has_value()) << "no base entry";
  if (base.ok() && base->has_value()) {
    WriteAll(driver_root + "/base", absl::StrCat("thin=", (*base)->Field("thin"), "\nlayout=",
                                                 (*base)->Field("layout"), "\nstate=ready\n"));
    EXPECT_OK((*records)->DeleteEntry("base", "base"));
  }
  fs::remove(driver_root + "/records-home");
  return *all;
}

class DevmapperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/mapper/control", F_OK) != 0) {
      GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
    }
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    base_ = "/tmp/" + testsupport::UniqueName("dmgraph");
    fs::create_directories(base_);
    root_ = base_ + "/devicemapper";
  }

  void TearDown() override {
    driver_.reset();
    if (root_.empty()) return;
    // Unmount whatever a failed test left, then the pool.
    for (const auto& m : {root_ + "/mnt"}) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(m, ec)) umount2(e.path().c_str(), MNT_DETACH);
    }
    EXPECT_EQ(testsupport::DestroyDriverPools(root_), absl::OkStatus());
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  void Open(std::map<std::string, std::string> options = BaseOptions()) {
    driver_.reset();
    auto d = OpenDriver("devicemapper", base_, options);
    ASSERT_TRUE(d.ok()) << d.status();
    driver_ = std::move(*d);
  }

  // Closes the driver as a shutdown would (Cleanup) and opens it again.
  void Reopen(std::map<std::string, std::string> options = BaseOptions()) {
    if (driver_) {
      ASSERT_OK(driver_->Cleanup());
    }
    Open(options);
  }

  std::string MustGet(const std::string& id) {
    auto dir = driver_->Get(id, "");
    EXPECT_TRUE(dir.ok()) << dir.status();
    return dir.ok() ? *dir : "/nonexistent";
  }

  // Every tagged thin is the base or a ready layer's device.
  void ExpectNoOrphans() { ExpectNoOrphansIn(*driver_); }
  static void ExpectNoOrphansIn(const Driver& d) {
    auto thins = DriverThins(d);
    auto list = d.List();
    ASSERT_TRUE(list.ok()) << list.status();
    std::set<std::string> devices;
    for (const auto& id : *list) {
      auto md = d.Metadata(id);
      ASSERT_TRUE(md.ok()) << md.status();
      devices.insert((*md)["DeviceName"]);
    }
    size_t base = 0;
    for (const auto& t : thins) {
      if (absl::EndsWith(t.name, "+base")) {
        ++base;
        continue;
      }
      EXPECT_TRUE(devices.count(t.dm_name)) << "orphaned thin " << t.name << " (id " << t.dev_id << ")";
    }
    EXPECT_EQ(base, 1u);
    EXPECT_EQ(thins.size(), list->size() + 1);
  }

  std::string base_, root_;
  std::unique_ptr<Driver> driver_;
};

TEST_F(DevmapperTest, LifecycleContentThroughSnapshots) {
  Open();
  EXPECT_EQ(driver_->Name(), "devicemapper");
  ASSERT_OK(driver_->Create("l0", "", {}));
  EXPECT_TRUE(driver_->Exists("l0"));
  EXPECT_EQ(driver_->Create("l0", "", {}).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(driver_->Create("x", "missing", {}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(driver_->Create("../x", "", {}).code(), absl::StatusCode::kInvalidArgument);
  CreateOptions sized;
  sized.storage_options["size"] = "20G";
  EXPECT_EQ(driver_->Create("x", "", sized).code(), absl::StatusCode::kInvalidArgument);

  std::string d0 = MustGet("l0");
  EXPECT_EQ(d0, root_ + "/mnt/l0");
  EXPECT_TRUE(fs::is_empty(d0)) << "a base layer starts empty (the base filesystem has no lost+found)";
  WriteAll(d0 + "/hello", "from l0");
  fs::create_directories(d0 + "/etc");
  WriteAll(d0 + "/etc/conf", "v1");
  // A second Get shares the mount.
  EXPECT_EQ(MustGet("l0"), d0);
  ASSERT_OK(driver_->Put("l0"));
  EXPECT_TRUE(fs::exists(d0 + "/hello")) << "still mounted after one of two Puts";

  // Snapshot of a mounted parent (the origin is suspended around create_snap).
  CreateOptions rw;
  rw.read_write = true;
  ASSERT_OK(driver_->Create("l1", "l0", rw));
  ASSERT_OK(driver_->Put("l0"));
  EXPECT_FALSE(fs::exists(d0 + "/hello")) << "unmounted after the last Put";

  std::string d1 = MustGet("l1");
  EXPECT_EQ(ReadAll(d1 + "/hello"), "from l0");
  WriteAll(d1 + "/etc/conf", "v2");
  fs::remove(d1 + "/hello");
  ASSERT_OK(driver_->Put("l1"));
  d0 = MustGet("l0");
  EXPECT_EQ(ReadAll(d0 + "/etc/conf"), "v1") << "a child's writes never reach its parent";
  EXPECT_TRUE(fs::exists(d0 + "/hello"));
  ASSERT_OK(driver_->Put("l0"));
  EXPECT_EQ(driver_->Put("l0").code(), absl::StatusCode::kFailedPrecondition);

  auto md = driver_->Metadata("l1");
  ASSERT_TRUE(md.ok()) << md.status();
  EXPECT_FALSE((*md)["DeviceId"].empty());
  EXPECT_TRUE(absl::StartsWith((*md)["DeviceName"], "dmthin-")) << (*md)["DeviceName"];
  EXPECT_EQ((*md)["DeviceSize"], std::to_string(512ull << 20));
  auto md0 = driver_->Metadata("l0");
  ASSERT_TRUE(md0.ok());
  EXPECT_NE((*md0)["DeviceId"], (*md)["DeviceId"]);

  // Described, not performed: the thin device with its ext4, activated for
  // the caller, who mounts it (as containerd's devmapper snapshotter does).
  auto mounts = driver_->Mounts("l1");
  ASSERT_TRUE(mounts.ok()) << mounts.status();
  ASSERT_EQ(mounts->size(), 1u);
  EXPECT_EQ((*mounts)[0].type, "ext4");
  EXPECT_EQ((*mounts)[0].source, "/dev/mapper/" + (*md)["DeviceName"]);
  EXPECT_EQ((*mounts)[0].options, (std::vector<std::string>{"rw"}));
  EXPECT_FALSE(fs::exists(root_ + "/mnt/l1/etc")) << "Mounts mounts nothing itself";
  EXPECT_EQ(*driver_->MountCount("l1"), 0);
  {
    std::string target = base_ + "/described";
    fs::create_directories(target);
    ASSERT_EQ(mount((*mounts)[0].source.c_str(), target.c_str(), "ext4", 0, nullptr), 0) << strerror(errno);
    EXPECT_EQ(ReadAll(target + "/etc/conf"), "v2");
    EXPECT_FALSE(fs::exists(target + "/lost+found"));
    // A Get/Put pair beside the caller's mount leaves it alone.
    ASSERT_OK(driver_->Get("l1", ""));
    ASSERT_OK(driver_->Put("l1"));
    EXPECT_EQ(ReadAll(target + "/etc/conf"), "v2");
    ASSERT_EQ(umount(target.c_str()), 0) << strerror(errno);
  }
  auto mounts0 = driver_->Mounts("l0");
  ASSERT_TRUE(mounts0.ok()) << mounts0.status();
  EXPECT_EQ((*mounts0)[0].options, (std::vector<std::string>{"ro"})) << "image layers are read-only";
  // Committed deactivates an unmounted layer's device.
  ASSERT_OK(driver_->Committed("l0"));
  EXPECT_FALSE(fs::exists((*mounts0)[0].source)) << "device node left after Committed";

  auto list = driver_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<std::string>{"l0", "l1"}));
  ExpectNoOrphans();

  ASSERT_OK(driver_->Remove("l1"));
  EXPECT_FALSE(driver_->Exists("l1"));
  EXPECT_EQ(driver_->Remove("l1").code(), absl::StatusCode::kNotFound);
  ASSERT_OK(driver_->Remove("l0"));
  EXPECT_EQ(DriverThins(*driver_).size(), 1u) << "only the base is left";
  // The id can be used again.
  ASSERT_OK(driver_->Create("l0", "", {}));
  EXPECT_TRUE(fs::is_empty(MustGet("l0")));
  ASSERT_OK(driver_->Put("l0"));
}

TEST_F(DevmapperTest, LongIdsAndRemoveWhileMounted) {
  Open();
  std::string long_id(128, 'a');
  ASSERT_OK(driver_->Create(long_id, "", {}));
  std::string d = MustGet(long_id);
  WriteAll(d + "/f", "x");
  auto md = driver_->Metadata(long_id);
  ASSERT_TRUE(md.ok());
  EXPECT_LT((*md)["DeviceName"].size(), 128u);
  // Remove unmounts.
  ASSERT_OK(driver_->Remove(long_id));
  EXPECT_FALSE(fs::exists(d + "/f"));
  EXPECT_EQ(DriverThins(*driver_).size(), 1u);
}

TEST_F(DevmapperTest, StatusReportsThePool) {
  Open();
  auto st = driver_->Status();
  std::map<std::string, std::string> m(st.begin(), st.end());
  for (const char* key : {"Pool Name", "Pool Blocksize", "Base Device Size", "Data loop file",
                          "Metadata loop file", "Data Space Used", "Data Space Total",
                          "Data Space Available", "Metadata Space Used", "Metadata Space Total",
                          "Metadata Space Available", "Thin Pool Minimum Free Space",
                          "Deferred Deleted Device Count"}) {
    EXPECT_FALSE(m[key].empty()) << key;
  }
  EXPECT_EQ(m["Pool Blocksize"], "64.0 KiB");
  EXPECT_EQ(m["Base Device Size"], "512 MiB");
  EXPECT_EQ(m["Data Space Total"], "2.00 GiB");
  EXPECT_TRUE(fs::exists(m["Data loop file"])) << m["Data loop file"];
  EXPECT_EQ(m["Thin Pool Minimum Free Space"], "10%");
  EXPECT_EQ(m["Deferred Deleted Device Count"], "0");
}

TEST_F(DevmapperTest, OptionsAndProbe) {
  auto probe = ProbeDrivers(base_, {});
  for (const auto& r : probe) {
    if (r.name != "devicemapper") continue;
    ASSERT_FALSE(r.status.ok());
    EXPECT_EQ(GetUnsupported(r.status), Unsupported::kConfiguration) << r.status;
  }
  for (const auto& [k, v] : std::map<std::string, std::string>{{"dm.fs", "xfs"},
                                                               {"dm.basesize", "10"},
                                                               {"dm.min_free_space", "120%"},
                                                               {"dm.loopdatasize", "lots"},
                                                               {"dm.nonsense", "1"},
                                                               {"dm.blkdiscard", "maybe"}}) {
    auto o = BaseOptions();
    o[k] = v;
    auto d = OpenDriver("devicemapper", base_, o);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << k << "=" << v << ": " << d.status();
  }
  auto missing = OpenDriver("devicemapper", base_, {{"dm.thinpooldev", "nosuchpool"},
                                                    {"dm.statedir", base_ + "/state"}});
  EXPECT_EQ(GetUnsupported(missing.status()), Unsupported::kConfiguration) << missing.status();
}

// Reopening (and migrating the previous release's record files) keeps
// every layer and its content.
TEST_F(DevmapperTest, ReopenKeepsLayersAndContent) {
  Open();
  ASSERT_OK(driver_->Create("a", "", {}));
  WriteAll(MustGet("a") + "/data", std::string(1 << 20, 'z'));
  ASSERT_OK(driver_->Create("b", "a", {}));
  std::string tag = StatusValue(*driver_, "Thin Prefix");
  // A shutdown with a layer still mounted: Cleanup unmounts and deactivates
  // everything, including the pool the driver made.
  ASSERT_OK(driver_->Cleanup());
  driver_.reset();
  // As the previous release kept its records (the Docker plugin's roots):
  // <root>/metadata/<id> files, moved into records.db by the open.
  EXPECT_EQ(ToPreviousRelease(root_ + "/records.db", root_).size(), 2u);
  Open();
  EXPECT_FALSE(fs::exists(root_ + "/metadata"));
  EXPECT_FALSE(fs::exists(root_ + "/base"));
  EXPECT_EQ(EntryNames(root_ + "/records.db", "base"), std::vector<std::string>{"base"});
  EXPECT_EQ(StatusValue(*driver_, "Thin Prefix"), tag);
  auto list = driver_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ReadAll(MustGet("b") + "/data"), std::string(1 << 20, 'z'));
  ASSERT_OK(driver_->Put("b"));
  ExpectNoOrphans();
}

TEST_F(DevmapperTest, ApplyDiffDiffAndChanges) {
  Open();
  ASSERT_OK(driver_->Create("base", "", {}));
  std::string tar0 = BuildTar({
      {.path = "etc", .type = '5', .mode = 0755},
      {.path = "etc/passwd", .data = "root:x:0:0\n"},
      {.path = "etc/gone", .data = "bye"},
      {.path = "bin", .type = '5', .mode = 0755},
      {.path = "bin/sh", .data = "#!", .mode = 0755},
      {.path = "bin/link", .type = '2', .link = "sh"},
  });
  StringSource src0(tar0);
  auto applied = driver_->ApplyDiff("base", "", src0);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_TRUE(absl::StartsWith(applied->diff_id, "sha256:"));
  ASSERT_OK(driver_->Create("top", "base", {}));
  std::string tar1 = BuildTar({
      {.path = "etc", .type = '5', .mode = 0755},
      {.path = "etc/.wh.gone", .data = ""},
      {.path = "etc/passwd", .data = "root:x:0:0\nuser:x:1000:1000\n"},
      {.path = "new", .data = "fresh"},
  });
  StringSource src1(tar1);
  ASSERT_OK(driver_->ApplyDiff("top", "base", src1));
  std::string top = MustGet("top");
  EXPECT_FALSE(fs::exists(top + "/etc/gone"));
  EXPECT_EQ(ReadAll(top + "/new"), "fresh");
  EXPECT_EQ(fs::read_symlink(top + "/bin/link"), "sh");
  ASSERT_OK(driver_->Put("top"));

  auto changes = driver_->Changes("top", "base");
  ASSERT_TRUE(changes.ok()) << changes.status();
  std::vector<Change> want = {{"/etc", ChangeKind::kModify},
                              {"/etc/gone", ChangeKind::kDelete},
                              {"/etc/passwd", ChangeKind::kModify},
                              {"/new", ChangeKind::kAdd}};
  EXPECT_EQ(*changes, want);
  auto size = driver_->DiffSize("top", "base");
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(*size, int64_t(std::string("root:x:0:0\nuser:x:1000:1000\n").size() + 5));

  // The diff, applied to a fresh layer over the same parent, gives the same tree.
  std::string out;
  StringSink sink(&out);
  auto diff = driver_->Diff("top", "base", sink);
  ASSERT_TRUE(diff.ok()) << diff.status();
  EXPECT_GT(diff->tar_bytes, 0u);
  ASSERT_OK(driver_->Create("again", "base", {}));
  StringSource src2(out);
  ASSERT_OK(driver_->ApplyDiff("again", "base", src2));
  auto again = driver_->Changes("again", "base");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, want);
  // Neither side left anything mounted.
  EXPECT_FALSE(fs::exists(root_ + "/mnt/base") && !fs::is_empty(root_ + "/mnt/base"));
}

// A mount of the layer leaked into another mount namespace keeps its device
// open: Put and Remove must not fail, the layer disappears at once, and the
// reaper deletes the thin id once the namespace lets go.
TEST_F(DevmapperTest, BusyRemovalIsDeferredAndReaped) {
  Open();
  ASSERT_OK(driver_->Create("busy", "", {}));
  std::string dir = MustGet("busy");
  WriteAll(dir + "/f", "x");
  auto md = driver_->Metadata("busy");
  ASSERT_TRUE(md.ok());
  std::string dm_name = (*md)["DeviceName"];

  LeakedMounts leak;
  fs::create_directories(base_ + "/leak");
  ASSERT_TRUE(leak.Start(dir, base_ + "/leak"));

  auto dm = dm::Control::Open();
  ASSERT_TRUE(dm.ok());
  auto name = dm::Name::Create(dm_name);
  ASSERT_TRUE(name.ok());

  ASSERT_TRUE(driver_->Put("busy").ok()) << "Put on a device held elsewhere defers its removal";
  // The reaper thread deactivates after Put: wait for it.
  auto info = (*dm)->Find(*name);
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
       info.ok() && info->has_value() && !(*info)->deferred_remove() && std::chrono::steady_clock::now() < until;
       info = (*dm)->Find(*name)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(info.ok());
  ASSERT_TRUE(info->has_value()) << "still held by the other namespace";
  EXPECT_GT((*info)->open_count, 0);
  EXPECT_TRUE((*info)->deferred_remove());

  absl::Status removed = driver_->Remove("busy");
  ASSERT_TRUE(removed.ok()) << removed;
  EXPECT_FALSE(driver_->Exists("busy"));
  auto list = driver_->List();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
  EXPECT_EQ(StatusValue(*driver_, "Deferred Deleted Device Count"), "1");
  EXPECT_EQ(DriverThins(*driver_).size(), 2u) << "the thin id waits for the reaper";
  // The id is free for a new layer at once (under a new thin name).
  absl::Status again = driver_->Create("busy", "", {});
  ASSERT_TRUE(again.ok()) << again;
  auto md2 = driver_->Metadata("busy");
  ASSERT_TRUE(md2.ok());
  EXPECT_NE((*md2)["DeviceName"], dm_name);
  ASSERT_OK(driver_->Remove("busy"));

  // Let go: the kernel removes the device at last close, the reaper the thin.
  ASSERT_TRUE(leak.Release());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline &&
         (DriverThins(*driver_).size() != 1 || StatusValue(*driver_, "Deferred Deleted Device Count") != "0")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(DriverThins(*driver_).size(), 1u) << "the reaper deleted the thin id";
  EXPECT_EQ(StatusValue(*driver_, "Deferred Deleted Device Count"), "0");
  info = (*dm)->Find(*name);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->has_value()) << "the deferred remove happened at last close";
}

TEST_F(DevmapperTest, BusyRemovalWithoutDeferredDeletionFailsCleanly) {
  auto o = BaseOptions();
  o["dm.use_deferred_deletion"] = "false";
  Open(o);
  ASSERT_OK(driver_->Create("busy", "", {}));
  std::string dir = MustGet("busy");
  LeakedMounts leak;
  fs::create_directories(base_ + "/leak");
  ASSERT_TRUE(leak.Start(dir, base_ + "/leak"));
  absl::Status removed = driver_->Remove("busy");
  EXPECT_EQ(removed.code(), absl::StatusCode::kFailedPrecondition) << removed;
  EXPECT_TRUE(absl::StrContains(removed.message(), "busy")) << removed;
  EXPECT_TRUE(driver_->Exists("busy")) << "a refused removal leaves the layer whole";
  ASSERT_TRUE(leak.Release());
  // Once free, the deferred dm remove has happened and removal works.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  absl::Status again;
  do {
    again = driver_->Remove("busy");
    if (again.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_TRUE(again.ok()) << again;
  EXPECT_EQ(DriverThins(*driver_).size(), 1u);
}

TEST_F(DevmapperTest, PoolBelowMinFreeSpaceRefusesWrites) {
  auto o = BaseOptions();
  o["dm.loopdatasize"] = "256M";
  o["dm.min_free_space"] = "50%";
  Open(o);
  ASSERT_OK(driver_->Create("filler", "", {}));
  std::string dir = MustGet("filler");
  {
    std::string chunk(1 << 20, 'f');
    int fd = open((dir + "/big").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    for (int i = 0; i < 150; ++i) ASSERT_EQ(write(fd, chunk.data(), chunk.size()), ssize_t(chunk.size()));
    ASSERT_EQ(fsync(fd), 0);
    close(fd);
  }
  ASSERT_OK(driver_->Put("filler"));
  auto thins_before = DriverThins(*driver_).size();

  absl::Status s = driver_->Create("more", "filler", {});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "dm.min_free_space")) << s;
  EXPECT_FALSE(driver_->Exists("more"));
  EXPECT_EQ(DriverThins(*driver_).size(), thins_before) << "no half layer";
  {
    auto records = LayerRecords::Open(root_ + "/records.db");
    ASSERT_TRUE(records.ok()) << records.status();
    auto more = (*records)->Get("more");
    ASSERT_TRUE(more.ok()) << more.status();
    EXPECT_FALSE(more->has_value()) << "no record left of the refused create";
  }

  std::string small = BuildTar({{.path = "x", .data = "y"}});
  StringSource src(small);
  auto applied = driver_->ApplyDiff("filler", "", src);
  EXPECT_EQ(applied.status().code(), absl::StatusCode::kResourceExhausted) << applied.status();

  // Freeing space lets creation through again.
  ASSERT_OK(driver_->Remove("filler"));
  ASSERT_OK(driver_->Create("more", "", {}));
  ExpectNoOrphans();
}

TEST_F(DevmapperTest, OrphanedThinIsDeletedOnOpen) {
  Open();
  ASSERT_OK(driver_->Create("keep", "", {}));
  std::string tag = StatusValue(*driver_, "Thin Prefix");
  {
    auto state = thinpool::StateDir::Open(StatusValue(*driver_, "Pool State Dir"));
    ASSERT_TRUE(state.ok());
    auto dm = dm::Control::Open();
    ASSERT_TRUE(dm.ok());
    auto pool = thinpool::Pool::Open(**state, **dm, StatusValue(*driver_, "Pool Name"));
    ASSERT_TRUE(pool.ok());
    ASSERT_OK((*pool)->Snapshot(tag + "+base", tag + "-stray"));
    ASSERT_OK((*pool)->CreateThin("someone-elses", 64 << 20));
  }
  Reopen();
  ExpectNoOrphans();
  EXPECT_TRUE(driver_->Exists("keep"));
  // Thins without the tag are not the driver's business.
  auto state = thinpool::StateDir::Open(StatusValue(*driver_, "Pool State Dir"));
  auto dm = dm::Control::Open();
  auto pool = thinpool::Pool::Open(**state, **dm, StatusValue(*driver_, "Pool Name"));
  ASSERT_TRUE(pool.ok());
  EXPECT_TRUE((*pool)->GetThinInfo("someone-elses").ok());
}

// What a power cut can leave of the relaxed commits (Create's Ready,
// Remove's mark and drop: they do not wait for the disk) once the pool's
// durable registry has moved on: a creating record whose thin the pool has
// (Ready lost: the create is finished), a ready record and a removing one
// whose thins the pool had deleted (the mark and the drop lost, or the
// drop alone), and a thin no record names (a create that died before its
// intent was written: OrphanedThinIsDeletedOnOpen). The open repairs all
// of them.
TEST_F(DevmapperTest, LostRelaxedCommitsAreRepairedOnOpen) {
  Open();
  for (const char* id : {"keep", "was-creating", "was-ready", "was-removing"}) {
    ASSERT_OK(driver_->Create(id, "", {}));
  }
  WriteAll(MustGet("was-creating") + "/f", "whole");
  ASSERT_OK(driver_->Put("was-creating"));
  std::string tag = StatusValue(*driver_, "Thin Prefix");
  std::string state_dir = StatusValue(*driver_, "Pool State Dir");
  std::string pool_name = StatusValue(*driver_, "Pool Name");
  ASSERT_OK(driver_->Cleanup());
  driver_.reset();
  {
    auto records = LayerRecords::Open(root_ + "/records.db");
    ASSERT_TRUE(records.ok()) << records.status();
    auto state = thinpool::StateDir::Open(state_dir);
    ASSERT_TRUE(state.ok());
    auto dm = dm::Control::Open();
    ASSERT_TRUE(dm.ok());
    auto pool = thinpool::Pool::Open(**state, **dm, pool_name);
    ASSERT_TRUE(pool.ok()) << pool.status();
    ASSERT_OK((*pool)->Activate());
    for (const char* id : {"was-ready", "was-removing"}) {
      auto r = (*records)->Get(id);
      ASSERT_TRUE(r.ok() && r->has_value()) << id;
      ASSERT_OK((*pool)->DeleteThin((*r)->Field("thin")));
    }
    ASSERT_OK((*records)->Removing("was-removing"));
    auto creating = (*records)->Get("was-creating");
    ASSERT_TRUE(creating.ok() && creating->has_value());
    ASSERT_OK((*records)->Drop("was-creating"));
    ASSERT_OK((*records)->Begin("was-creating", (*creating)->fields));
    ASSERT_OK((*pool)->Snapshot(tag + "+base", tag + "-lost-intent"));
  }
  Open();
  EXPECT_TRUE(driver_->Exists("keep"));
  ASSERT_TRUE(driver_->Exists("was-creating")) << "a create whose thin is in the pool is finished";
  EXPECT_EQ(ReadAll(MustGet("was-creating") + "/f"), "whole");
  ASSERT_OK(driver_->Put("was-creating"));
  EXPECT_FALSE(driver_->Exists("was-ready"));
  EXPECT_FALSE(driver_->Exists("was-removing"));
  ExpectNoOrphans();
  auto records = LayerRecords::Open(root_ + "/records.db");
  ASSERT_TRUE(records.ok()) << records.status();
  auto ids = (*records)->Ids();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, std::set<std::string>({"keep", "was-creating"})) << "the records whose thins are gone are dropped";
  ASSERT_OK(driver_->Create("again", "keep", {}));  // the ids are free again
  ASSERT_OK(driver_->Create("was-ready", "keep", {}));
  ExpectNoOrphans();
}

// An existing pool by name (dm.thinpooldev), shared with other users.
TEST_F(DevmapperTest, UsesAnExistingPool) {
  std::string sd = base_ + "/state";
  auto state = thinpool::StateDir::Open(sd);
  ASSERT_TRUE(state.ok());
  auto dm = dm::Control::Open();
  ASSERT_TRUE(dm.ok());
  static int n = 0;
  std::string name = absl::StrCat("shared", getpid(), "x", n++);
  thinpool::PoolOptions po;
  po.data_bytes = 1ull << 30;
  auto pool = thinpool::Pool::Create(**state, **dm, name, po);
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_OK((*pool)->CreateThin("other", 64 << 20));
  Open({{"dm.thinpooldev", "/dev/mapper/dmthin-" + name}, {"dm.statedir", sd}, {"dm.basesize", "256M"}});
  EXPECT_EQ(StatusValue(*driver_, "Pool Name"), name);
  ASSERT_OK(driver_->Create("l", "", {}));
  WriteAll(MustGet("l") + "/f", "x");
  ASSERT_OK(driver_->Put("l"));
  ASSERT_OK(driver_->Remove("l"));
  ASSERT_OK(driver_->Cleanup());
  EXPECT_TRUE((*pool)->IsActive().value_or(false)) << "a pool the driver did not make stays up";
  EXPECT_TRUE((*pool)->GetThinInfo("other").ok());
  driver_.reset();
  EXPECT_OK((*pool)->Destroy(/*force=*/true));
}

// ------------------------------------------------------------ crash points ---

// Runs in a child (see CrashTest): opens the driver at DMTHIN_DM_CRASH_BASE,
// arms DMTHIN_FAILPOINT and does DMTHIN_DM_CRASH_OP; the failpoint kills it.
TEST(DevmapperCrashHelper, Run) {
  const char* base = getenv("DMTHIN_DM_CRASH_BASE");
  const char* op = getenv("DMTHIN_DM_CRASH_OP");
  const char* point = getenv("DMTHIN_DM_CRASH_POINT");
  if (base == nullptr || op == nullptr || point == nullptr) GTEST_SKIP() << "helper for CrashTest";
  auto o = BaseOptions();
  std::string what = op;
  if (what != "put") o["dm.reaper_interval"] = "0";
  if (what == "open") setenv("DMTHIN_FAILPOINT", point, 1);
  auto d = OpenDriver("devicemapper", base, o);
  ASSERT_TRUE(d.ok()) << d.status();
  if (what == "create") {
    ASSERT_TRUE((*d)->Get("parent", "").ok());  // a mounted origin: suspend on snapshot
    setenv("DMTHIN_FAILPOINT", point, 1);
    ASSERT_TRUE((*d)->Create("child", "parent", {}).ok());
  } else if (what == "remove") {
    setenv("DMTHIN_FAILPOINT", point, 1);
    ASSERT_TRUE((*d)->Remove("victim").ok());
  } else if (what == "put") {
    ASSERT_TRUE((*d)->Get("victim", "").ok());
    setenv("DMTHIN_FAILPOINT", point, 1);
    ASSERT_TRUE((*d)->Put("victim").ok());
    // The reaper thread deactivates (devmapper_after_queued_deactivate).
    std::this_thread::sleep_for(std::chrono::seconds(5));
  } else if (what == "remove_busy") {
    // The victim's filesystem held open: its mount is detached, its
    // device stays open, and the thin's deletion is deferred. When the
    // failpoint kills this process, the kernel drops that last hold after
    // the parent's waitpid may have returned (an exiting task's final
    // mntput goes to delayed_mntput_work, fs/namespace.c), so the parent's
    // first open can still find the device busy and rightly leave the
    // deletion for a later open: the tests reopen until it is done.
    auto dir = (*d)->Get("victim", "");
    ASSERT_TRUE(dir.ok()) << dir.status();
    int held = open(dir->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(held, 0);
    setenv("DMTHIN_FAILPOINT", point, 1);
    ASSERT_TRUE((*d)->Remove("victim").ok());
    // Let go: the kernel removes the device, and the next reap (at every
    // Remove) deletes the thin (devmapper_after_reap_delete).
    close(held);
    for (int i = 0; i < 50; ++i) {
      (void)(*d)->Remove("nonexistent");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  _exit(0);  // the failpoint was not reached
}

struct CrashCase {
  std::string op;
  std::string point;
};

class CrashTest : public DevmapperTest, public ::testing::WithParamInterface<CrashCase> {
 protected:
  // Runs the helper in a fresh process; returns its exit status.
  int RunHelper(const CrashCase& c) {
    return testsupport::RunTestInChild("DevmapperCrashHelper.Run", {{"DMTHIN_DM_CRASH_BASE", base_},
                                                                     {"DMTHIN_DM_CRASH_OP", c.op},
                                                                     {"DMTHIN_DM_CRASH_POINT", c.point}});
  }
};

TEST_P(CrashTest, ReopenLeavesNoOrphanAndNoHalfLayer) {
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
  if (c.op == "remove_busy") {
    // The dead helper's file on the detached mount may still hold the
    // device: an open then leaves the deferred deletion for the next one.
    for (int i = 0; i < 50 && !EntryNames(root_ + "/records.db", "deferred").empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      Open();
    }
  }
  ExpectNoOrphans();
  if (c.op == "create") {
    // The intent and the thin are both there: the create is finished (an
    // earlier point may have either undone or finished it).
    if (c.point == "devmapper_after_snapshot") {
      EXPECT_TRUE(driver_->Exists("child"));
    }
    if (driver_->Exists("child")) {
      // Rolled forward: the layer is whole.
      EXPECT_EQ(ReadAll(MustGet("child") + "/p"), "parent data");
      ASSERT_OK(driver_->Put("child"));
    }
    ASSERT_OK(driver_->Create("child2", "parent", {}));
    EXPECT_EQ(ReadAll(MustGet("child2") + "/p"), "parent data");
    ASSERT_OK(driver_->Put("child2"));
  } else if (c.op == "remove" || c.op == "remove_busy") {
    EXPECT_FALSE(driver_->Exists("victim")) << "a removal once started is finished on open";
    EXPECT_TRUE(EntryNames(root_ + "/records.db", "deferred").empty())
        << "the deferred thin is deleted once its holder is gone";
  } else if (c.op == "put") {
    // Died after the umount with the deactivation queued: open did it.
    for (const auto& t : DriverThins(*driver_)) {
      if (!absl::EndsWith(t.name, "+base")) {
        EXPECT_FALSE(t.active) << t.name << " left active";
      }
    }
    EXPECT_TRUE(EntryNames(root_ + "/records.db", "deactivate").empty());
    EXPECT_TRUE(driver_->Exists("victim"));
  }
  {
    auto records = LayerRecords::Open(root_ + "/records.db");
    ASSERT_TRUE(records.ok()) << records.status();
    auto all = (*records)->List();
    ASSERT_TRUE(all.ok()) << all.status();
    for (const LayerRecord& r : *all) {
      EXPECT_EQ(r.state, RecordState::kReady) << r.id << ": the open finishes or undoes what the crash left";
    }
  }
  // The parent, mounted by the dead child, is still usable.
  if (c.op != "open") {
    EXPECT_EQ(ReadAll(MustGet("parent") + "/p"), "parent data");
    ASSERT_OK(driver_->Put("parent"));
  } else {
    ASSERT_OK(driver_->Create("first", "", {}));
    EXPECT_TRUE(fs::is_empty(MustGet("first")));
    ASSERT_OK(driver_->Put("first"));
  }
  ExpectNoOrphans();
  ASSERT_OK(driver_->Cleanup());
}

INSTANTIATE_TEST_SUITE_P(
    Points, CrashTest,
    ::testing::Values(CrashCase{"open", "after_intent"}, CrashCase{"open", "after_message"},
                      CrashCase{"open", "after_set_txid"}, CrashCase{"open", "after_activate"},
                      CrashCase{"open", "devmapper_base_after_thin"},
                      CrashCase{"open", "devmapper_base_after_mkfs"},
                      CrashCase{"create", "devmapper_create_after_intent"}, CrashCase{"create", "after_intent"},
                      CrashCase{"create", "after_suspend"}, CrashCase{"create", "after_message"},
                      CrashCase{"create", "after_set_txid"}, CrashCase{"create", "devmapper_after_snapshot"},
                      CrashCase{"remove", "devmapper_after_remove_mark"}, CrashCase{"remove", "after_intent"},
                      CrashCase{"remove", "after_message"}, CrashCase{"remove", "after_set_txid"},
                      CrashCase{"remove", "devmapper_after_delete"},
                      CrashCase{"put", "devmapper_after_put_queued"},
                      CrashCase{"put", "devmapper_after_queued_deactivate"},
                      CrashCase{"remove_busy", "devmapper_after_defer"},
                      CrashCase{"remove_busy", "devmapper_after_reap_delete"}),
    [](const ::testing::TestParamInfo<CrashCase>& info) { return info.param.op + "_" + info.param.point; });

}  // namespace
}  // namespace graph

namespace graph {
namespace {

// graphctl --driver devicemapper end to end: import a rootfs tarball, create
// a container layer, write into it, diff it, export. The driver's options
// go with every call (--storage-opt), so the first call makes the store and
// its pool (a driver directory made beforehand, without a registry, is data
// the store refuses to adopt).
TEST_F(DevmapperTest, GraphctlEndToEnd) {
  std::string graphctl = testsupport::RepoRoot() + "/build/bin/graphctl";
  if (access(graphctl.c_str(), X_OK) != 0) GTEST_SKIP() << "build graphctl first";
  // The store's root must be empty for the first call: the tar goes in on stdin.
  std::string rootfs = BuildTar({{.path = "etc", .type = '5', .mode = 0755},
                                 {.path = "etc/os-release", .data = "ID=test\n"},
                                 {.path = "bin", .type = '5', .mode = 0755},
                                 {.path = "bin/sh", .data = "#!", .mode = 0755}});
  auto run = [&](std::vector<std::string> args, const std::string& stdin_data = "") {
    std::vector<std::string> argv = {graphctl, "--root", base_, "--driver", "devicemapper"};
    for (const auto& [key, value] : BaseOptions()) {
      argv.push_back("--storage-opt");
      argv.push_back(key + "=" + value);
    }
    argv.insert(argv.end(), args.begin(), args.end());
    testsupport::RunResult r = testsupport::Run(argv, stdin_data);
    EXPECT_TRUE(r.ok()) << r.Describe() << "\n" << r.out;
    std::string out = r.out;
    while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
    return out;
  };
  std::string chain = run({"import", "-"}, rootfs);
  ASSERT_TRUE(absl::StartsWith(chain, "sha256:")) << chain;
  run({"create", "ctr", "--parent", chain, "--rw"});
  std::string dir = run({"mount", "ctr"});
  ASSERT_TRUE(absl::StrContains(dir, "/mnt/")) << dir;
  EXPECT_EQ(ReadAll(dir + "/etc/os-release"), "ID=test\n");
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
  run({"rm", "ctr"});
  // The store's view and the driver's agree.
  run({"check"});
}

}  // namespace
}  // namespace graph

namespace graph {
namespace {

// ------------------------------------------------------------ in a store ---

// A layer store on devicemapper at base_ (its driver root is root_).
class DevmapperStoreTest : public DevmapperTest {
 protected:
  std::unique_ptr<LayerStore> OpenStore() {
    auto s = OpenLayerStore(base_, "devicemapper", BaseOptions());
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // The driver records in the store's registry.
  std::vector<LayerRecord> Records() {
    auto records = LayerRecords::Open(base_ + "/layers.db");
    EXPECT_TRUE(records.ok()) << records.status();
    if (!records.ok()) return {};
    auto all = (*records)->List();
    EXPECT_TRUE(all.ok()) << all.status();
    return all.ok() ? *all : std::vector<LayerRecord>{};
  }

  // An imported base layer (etc/hello) and an active layer "ctr" with an
  // init layer on it; returns the base's name.
  std::string Populate(LayerStore& store) {
    std::string tar = BuildTar({{.path = "etc", .type = '5', .mode = 0755}, {.path = "etc/hello", .data = "world"}});
    StringSource src(tar);
    auto base = store.Import(src, {});
    EXPECT_TRUE(base.ok()) << base.status();
    if (!base.ok()) return "";
    MakeCtr(store, base->name);
    return base->name;
  }
  void MakeCtr(LayerStore& store, const std::string& base, const std::string& name = "ctr") {
    CreateLayerOptions o;
    o.init_layer = true;
    auto ctr = store.Create(name, base, o);
    EXPECT_TRUE(ctr.ok()) << ctr.status();
  }

  // `name` mounts and shows the base's file.
  void ExpectWorks(LayerStore& store, const std::string& name) {
    auto dir = store.Mount(name);
    ASSERT_TRUE(dir.ok()) << name << ": " << dir.status();
    EXPECT_EQ(ReadAll(*dir + "/etc/hello"), "world") << name;
    EXPECT_TRUE(store.Unmount(name).ok());
  }

  void ExpectClean(LayerStore& store) {
    auto check = store.Check(false);
    ASSERT_TRUE(check.ok()) << check.status();
    EXPECT_TRUE(check->clean()) << testsupport::CheckReportText(*check);
  }
};

// A driver root of the previous release (records in <root>/metadata/<id>
// files, the base device in <root>/base, deferred deletions in
// deferred/<thin>, queued deactivations in deactivate/<id>) is moved into
// the store's registry at open, in one transaction: every layer listed,
// mountable and removable, the queued work done, check clean, the files
// gone. A malformed file refuses the open and moves nothing. The root then
// refuses to be opened without its store.
TEST_F(DevmapperStoreTest, PreviousReleaseRecordFilesAreMigrated) {
  std::string base;
  {
    auto store = OpenStore();
    ASSERT_TRUE(store);
    base = Populate(*store);
    CreateLayerOptions view;
    view.kind = LayerKind::kView;
    ASSERT_OK(store->Create("view", base, view));
    ASSERT_OK(store->driver().Cleanup());
  }
  // Rewrite as the previous release kept them.
  std::vector<LayerRecord> before = ToPreviousRelease(base_ + "/layers.db", root_);
  ASSERT_EQ(before.size(), 4u) << "base, ctr, its init layer, view";
  ASSERT_TRUE(Records().empty());
  std::string tag(absl::StripAsciiWhitespace(ReadAll(root_ + "/instance")));
  fs::create_directories(root_ + "/deferred");
  fs::create_directories(root_ + "/deactivate");
  WriteAll(root_ + "/deactivate/" + before[0].id, "");
  const std::string deferred = root_ + "/deferred/" + tag + "-gone";
  WriteAll(deferred, "not what a release wrote\n");
  {
    auto refused = OpenLayerStore(base_, "devicemapper", BaseOptions());
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss) << refused.status();
    EXPECT_TRUE(Records().empty()) << "nothing moved";
    EXPECT_TRUE(EntryNames(base_ + "/layers.db", "base").empty()) << "nothing moved";
    EXPECT_TRUE(fs::exists(root_ + "/metadata/" + before[0].id));
    EXPECT_TRUE(fs::exists(root_ + "/base"));
  }
  WriteAll(deferred, "id=gone\n");  // a thin that no longer exists: reaped at once

  auto store = OpenStore();
  ASSERT_TRUE(store);
  for (const char* file : {"/base", "/deferred", "/deactivate"}) {
    EXPECT_FALSE(fs::exists(root_ + file)) << file << ": the files go once the entries are committed";
  }
  {
    auto records = LayerRecords::Open(base_ + "/layers.db");
    ASSERT_TRUE(records.ok()) << records.status();
    auto entry = (*records)->GetEntry("base", "base");
    ASSERT_TRUE(entry.ok() && entry->has_value()) << "the base device's entry";
    EXPECT_EQ((*entry)->fields, (std::map<std::string, std::string>{
                                    {"thin", tag + "+base"}, {"layout", "root"}, {"state", "ready"}}));
  }
  EXPECT_TRUE(EntryNames(base_ + "/layers.db", "deferred").empty()) << "reaped at open";
  EXPECT_TRUE(EntryNames(base_ + "/layers.db", "deactivate").empty()) << "deactivated at open";
  std::vector<LayerRecord> after = Records();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].id, before[i].id);
    EXPECT_EQ(after[i].state, RecordState::kReady) << after[i].id;
    EXPECT_EQ(after[i].fields, before[i].fields) << after[i].id;
  }
  EXPECT_FALSE(fs::exists(root_ + "/metadata")) << "the files go once the records are committed";
  auto listed = store->driver().List();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->size(), 4u);
  ExpectClean(*store);
  ExpectWorks(*store, "ctr");
  ExpectWorks(*store, "view");
  ExpectWorks(*store, base);
  auto dir = store->Mount("ctr");
  ASSERT_TRUE(dir.ok()) << dir.status();
  WriteAll(*dir + "/etc/new", "x");
  ASSERT_OK(store->Unmount("ctr"));
  ASSERT_OK(store->Remove("ctr"));
  ASSERT_OK(store->Remove("view"));
  ASSERT_OK(store->Remove(base));
  EXPECT_TRUE(Records().empty());
  ExpectNoOrphansIn(store->driver());
  ASSERT_OK(store->driver().Cleanup());
  store.reset();

  // The store's driver root alone would see no layer: refused, nothing touched.
  auto alone = OpenDriver("devicemapper", base_, BaseOptions());
  EXPECT_EQ(alone.status().code(), absl::StatusCode::kFailedPrecondition) << alone.status();
  EXPECT_FALSE(fs::exists(root_ + "/records.db"));
}

// A crash (DMTHIN_FAILPOINT: the process exits there) at every step of the
// store's and the driver's Prepare, Commit and Remove: the reopened store's
// check --repair makes it clean, no record is left half-way, no thin is
// orphaned, nothing whole is lost, and the interrupted operation can be
// done again. One store for every case (a pool per case is slow in TCG).
TEST_F(DevmapperStoreTest, CrashAtEveryStepIsRepaired) {
  using Op = testsupport::StoreOp;
  struct Case {
    const char* failpoint;
    Op op;
  };
  // thinpool's own points inside the snapshot and the delete are
  // CrashTest's (the driver alone); the store adds nothing between them.
  const std::vector<Case> cases = {
      {"store_create_after_intent", Op::kCreate},     {"store_create_after_init", Op::kCreate},
      {"devmapper_create_after_intent", Op::kCreate}, {"devmapper_after_snapshot", Op::kCreate},
      {"store_create_after_driver", Op::kCreate},     {"store_commit_before_commit", Op::kCommit},
      {"store_remove_after_intent", Op::kRemove},     {"devmapper_after_remove_mark", Op::kRemove},
      {"devmapper_after_delete", Op::kRemove},        {"store_remove_after_driver", Op::kRemove},
      {"store_import_after_apply", Op::kImport},
      // The driver-wide entries' transactions: a Put's queued deactivation
      // (and the reaper's), a busy removal's deferred deletion.
      {"devmapper_after_put_queued", Op::kUnmount},   {"devmapper_after_queued_deactivate", Op::kUnmount},
      {"devmapper_after_defer", Op::kRemoveBusy},
  };
  std::string base;
  {
    auto store = OpenStore();
    ASSERT_TRUE(store);
    base = Populate(*store);
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.failpoint);
    ASSERT_EQ(testsupport::RunStoreOpUntilFailpoint(base_, "devicemapper", BaseOptions(), c.failpoint, c.op, base),
              testsupport::kFailpointExit)
        << "the failpoint was not reached";
    if (c.op == Op::kRemoveBusy) {
      // As in CrashTest: reopen until the dead child's hold is gone.
      for (int i = 0; i < 50 && !EntryNames(base_ + "/layers.db", "deferred").empty(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        ASSERT_TRUE(OpenStore());
      }
    }

    auto store = OpenStore();
    ASSERT_TRUE(store);
    EXPECT_TRUE(testsupport::RepairLeavesStoreClean(*store));
    // No record half-way; one record per driver layer, one thin per record.
    std::set<std::string> ids;
    for (const LayerRecord& r : Records()) {
      EXPECT_EQ(r.state, RecordState::kReady) << r.id;
      ids.insert(r.id);
    }
    auto listed = store->driver().List();
    ASSERT_TRUE(listed.ok()) << listed.status();
    EXPECT_EQ(ids, std::set<std::string>(listed->begin(), listed->end()));
    ExpectNoOrphansIn(store->driver());
    // Nothing queued or deferred is left: the open did it.
    EXPECT_TRUE(EntryNames(base_ + "/layers.db", "deactivate").empty());
    EXPECT_TRUE(EntryNames(base_ + "/layers.db", "deferred").empty());
    // Nothing whole lost (ctr mounts: its init layer and the base below
    // it too); the interrupted operation can be done again.
    if (!store->Stat("ctr").ok()) {
      EXPECT_TRUE(c.op == Op::kRemove || c.op == Op::kRemoveBusy) << "ctr lost";
      MakeCtr(*store, base);
    }
    ExpectWorks(*store, "ctr");
    if (c.op == Op::kCreate) {
      (void)store->Remove("ctr2");
      MakeCtr(*store, base, "ctr2");
      ExpectWorks(*store, "ctr2");
      ASSERT_OK(store->Remove("ctr2"));
    }
    // Whatever else the crash let through goes, as it came.
    auto all = store->List();
    ASSERT_TRUE(all.ok()) << all.status();
    for (const LayerInfo& l : *all) {
      if (l.name != base && l.name != "ctr") ASSERT_OK(store->Remove(l.name));
    }
  }
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ExpectClean(*store);
  ExpectWorks(*store, base);
  ASSERT_OK(store->driver().Cleanup());
}

// Put off the caller's path: the last Put unmounts and leaves the device's
// deactivation to the reaper thread; Get, Remove and close join or cancel it.
class DevmapperPutTest : public DevmapperTest {
 protected:
  static CreateOptions RwLayer() {
    CreateOptions o;
    o.read_write = true;
    return o;
  }
  // Thins of the driver's layers (not the base) whose device is active.
  std::vector<std::string> ActiveLayerThins() {
    std::vector<std::string> out;
    for (const auto& t : DriverThins(*driver_)) {
      if (!absl::EndsWith(t.name, "+base") && t.active) out.push_back(t.name);
    }
    return out;
  }
  bool WaitNoActiveLayer() {
    for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
         std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(std::chrono::milliseconds(50))) {
      if (ActiveLayerThins().empty()) return true;
    }
    return ActiveLayerThins().empty();
  }
  // dm devices of this driver's layers, by the dm name's tag (after close).
  int DmDevicesWithTag(const std::string& tag) {
    auto dm = dm::Control::Open();
    EXPECT_TRUE(dm.ok());
    auto list = (*dm)->List();
    EXPECT_TRUE(list.ok()) << list.status();
    int n = 0;
    for (const auto& d : *list) {
      const std::string& name = d.name;
      // dmthin-<pool>-<tag>-<id>: the pool's own name ends with the tag.
      if (absl::StrContains(name, absl::StrCat(tag, "-")) && !absl::EndsWith(name, "+base")) {
        ADD_FAILURE() << "active: " << name;
        ++n;
      }
    }
    return n;
  }
  // The queued deactivations in the driver's records.
  std::vector<std::string> Markers() { return EntryNames(root_ + "/records.db", "deactivate"); }
};

TEST_F(DevmapperPutTest, PutThenImmediateGetKeepsTheDevice) {
  Open();
  ASSERT_OK(driver_->Create("c", "", RwLayer()));
  WriteAll(MustGet("c") + "/f", "one");
  ASSERT_OK(driver_->Put("c"));
  // At once: the queued deactivation is cancelled or joined.
  std::string dir = MustGet("c");
  EXPECT_EQ(ReadAll(dir + "/f"), "one");
  WriteAll(dir + "/g", "two");
  auto n = driver_->MountCount("c");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(ActiveLayerThins().size(), 1u);
  ASSERT_OK(driver_->Put("c"));
  EXPECT_TRUE(WaitNoActiveLayer()) << "the reaper deactivates after the last Put";
  EXPECT_TRUE(Markers().empty());
  EXPECT_EQ(ReadAll(MustGet("c") + "/g"), "two");
  ASSERT_OK(driver_->Put("c"));
}

TEST_F(DevmapperPutTest, PutThenRemove) {
  Open();
  ASSERT_OK(driver_->Create("c", "", {}));
  WriteAll(MustGet("c") + "/f", "x");
  ASSERT_OK(driver_->Put("c"));
  ASSERT_OK(driver_->Remove("c"));
  EXPECT_FALSE(driver_->Exists("c"));
  EXPECT_EQ(DriverThins(*driver_).size(), 1u) << "only the base is left";
  EXPECT_TRUE(Markers().empty());
  ExpectNoOrphans();
}

TEST_F(DevmapperPutTest, PutThenCloseLeavesNoDevice) {
  auto o = BaseOptions();
  o["dm.reaper_interval"] = "1h";  // the queue wakes the reaper, not the period
  Open(o);
  std::string tag = StatusValue(*driver_, "Thin Prefix");
  ASSERT_OK(driver_->Create("c", "", RwLayer()));
  ASSERT_OK(driver_->Create("ro", "c", {}));
  MustGet("c");
  MustGet("ro");
  ASSERT_OK(driver_->Put("ro"));
  ASSERT_OK(driver_->Put("c"));
  driver_.reset();  // close: drains the queue
  EXPECT_EQ(DmDevicesWithTag(tag), 0) << "a layer's device outlived the driver's close";
  EXPECT_TRUE(Markers().empty());
  Open(o);
  EXPECT_TRUE(driver_->Exists("ro"));
}

TEST_F(DevmapperPutTest, ManyPutGetCyclesFromThreads) {
  Open();
  std::string tag = StatusValue(*driver_, "Thin Prefix");
  constexpr int kThreads = 4;
  constexpr int kCycles = 8;
  ASSERT_OK(driver_->Create("shared", "", {}));
  for (int t = 0; t < kThreads; ++t) ASSERT_OK(driver_->Create(absl::StrCat("own", t), "", {}));
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string own = absl::StrCat("own", t);
      for (int i = 0; i < kCycles; ++i) {
        for (const std::string& id : {own, std::string("shared")}) {
          auto dir = driver_->Get(id, "");
          if (!dir.ok()) {
            ADD_FAILURE() << "Get " << id << ": " << dir.status();
            ++failures;
            continue;
          }
          std::string file = absl::StrCat(*dir, "/t", t);
          WriteAll(file, absl::StrCat(i));
          if (ReadAll(file) != absl::StrCat(i)) ++failures;
          absl::Status put = driver_->Put(id);
          if (!put.ok()) {
            ADD_FAILURE() << "Put " << id << ": " << put;
            ++failures;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(ReadAll(MustGet(absl::StrCat("own", t)) + absl::StrCat("/t", t)), absl::StrCat(kCycles - 1));
    EXPECT_EQ(ReadAll(MustGet("shared") + absl::StrCat("/t", t)), absl::StrCat(kCycles - 1));
    ASSERT_OK(driver_->Put(absl::StrCat("own", t)));
    ASSERT_OK(driver_->Put("shared"));
  }
  auto n = driver_->MountCount("shared");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0);
  driver_.reset();
  EXPECT_EQ(DmDevicesWithTag(tag), 0) << "no device left after close";
  EXPECT_TRUE(Markers().empty());
}

}  // namespace
}  // namespace graph
