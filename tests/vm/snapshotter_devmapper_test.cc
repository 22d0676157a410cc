// dmthin-snapshotter on devicemapper against the real dm-thin target (run
// inside tests/vm/run): containerd's own snapshotter conformance suite
// (tests/support/snapshotter_suite.h) with every sub-test's store in one
// pool made here, and the ctr end-to-end scenario
// (tests/support/snapshotter_e2e.h) with the driver's own loopback pool.
// The mounts are the thin devices with their ext4, mounted by containerd.
//
// Opt-in (DMTHIN_VM_SNAPSHOTTER=1) for now: under TCG on a loaded 2-core
// host each suite case costs 16-42 s (a store's base device and ext4 per
// case) and the whole suite did not finish within tests/vm/run's 900 s, far
// over the CI budget; Basic, StatActive and ViewReadonly were seen passing.
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
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/snapshotter_e2e.h"
#include "tests/support/snapshotter_suite.h"
#include "tests/support/thinpool_cleanup.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

namespace {

bool HaveDeviceMapper() { return access("/dev/mapper/control", F_OK) == 0; }
bool OptedIn() {
  const char* v = getenv("DMTHIN_VM_SNAPSHOTTER");
  return v != nullptr && std::string(v) == "1";
}
constexpr char kOptIn[] = "set DMTHIN_VM_SNAPSHOTTER=1 (slow under TCG: see the file's comment)";

TEST(ContainerdSnapshotterSuite, Devicemapper) {
  if (!HaveDeviceMapper()) GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  if (!OptedIn()) GTEST_SKIP() << kOptIn;
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
      {"dm.thinpooldev=" + pool_name, "dm.statedir=" + state_dir, "dm.basesize=256M", "dm.min_free_space=0"});
  EXPECT_EQ(testsupport::DestroyDriverPools(pool_root), absl::OkStatus());
}

class ContainerdE2E : public testsupport::SnapshotterE2ETest {
 protected:
  static void SetUpTestSuite() {
    if (OptedIn()) SnapshotterE2ETest::SetUpTestSuite();  // the test image
  }
  void TearDown() override {
    SnapshotterE2ETest::TearDown();
    if (!store().empty()) {
      EXPECT_EQ(testsupport::DestroyDriverPools(store() + "/devicemapper"), absl::OkStatus());
    }
  }
};

TEST_F(ContainerdE2E, Devicemapper) {
  if (!HaveDeviceMapper()) GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
  if (!OptedIn()) GTEST_SKIP() << kOptIn;
  StartFor("devicemapper", {{"dm.loopdatasize", "4G"}, {"dm.basesize", "512M"}});
  if (IsSkipped() || HasFatalFailure()) return;
  ImportRunCompareRestartRemove();
}

}  // namespace
