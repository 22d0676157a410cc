// libvolume's thin backend against the real dm-thin target (run inside
// tests/vm/run): a volume is a thin device with its own ext4, mounted while
// referenced; a write past its size fails with ENOSPC and the volume stays
// usable; a snapshot of a mounted volume; usage in mapped bytes; a crash
// after the thin is made, repaired by Check(repair) without an orphan thin.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "gtest/gtest.h"
#include "libdm/control.h"
#include "nlohmann/json.hpp"
#include "tests/support/fill_file.h"
#include "tests/support/process.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"
#include "volume/store.h"

namespace volume {
namespace {

using testsupport::FillFile;

constexpr uint64_t kMiB = 1 << 20;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Total bytes of the filesystem mounted at `path` (0 on error).
uint64_t FsBytes(const std::string& path) {
  struct statvfs st;
  if (::statvfs(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
}

bool IsMounted(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" " + path + " ") != std::string::npos) return true;
  }
  return false;
}

class VolumeThinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/mapper/control", F_OK) != 0) {
      GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
    }
    dir_ = "/tmp/" + testsupport::UniqueName("volume-vm");
    ASSERT_EQ(::mkdir(dir_.c_str(), 0700), 0) << dir_;
    auto dm = dm::Control::Open();
    ASSERT_TRUE(dm.ok()) << dm.status();
    dm_ = std::move(*dm);
    auto state = thinpool::StateDir::Open(dir_ + "/thin");
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
    pool_name_ = absl::StrCat("vp", ::getpid());
    thinpool::PoolOptions po;
    po.data_bytes = 512 * kMiB;
    auto pool = thinpool::Pool::Create(*state_, *dm_, pool_name_, po);
    ASSERT_TRUE(pool.ok()) << pool.status();
  }
  void TearDown() override {
    store_.reset();
    // Unmount whatever a failed test left, then destroy the pool.
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/store/mnt", ec)) {
      ::umount2(e.path().c_str(), MNT_DETACH);
    }
    if (state_) {
      auto pool = thinpool::Pool::Open(*state_, *dm_, pool_name_);
      if (pool.ok()) {
        absl::Status s = (*pool)->Destroy(/*force=*/true);
        EXPECT_TRUE(s.ok()) << s;
      }
    }
    std::filesystem::remove_all(dir_, ec);
  }
  StoreOptions Options() const {
    StoreOptions o;
    o.root = dir_ + "/store";
    o.thin_state_dir = dir_ + "/thin";
    o.pool = pool_name_;
    return o;
  }
  VolumeStore* Store() {
    if (!store_) {
      auto s = VolumeStore::Open(Options());
      EXPECT_TRUE(s.ok()) << s.status();
      if (s.ok()) store_ = std::move(*s);
    }
    return store_.get();
  }

  // Runs `fn` on a fresh store in a child with DMTHIN_FAILPOINT=`failpoint`
  // and expects it to end there (exit 77).
  void CrashAt(const char* failpoint, const std::function<bool(VolumeStore&)>& fn) {
    store_.reset();
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::setenv("DMTHIN_FAILPOINT", failpoint, 1);
      auto store = VolumeStore::Open(Options());
      if (!store.ok()) ::_exit(2);
      ::_exit(fn(**store) ? 0 : 3);
    }
    int ws = 0;
    ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
    ASSERT_TRUE(WIFEXITED(ws));
    ASSERT_EQ(WEXITSTATUS(ws), 77) << failpoint;
  }

  std::string dir_;
  std::string pool_name_;
  std::unique_ptr<dm::Control> dm_;
  std::unique_ptr<thinpool::StateDir> state_;
  std::unique_ptr<VolumeStore> store_;
};

TEST_F(VolumeThinTest, SizedExt4VolumeWithSnapshot) {
  VolumeStore* store = Store();
  ASSERT_TRUE(store);
  CreateOptions co;
  co.size_bytes = 64 * kMiB;
  EXPECT_FALSE(store->Create("nosize", {}).ok()) << "a thin volume needs a size";
  auto v = store->Create("v1", co);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->backend, Backend::kThin) << "thin is the default with a pool";
  EXPECT_EQ(v->fs, "ext4");
  EXPECT_FALSE(v->mounted);

  auto path = store->Mount("v1", "podman");
  ASSERT_TRUE(path.ok()) << path.status();
  ASSERT_TRUE(store->Mount("v1", "podman").ok());
  EXPECT_TRUE(store->Get("v1")->mounted);
  std::ofstream(*path + "/keep") << "kept";

  auto [written, err] = FillFile(*path + "/big", 128 * kMiB);
  EXPECT_EQ(err, ENOSPC) << "after " << written;
  EXPECT_LE(written, 64 * kMiB);
  auto usage = store->GetUsage("v1");
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_GE(usage->used_bytes, 32 * kMiB);
  EXPECT_LE(usage->used_bytes, 64 * kMiB);
  ASSERT_EQ(::unlink((*path + "/big").c_str()), 0);
  ::sync();
  std::ofstream(*path + "/small") << "small";
  EXPECT_EQ(ReadAll(*path + "/small"), "small");

  // Snapshot of the mounted volume (suspended, i.e. frozen, around it).
  auto snap = store->Snapshot("v1", "s1");
  ASSERT_TRUE(snap.ok()) << snap.status();
  auto sp = store->Mount("s1", "c");
  ASSERT_TRUE(sp.ok()) << sp.status();
  EXPECT_EQ(ReadAll(*sp + "/keep"), "kept");
  ASSERT_TRUE(store->Unmount("s1", "c").ok());
  EXPECT_FALSE(store->Get("s1")->mounted);

  EXPECT_TRUE(base::HasErrno(store->Remove("v1"), EBUSY));
  ASSERT_TRUE(store->Unmount("v1", "podman").ok());
  EXPECT_TRUE(store->Get("v1")->mounted) << "one reference left";
  ASSERT_TRUE(store->Unmount("v1", "podman").ok());
  EXPECT_FALSE(store->Get("v1")->mounted);
  ASSERT_TRUE(store->Remove("v1").ok());
  ASSERT_TRUE(store->Remove("s1").ok());
  auto check = store->Check(false);
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_TRUE(check->clean()) << check->findings.front();
}

TEST_F(VolumeThinTest, CrashAfterThinIsMadeLeavesNoOrphan) {
  CreateOptions co;
  co.size_bytes = 32 * kMiB;
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("DMTHIN_FAILPOINT", "volume_create_after_act", 1);
    auto store = VolumeStore::Open(Options());
    if (!store.ok()) ::_exit(2);
    ::_exit((*store)->Create("v", co).ok() ? 0 : 3);
  }
  int ws = 0;
  ASSERT_EQ(::waitpid(pid, &ws, 0), pid);
  ASSERT_TRUE(WIFEXITED(ws));
  ASSERT_EQ(WEXITSTATUS(ws), 77);
  VolumeStore* store = Store();
  ASSERT_TRUE(store);
  auto repaired = store->Check(true);
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_TRUE(repaired->clean());
  auto pool = thinpool::Pool::Open(*state_, *dm_, pool_name_);
  ASSERT_TRUE(pool.ok());
  auto thins = (*pool)->ListThins();
  ASSERT_TRUE(thins.ok());
  EXPECT_TRUE(thins->empty()) << "orphaned thin " << thins->front().name;
  EXPECT_TRUE(store->Create("v", co).ok());
}

TEST_F(VolumeThinTest, GrowMountedAndNot) {
  VolumeStore* store = Store();
  ASSERT_TRUE(store);
  CreateOptions co;
  co.size_bytes = 32 * kMiB;
  ASSERT_TRUE(store->Create("g", co).ok());
  auto path = store->Mount("g", "c");
  ASSERT_TRUE(path.ok()) << path.status();
  std::ofstream(*path + "/keep") << "kept";
  EXPECT_LT(FsBytes(*path), 33 * kMiB);
  // Mounted: the filesystem grows online.
  absl::Status grown = store->Grow("g", 96 * kMiB);
  ASSERT_TRUE(grown.ok()) << grown;
  EXPECT_GT(FsBytes(*path), 80 * kMiB);
  EXPECT_EQ(store->Get("g")->size_bytes, 96 * kMiB);
  auto [written, err] = FillFile(*path + "/big", 64 * kMiB);
  EXPECT_EQ(err, 0) << "after " << written;
  EXPECT_FALSE(store->Grow("g", 64 * kMiB).ok()) << "never shrinks";
  ASSERT_TRUE(store->Unmount("g", "c").ok());
  // Not mounted: mounted for the grow, unmounted again.
  grown = store->Grow("g", 128 * kMiB);
  ASSERT_TRUE(grown.ok()) << grown;
  EXPECT_FALSE(store->Get("g")->mounted);
  path = store->Mount("g", "c");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_GT(FsBytes(*path), 112 * kMiB);
  EXPECT_EQ(ReadAll(*path + "/keep"), "kept");
  ASSERT_TRUE(store->Unmount("g", "c").ok());
  auto check = store->Check(false);
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_TRUE(check->clean()) << check->findings.front();
}

TEST_F(VolumeThinTest, XfsVolume) {
  VolumeStore* store = Store();
  ASSERT_TRUE(store);
  CreateOptions co;
  co.size_bytes = 320 * kMiB;  // mkfs.xfs refuses less than 300 MiB
  co.fs = "xfs";
  auto v = store->Create("x", co);
  if (!v.ok() && v.status().message().find("mkfs.xfs") != absl::string_view::npos) {
    GTEST_SKIP() << v.status();
  }
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->fs, "xfs");
  auto path = store->Mount("x", "c");
  ASSERT_TRUE(path.ok()) << path.status();
  std::ofstream(*path + "/keep") << "kept";
  uint64_t before = FsBytes(*path);
  ASSERT_TRUE(store->Grow("x", 400 * kMiB).ok());
  EXPECT_GE(FsBytes(*path), before + 64 * kMiB) << "before " << before;
  // A snapshot of a mounted xfs mounts beside it (nouuid).
  ASSERT_TRUE(store->Snapshot("x", "xs").ok());
  auto sp = store->Mount("xs", "c");
  ASSERT_TRUE(sp.ok()) << sp.status();
  EXPECT_EQ(ReadAll(*sp + "/keep"), "kept");
  ASSERT_TRUE(store->Unmount("xs", "c").ok());
  ASSERT_TRUE(store->Unmount("x", "c").ok());
  ASSERT_TRUE(store->Remove("xs").ok());
  ASSERT_TRUE(store->Remove("x").ok());
}

// A crash at each step of a grow: Check(repair) finishes it (device and
// filesystem at the new size, the size recorded), nothing left over.
TEST_F(VolumeThinTest, CrashDuringGrowIsFinishedByRepair) {
  CreateOptions co;
  co.size_bytes = 32 * kMiB;
  ASSERT_TRUE(Store()->Create("g", co).ok());
  uint64_t size = 32 * kMiB;
  for (const char* fp : {"volume_grow_after_intent", "after_thin_size", "volume_grow_after_act"}) {
    SCOPED_TRACE(fp);
    size += 16 * kMiB;
    CrashAt(fp, [size](VolumeStore& s) { return s.Grow("g", size).ok(); });
    VolumeStore* store = Store();
    ASSERT_TRUE(store);
    EXPECT_FALSE(store->Check(false)->clean()) << "the interrupted grow is a finding";
    EXPECT_FALSE(store->Grow("g", size + kMiB).ok()) << "refused until repaired";
    auto repaired = store->Check(true);
    ASSERT_TRUE(repaired.ok()) << repaired.status();
    EXPECT_TRUE(repaired->clean()) << repaired->findings.front();
    EXPECT_EQ(store->Get("g")->size_bytes, size);
    auto path = store->Mount("g", "c");
    ASSERT_TRUE(path.ok()) << path.status();
    EXPECT_GT(FsBytes(*path), size - 8 * kMiB);
    ASSERT_TRUE(store->Unmount("g", "c").ok());
  }
}

// A crash after a mount or an unmount acts but before the reference is
// counted: Check(repair) leaves no stale mount and no reference without one.
TEST_F(VolumeThinTest, CrashAroundMountAndUnmountIsRepaired) {
  CreateOptions co;
  co.size_bytes = 32 * kMiB;
  ASSERT_TRUE(Store()->Create("m", co).ok());
  std::string mnt = dir_ + "/store/mnt/m";

  CrashAt("volume_mount_after_act", [](VolumeStore& s) { return s.Mount("m", "c").ok(); });
  EXPECT_TRUE(IsMounted(mnt)) << "mounted, not counted";
  auto repaired = Store()->Check(true);
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_FALSE(IsMounted(mnt)) << "stale mount left";
  EXPECT_TRUE(Store()->Check(false)->clean());

  ASSERT_TRUE(Store()->Mount("m", "c").ok());
  CrashAt("volume_unmount_after_act", [](VolumeStore& s) { return s.Unmount("m", "c").ok(); });
  EXPECT_FALSE(IsMounted(mnt)) << "unmounted, still counted";
  EXPECT_FALSE(Store()->Check(false)->clean());
  repaired = Store()->Check(true);
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  auto check = Store()->Check(false);
  EXPECT_TRUE(check->clean()) << check->findings.front();
  EXPECT_EQ(Store()->Get("m")->mount_refs, 0u);
  ASSERT_TRUE(Store()->Remove("m").ok());
}


// `dmthin volume` on the thin backend (the host tier has only directories):
// every verb with --json against the fixture's pool (each call is a process
// start in the guest: kept to one call per verb).
TEST_F(VolumeThinTest, CliEveryVerbWithJson) {
  auto run = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {testsupport::BuiltTool("dmthin"), "--json", "--state-dir", dir_ + "/thin"};
    argv.insert(argv.end(), args.begin(), args.end());
    return testsupport::Run(argv);
  };
  auto json = [&](std::vector<std::string> args) {
    testsupport::RunResult r = run(args);
    EXPECT_TRUE(r.ok()) << r.Describe();
    return r.ok() ? nlohmann::json::parse(r.out) : nlohmann::json();
  };
  const std::string root = dir_ + "/cli";
  auto v = json({"volume", "create", "v1", "--volume-root", root, "--pool", pool_name_, "--size", "32M"});
  EXPECT_EQ(v["backend"], "thin");
  EXPECT_EQ(v["fs"], "ext4");
  EXPECT_EQ(v["size_bytes"], 32 * kMiB);
  auto m = json({"volume", "mount", "v1", "--volume-root", root, "--caller", "c1"});
  std::string path = m["mountpoint"];
  ASSERT_FALSE(path.empty());
  EXPECT_TRUE(IsMounted(path));
  std::ofstream(path + "/f") << "hello";
  testsupport::RunResult busy = run({"volume", "rm", "v1", "--volume-root", root});
  EXPECT_EQ(busy.exit_code, 1) << busy.Describe();
  EXPECT_NE(busy.err.find("in use"), std::string::npos) << busy.err;
  auto snap = json({"volume", "snapshot", "v1", "s1", "--volume-root", root});
  EXPECT_EQ(snap["origin"], "v1");
  EXPECT_EQ(snap["backend"], "thin");
  auto clone = json({"volume", "clone", "v1", "c1", "--volume-root", root});
  EXPECT_EQ(clone["backend"], "thin");
  EXPECT_EQ(json({"volume", "ls", "--volume-root", root})["volumes"].size(), 3u);
  auto grown = json({"volume", "resize", "v1", "--volume-root", root, "--size", "64M"});
  EXPECT_EQ(grown["size_bytes"], 64 * kMiB);
  EXPECT_GT(FsBytes(path), 48 * kMiB) << "the ext4 grew online";
  auto inspect = json({"volume", "inspect", "v1", "--volume-root", root});
  EXPECT_EQ(inspect["mount_refs"], 1);
  EXPECT_TRUE(inspect["used_bytes"].is_number());
  auto u = json({"volume", "unmount", "v1", "--volume-root", root, "--caller", "c1"});
  EXPECT_EQ(u["mount_refs"], 0);
  EXPECT_FALSE(IsMounted(path));
  EXPECT_EQ(json({"volume", "rm", "v1", "s1", "c1", "--volume-root", root})["removed"].size(), 3u);
  EXPECT_EQ(json({"volume", "check", "--volume-root", root})["clean"], true);
  auto thins = json({"thin", "list", pool_name_});
  EXPECT_EQ(thins["thins"].size(), 0u) << thins.dump() << ": no thin left behind";
}

}  // namespace
}  // namespace volume
