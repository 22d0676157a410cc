// libvolume's directory backend on the host kernel: btrfs subvolumes with
// qgroup limits on a loop-mounted btrfs made by the test, plain directories
// (no size) elsewhere, the registry's discipline, copy-up, and crashes at
// every failpoint of create and remove followed by check --repair.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "base/sqlite.h"
#include "base/status.h"
#include "tests/support/fill_file.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/scratch_dir.h"
#include "volume/bind_path.h"
#include "volume/store.h"

namespace volume {
namespace {

using graph::testing::ScratchBtrfs;
using testsupport::FillFile;
using testsupport::ScratchDir;

constexpr uint64_t kMiB = 1 << 20;

bool WriteSmall(const std::string& path) {
  std::ofstream out(path);
  out << "small";
  out.close();
  return out.good();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs `fn` on a fresh store in a child with DMTHIN_FAILPOINT=`failpoint`
// and expects the child to end there (exit 77).
void CrashAt(const StoreOptions& options, const char* failpoint,
             const std::function<bool(VolumeStore&)>& fn) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("DMTHIN_FAILPOINT", failpoint, 1);
    auto store = VolumeStore::Open(options);
    if (!store.ok()) ::_exit(2);
    ::_exit(fn(**store) ? 0 : 3);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  ASSERT_EQ(WEXITSTATUS(wstatus), 77) << "the failpoint " << failpoint << " was not reached";
}

class VolumeBtrfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mount)";
    auto fs = ScratchBtrfs::Create(512);
    if (!fs.ok()) GTEST_SKIP() << "no scratch btrfs: " << fs.status();
    fs_ = std::move(*fs);
  }
  StoreOptions Options() const {
    StoreOptions o;
    o.root = fs_->path() + "/store";
    return o;
  }
  std::unique_ptr<VolumeStore> OpenStore() {
    auto s = VolumeStore::Open(Options());
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  std::unique_ptr<ScratchBtrfs> fs_;
};

TEST(VolumeName, ValidatedAtTheEdge) {
  EXPECT_TRUE(ValidateVolumeName("v1").ok());
  EXPECT_TRUE(ValidateVolumeName("my_vol.2-a").ok());
  for (const char* bad : {"", ".hidden", "-x", "a/b", "..", "a b", "x\n"}) {
    EXPECT_FALSE(ValidateVolumeName(bad).ok()) << bad;
  }
  EXPECT_FALSE(ValidateVolumeName(std::string(65, 'a')).ok());
}

TEST_F(VolumeBtrfsTest, LifecycleWithCountedMounts) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  CreateOptions co;
  co.size_bytes = 64 * kMiB;
  co.labels = {{"app", "db"}};
  auto v = store->Create("v1", co);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->backend, Backend::kDirectory);
  EXPECT_EQ(v->fs, "btrfs");
  EXPECT_EQ(v->size_bytes, 64 * kMiB);
  EXPECT_EQ(v->labels.at("app"), "db");
  EXPECT_TRUE(store->Create("v1", co).status().code() == absl::StatusCode::kAlreadyExists);

  // podman: one constant caller id for every container.
  auto p1 = store->Mount("v1", "podman");
  ASSERT_TRUE(p1.ok()) << p1.status();
  auto p2 = store->Mount("v1", "podman");
  ASSERT_TRUE(p2.ok()) << p2.status();
  EXPECT_EQ(*p1, *p2);
  ASSERT_TRUE(store->Mount("v1", "ctr-a").ok());
  EXPECT_EQ(store->Get("v1")->mount_refs, 3u);
  ASSERT_TRUE(store->Unmount("v1", "podman").ok());
  absl::Status busy = store->Remove("v1");
  EXPECT_TRUE(base::HasErrno(busy, EBUSY)) << busy;
  ASSERT_TRUE(store->Unmount("v1", "podman").ok());
  EXPECT_FALSE(store->Unmount("v1", "podman").ok()) << "no reference left for podman";
  ASSERT_TRUE(store->Unmount("v1", "ctr-a").ok());
  EXPECT_EQ(store->Get("v1")->mount_refs, 0u);

  auto list = store->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  ASSERT_TRUE(store->Remove("v1").ok());
  EXPECT_TRUE(absl::IsNotFound(store->Get("v1").status()));
  struct stat st;
  EXPECT_NE(::stat(p1->c_str(), &st), 0) << "data dir gone";
  auto check = store->Check(false);
  ASSERT_TRUE(check.ok());
  EXPECT_TRUE(check->clean());
}

TEST_F(VolumeBtrfsTest, ForceRemovesAMountedVolume) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Create("v", {}).ok());
  ASSERT_TRUE(store->Mount("v", "c1").ok());
  EXPECT_FALSE(store->Remove("v").ok());
  EXPECT_TRUE(store->Remove("v", /*force=*/true).ok());
  EXPECT_TRUE(absl::IsNotFound(store->Get("v").status()));
}

TEST_F(VolumeBtrfsTest, SizeIsAPromise) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  CreateOptions co;
  co.size_bytes = 64 * kMiB;
  ASSERT_TRUE(store->Create("q", co).ok());
  auto path = store->Mount("q", "t");
  ASSERT_TRUE(path.ok()) << path.status();
  auto [written, err] = FillFile(*path + "/big", 200 * kMiB);
  EXPECT_TRUE(err == EDQUOT || err == ENOSPC) << "errno " << err << " after " << written;
  EXPECT_LE(written, 64 * kMiB);
  EXPECT_GE(written, 32 * kMiB);
  auto usage = store->GetUsage("q");
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_GE(usage->used_bytes, 32 * kMiB);
  EXPECT_LE(usage->used_bytes, 65 * kMiB);
  EXPECT_EQ(usage->size_bytes, 64 * kMiB);

  // Still usable: delete, and a small write succeeds.
  ASSERT_EQ(::unlink((*path + "/big").c_str()), 0);
  ::sync();
  EXPECT_TRUE(WriteSmall(*path + "/small"));
  EXPECT_EQ(ReadAll(*path + "/small"), "small");

  // Grow: the limit moves.
  ASSERT_TRUE(store->Grow("q", 128 * kMiB).ok());
  EXPECT_FALSE(store->Grow("q", 64 * kMiB).ok()) << "never shrinks";
  auto [w2, e2] = FillFile(*path + "/big2", 96 * kMiB);
  EXPECT_EQ(e2, 0) << "96 MiB into 128 MiB: " << w2;
  EXPECT_EQ(store->Get("q")->size_bytes, 128 * kMiB);
  ASSERT_TRUE(store->Unmount("q", "t").ok());
}

TEST_F(VolumeBtrfsTest, SnapshotIsAnIndependentCopy) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  CreateOptions co;
  co.size_bytes = 32 * kMiB;
  ASSERT_TRUE(store->Create("src", co).ok());
  auto src = store->Mount("src", "t");
  ASSERT_TRUE(src.ok());
  ASSERT_TRUE(WriteSmall(*src + "/f"));
  auto snap = store->Snapshot("src", "snap", {{"kind", "snapshot"}});
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->origin, "src");
  EXPECT_EQ(snap->size_bytes, 32 * kMiB);
  auto sp = store->Mount("snap", "t");
  ASSERT_TRUE(sp.ok());
  EXPECT_EQ(ReadAll(*sp + "/f"), "small");
  ASSERT_EQ(::unlink((*src + "/f").c_str()), 0);
  EXPECT_EQ(ReadAll(*sp + "/f"), "small");
  // The snapshot keeps the source's size limit.
  auto [written, err] = FillFile(*sp + "/big", 100 * kMiB);
  EXPECT_TRUE(err == EDQUOT || err == ENOSPC) << written;
  ASSERT_TRUE(store->Unmount("snap", "t").ok());
  ASSERT_TRUE(store->Unmount("src", "t").ok());
  EXPECT_TRUE(store->Remove("src").ok());
  EXPECT_TRUE(store->Remove("snap").ok());
}

TEST_F(VolumeBtrfsTest, CopyUpKeepsOwnersModesXattrsLinksAndHoles) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  ScratchDir src("volume-src", fs_->path());
  ASSERT_EQ(::mkdir(src.Sub("etc").c_str(), 0750), 0);
  ASSERT_EQ(::chown(src.Sub("etc").c_str(), 123, 456), 0);
  ASSERT_TRUE(WriteSmall(src.Sub("etc/conf")));
  ASSERT_EQ(::chmod(src.Sub("etc/conf").c_str(), 0604), 0);
  ASSERT_EQ(::setxattr(src.Sub("etc/conf").c_str(), "user.k", "v", 1, 0), 0);
  ASSERT_EQ(::link(src.Sub("etc/conf").c_str(), src.Sub("hard").c_str()), 0);
  {
    int fd = ::open(src.Sub("sparse").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "end", 3, 64 * kMiB), 3);
    ::close(fd);
  }
  ASSERT_EQ(::chmod(src.path().c_str(), 0711), 0);

  ASSERT_TRUE(store->Create("c", {}).ok());
  ASSERT_TRUE(store->Populate("c", src.path()).ok());
  auto path = store->Path("c");
  ASSERT_TRUE(path.ok());
  struct stat st;
  ASSERT_EQ(::stat((*path + "/etc").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 123u);
  EXPECT_EQ(st.st_gid, 456u);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  ASSERT_EQ(::stat((*path + "/etc/conf").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0604u);
  EXPECT_EQ(st.st_nlink, 2u);
  struct stat hard;
  ASSERT_EQ(::stat((*path + "/hard").c_str(), &hard), 0);
  EXPECT_EQ(hard.st_ino, st.st_ino);
  char val[8] = {};
  EXPECT_EQ(::getxattr((*path + "/etc/conf").c_str(), "user.k", val, sizeof(val)), 1);
  ASSERT_EQ(::stat((*path + "/sparse").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(64 * kMiB + 3));
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, kMiB) << "holes kept";
  ASSERT_EQ(::stat(path->c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0711u) << "the volume root takes the source's mode";
  EXPECT_TRUE(store->Get("c")->populated);

  // Once only: a second populate changes nothing.
  ASSERT_EQ(::unlink((*path + "/hard").c_str()), 0);
  ASSERT_TRUE(store->Populate("c", src.path()).ok());
  EXPECT_NE(::stat((*path + "/hard").c_str(), &st), 0);

  // nocopy: marked populated, nothing copied.
  ASSERT_TRUE(store->Create("n", {}).ok());
  ASSERT_TRUE(store->Populate("n", src.path(), /*skip=*/true).ok());
  EXPECT_TRUE(store->Get("n")->populated);
  EXPECT_NE(::stat((*store->Path("n") + "/etc").c_str(), &st), 0);
}

TEST_F(VolumeBtrfsTest, MissingRegistryNextToVolumesIsAnError) {
  {
    auto store = OpenStore();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->Create("keep", {}).ok());
  }
  std::string db = Options().root + "/volumes.db";
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((db + suffix).c_str());
  auto missing = VolumeStore::Open(Options());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no registry"), absl::string_view::npos)
      << missing.status();
  struct stat st;
  EXPECT_EQ(::stat((Options().root + "/data/keep").c_str(), &st), 0) << "data untouched";
}

TEST_F(VolumeBtrfsTest, ForeignRegistryIsRefused) {
  StoreOptions o = Options();
  ASSERT_EQ(::mkdir(o.root.c_str(), 0700), 0);
  {
    // Another program's SQLite database under our registry's name.
    auto other = base::sqlite::Db::Open(o.root + "/volumes.db");
    ASSERT_TRUE(other.ok()) << other.status();
    ASSERT_TRUE((*other)->Exec("CREATE TABLE layers(id TEXT)").ok());
  }
  auto s = VolumeStore::Open(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("not a dmthin volume registry"), absl::string_view::npos)
      << s.status();
  // Not a database at all.
  std::string db = o.root + "/volumes.db";
  for (const char* suffix : {"", "-wal", "-shm"}) ::unlink((db + suffix).c_str());
  std::ofstream(db) << "not a database, just bytes that are not SQLite at all, long enough";
  EXPECT_FALSE(VolumeStore::Open(o).ok());
}

TEST(VolumePlainDir, SizeRefusedWhereNothingEnforcesIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  ScratchDir dir("volume-plain");
  StoreOptions o;
  o.root = dir.Sub("store");
  auto store = VolumeStore::Open(o);
  ASSERT_TRUE(store.ok()) << store.status();
  CreateOptions co;
  co.size_bytes = 64 * kMiB;
  auto refused = (*store)->Create("v", co);
  if (refused.ok()) GTEST_SKIP() << "the scratch dir is on btrfs";
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("cannot enforce a volume size"), absl::string_view::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("project quota"), absl::string_view::npos)
      << "says what would enforce it: " << refused.status();
  EXPECT_TRUE(absl::IsNotFound((*store)->Get("v").status())) << "nothing recorded";
  auto v = (*store)->Create("v", {});
  ASSERT_TRUE(v.ok()) << v.status();
  auto path = (*store)->Mount("v", "c");
  ASSERT_TRUE(path.ok());
  EXPECT_TRUE(WriteSmall(*path + "/f"));
  EXPECT_GT((*store)->GetUsage("v")->used_bytes, 0u);
  EXPECT_FALSE((*store)->Grow("v", kMiB).ok());
  ASSERT_TRUE((*store)->Unmount("v", "c").ok());
  EXPECT_TRUE((*store)->Remove("v").ok());
}

// A crash at each failpoint of create and remove: the child dies there
// (_exit 77); check reports the interrupted operation, check --repair
// clears it, and nothing is left behind.
struct CrashCase {
  const char* failpoint;
  bool remove;  // crash while removing (else while creating)
};

class VolumeCrashTest : public VolumeBtrfsTest,
                        public ::testing::WithParamInterface<CrashCase> {};

TEST_P(VolumeCrashTest, CheckRepairIsClean) {
  const CrashCase& c = GetParam();
  CreateOptions co;
  co.size_bytes = 16 * kMiB;
  if (c.remove) {
    auto store = OpenStore();
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->Create("v", co).ok());
  }
  CrashAt(Options(), c.failpoint, [&](VolumeStore& s) {
    return c.remove ? s.Remove("v").ok() : s.Create("v", co).ok();
  });
  if (HasFatalFailure()) return;

  auto store = OpenStore();
  ASSERT_TRUE(store);
  auto before = store->Check(false);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_FALSE(before->clean()) << "the interrupted operation shows";
  auto repaired = store->Check(true);
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_TRUE(repaired->clean()) << repaired->findings.front();
  EXPECT_FALSE(repaired->actions.empty());
  auto after = store->Check(false);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->clean());
  EXPECT_TRUE(absl::IsNotFound(store->Get("v").status()));
  struct stat st;
  EXPECT_NE(::stat((Options().root + "/data/v").c_str(), &st), 0) << "no orphaned data";
  // The name is free again.
  EXPECT_TRUE(store->Create("v", co).ok());
}

// A grow cut short at either step is finished by Check(repair): the new
// limit applied and recorded.
TEST_F(VolumeBtrfsTest, CrashDuringGrowIsFinishedByRepair) {
  CreateOptions co;
  co.size_bytes = 16 * kMiB;
  ASSERT_TRUE(OpenStore()->Create("v", co).ok());
  uint64_t size = 16 * kMiB;
  for (const char* fp : {"volume_grow_after_intent", "volume_grow_after_act"}) {
    SCOPED_TRACE(fp);
    size += 16 * kMiB;
    CrashAt(Options(), fp, [size](VolumeStore& s) { return s.Grow("v", size).ok(); });
    if (HasFatalFailure()) return;
    auto store = OpenStore();
    ASSERT_TRUE(store);
    EXPECT_EQ(store->Get("v")->size_bytes, size - 16 * kMiB) << "recorded only when done";
    EXPECT_FALSE(store->Check(false)->clean());
    EXPECT_FALSE(store->Grow("v", size).ok()) << "refused while one is pending";
    auto repaired = store->Check(true);
    ASSERT_TRUE(repaired.ok()) << repaired.status();
    EXPECT_TRUE(repaired->clean()) << repaired->findings.front();
    EXPECT_EQ(store->Get("v")->size_bytes, size);
    EXPECT_EQ(store->GetUsage("v")->size_bytes, size);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Failpoints, VolumeCrashTest,
    ::testing::Values(CrashCase{"volume_create_after_intent", false},
                      CrashCase{"volume_create_after_act", false},
                      CrashCase{"volume_remove_after_intent", true},
                      CrashCase{"volume_remove_after_act", true}),
    [](const ::testing::TestParamInfo<CrashCase>& info) {
      return std::string(info.param.failpoint);
    });

}  // namespace
}  // namespace volume

namespace volume {
namespace {

TEST(BindPath, ExistsAndNoSymlinkEscape) {
  ScratchDir dir("volume-bind");
  ASSERT_EQ(::mkdir(dir.Sub("data").c_str(), 0755), 0);
  ASSERT_EQ(::symlink("/etc", dir.Sub("link").c_str()), 0);
  ASSERT_EQ(::symlink("data", dir.Sub("rel").c_str()), 0);

  auto ok = ValidateBindPath(dir.Sub("data") + "/");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, dir.Sub("data"));
  EXPECT_TRUE(ValidateBindPath(dir.Sub("data"), dir.path()).ok());

  EXPECT_TRUE(base::HasErrno(ValidateBindPath(dir.Sub("missing")).status(), ENOENT));
  EXPECT_TRUE(base::HasErrno(ValidateBindPath(dir.Sub("link")).status(), ELOOP));
  EXPECT_TRUE(base::HasErrno(ValidateBindPath(dir.Sub("rel")).status(), ELOOP));
  EXPECT_TRUE(base::HasErrno(ValidateBindPath(dir.Sub("link") + "/passwd").status(), ELOOP));
  EXPECT_EQ(ValidateBindPath("relative/path").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBindPath(dir.Sub("data/../link")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBindPath("/etc", dir.path()).status().code(),
            absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace volume
