// dmthin-snapshotter on devicemapper against the real dm-thin target (run
// inside tests/vm/run): containerd's own snapshotter conformance suite
// (tests/support/snapshotter_suite.h) with every sub-test's store in one
// pool made here, and the ctr end-to-end scenario
// (tests/support/snapshotter_e2e.h) with the driver's own loopback pool.
// The mounts are the thin devices with their ext4, mounted by containerd.
//
// Cost under TCG: every suite case starts a snapshotter and opens a new
// store (a base device and its ext4 in the shared pool), and each call is a
// few dm ioctls; on this project's loaded 2-core machine a process start
// alone took 2-9 s in the guest. In make check the suite runs every case
// but 128LayersMount (128 prepare/mount/commit rounds: 108 of them took 10
// minutes there; the same case runs on overlay, vfs and btrfs in the host
// tier). DMTHIN_SUITE_ALL=1 runs that case too. The ctr scenario (two
// image imports, three containers, a snapshotter restart) took 64-104 s
// in the guest at load 9-14 on the 2 cores (plus ~10 s for its scratch ext4
// and the image), most of it containerd's and runc's own work (each
// container start ~11 s, each import 10-14 s, the built-in overlayfs
// import as long as ours).
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "libdm/control.h"
#include "tests/support/ext4_scratch.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/snapshotter_e2e.h"
#include "tests/support/snapshotter_suite.h"
#include "tests/support/thinpool_cleanup.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

namespace {

bool HaveDeviceMapper() { return access("/dev/mapper/control", F_OK) == 0; }
bool EnvIs1(const char* name) {
  const char* v = getenv(name);
  return v != nullptr && std::string(v) == "1";
}

// Every case of containerd's suite but 128LayersMount, and our own two.
constexpr char kMakeCheckCases[] =
    "^(TestSnapshotterSuite|TestOpaqueKeys|TestRestartKeepsState)$/"
    "^(Basic|StatActive|StatComitted|TransitivityTest|PreareViewFailingtest|Update|Remove|Walk|"
    "LayerFileupdate|RemoveDirectoryInLowerLayer|Chown|DirectoryPermissionOnCommit|RemoveIntermediateSnapshot|"
    "DeletedFilesInChildSnapshot|MoveFileFromLowerLayer|Rename|ViewReadonly|StatInWalk|CloseTwice|"
    "RootPermission)$";

TEST(ContainerdSnapshotterSuite, Devicemapper) {
  if (!HaveDeviceMapper()) GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  // A short tag: the suite's socket paths live under it (at most 107 bytes).
  testsupport::ScratchDir tmp("sdm");
  // One pool for every sub-test (each makes its own base device and
  // layers in it); destroyed with everything in it at the end.
  std::string pool_root = tmp.Sub("pool");
  std::string state_dir = pool_root + "/thinpool";
  std::filesystem::create_directories(state_dir);
  std::string pool_name = testsupport::UniqueName("suite");
  std::replace(pool_name.begin(), pool_name.end(), '-', '_');  // pool names: letters, digits, '_', '.'

  {
    auto state = thinpool::StateDir::Open(state_dir);
    ASSERT_TRUE(state.ok()) << state.status();
    auto dm = dm::Control::Open();
    ASSERT_TRUE(dm.ok()) << dm.status();
    thinpool::PoolOptions po;
    po.data_bytes = 8ull << 30;
    auto pool = thinpool::Pool::Create(**state, **dm, pool_name, po);
    ASSERT_TRUE(pool.ok()) << pool.status();
  }
  testsupport::RunSnapshotterSuite(
      "devicemapper", tmp.path(),
      {"dm.thinpooldev=" + pool_name, "dm.statedir=" + state_dir, "dm.basesize=64M", "dm.min_free_space=0"},
      EnvIs1("DMTHIN_SUITE_ALL") ? "" : kMakeCheckCases);
  EXPECT_EQ(testsupport::DestroyDriverPools(pool_root), absl::OkStatus());
}

class ContainerdE2E : public testsupport::SnapshotterE2ETest {
 protected:
  static void SetUpTestSuite() {
    if (!HaveDeviceMapper() || geteuid() != 0) return;
    // The guest's /tmp (tmpfs) refuses the image's user.* xattr: the image,
    // containerd's root and the store go on an ext4 made here.
    tmpdir_ = new testsupport::UserXattrTmpdir();
    SnapshotterE2ETest::SetUpTestSuite();  // the test image
  }
  static void TearDownTestSuite() {
    SnapshotterE2ETest::TearDownTestSuite();
    delete tmpdir_;
    tmpdir_ = nullptr;
  }
  static inline testsupport::UserXattrTmpdir* tmpdir_ = nullptr;
  void TearDown() override {
    SnapshotterE2ETest::TearDown();
    if (!store().empty()) {
      EXPECT_EQ(testsupport::DestroyDriverPools(store() + "/devicemapper"), absl::OkStatus());
    }
  }
};

TEST_F(ContainerdE2E, Devicemapper) {
  if (!HaveDeviceMapper()) GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
  StartFor("devicemapper", {{"dm.loopdatasize", "4G"}, {"dm.basesize", "64M"}});
  if (IsSkipped() || HasFatalFailure()) return;
  ImportRunCompareRestartRemove();
}

}  // namespace
