// dmthin-snapshotter on zfs against real OpenZFS (run inside tests/vm/run
// --modules zfs): containerd's own snapshotter conformance suite
// (tests/support/snapshotter_suite.h), every sub-test's store on a dataset
// of its own (the Go program makes it under DMTHIN_ZFS_PARENT: a zfs driver
// owns every dataset under its parent, so stores never share one) in one
// pool made here. The mounts are the layers' datasets (type zfs, `ro` for
// views), mounted by containerd's mount package.
//
// Cost: every case but 128LayersMount (20 of containerd's cases, run in
// parallel by the suite, and our two) took 216 s of wall time in the guest
// at a load average of ~13 (2-9 s to start a server, a few seconds per
// snapshot/clone). make check runs a subset that covers what zfs does
// differently (a clone per child, ro views, removal of an intermediate
// layer, deletions seen through a clone, a kill -9 restart);
// DMTHIN_SUITE_ALL=1 runs the whole suite, 128LayersMount included.
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/snapshotter_suite.h"
#include "tests/support/zfs_pool.h"

namespace {

constexpr char kMakeCheckCases[] =
    "^(TestSnapshotterSuite|TestRestartKeepsState)$/"
    "^(Basic|ViewReadonly|RemoveIntermediateSnapshot|DeletedFilesInChildSnapshot|StatInWalk)$";

TEST(ContainerdSnapshotterSuite, Zfs) {
  std::string why = testsupport::WhyNoZfs();
  if (!why.empty()) GTEST_SKIP() << why;
  // A short tag: the suite's socket paths live under it (at most 107 bytes).
  testsupport::ScratchDir tmp("szf");
  testsupport::ScratchPool pool(4ull << 30);
  ASSERT_TRUE(pool.ok());
  setenv("DMTHIN_ZFS_PARENT", pool.name().c_str(), 1);
  const char* all = getenv("DMTHIN_SUITE_ALL");
  testsupport::RunSnapshotterSuite("zfs", tmp.path(), {},
                                   all != nullptr && std::string(all) == "1" ? "" : kMakeCheckCases);
  unsetenv("DMTHIN_ZFS_PARENT");
}

}  // namespace
