// dockerd on dmthin-docker-plugin with the devicemapper driver, inside the
// tests/vm guest (real dm-thin; dockerd, containerd and runc are the host's,
// run in the guest's chroot): the scenario of tests/support/docker_scenario
// — load, a run that adds, deletes and changes files with exact docker diff,
// the stopped container's thin device mounted read-only with graphctl from
// what docker inspect says, commit and a run of it, a restart of plugin and
// dockerd keeping images and the stopped container, rm/rmi leaving the
// store empty. The pool's sparse files live on the guest's tmpfs.
//
// Kept lean for TCG (~5 s per docker run): one dockerd start plus the
// restart, two docker runs. The export-equals-vfs check runs on the host
// tier (docker_dockerd_test on overlay, vfs, btrfs): it tests the plugin's
// protocol code and libgraph's tar writer, which are the same for every
// driver, and a second dockerd in the guest costs as much again as the
// whole scenario. DMTHIN_DOCKER_VM_REFERENCE=1 runs it here too.
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/cleanup_stack.h"
#include "tests/support/docker_scenario.h"
#include "tests/support/dockerd.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/thinpool_cleanup.h"

namespace {

TEST(DockerDevmapperTest, LoadRunDiffInspectCommitRestartRemove) {
  if (::access("/dev/mapper/control", F_OK) != 0) {
    GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
  }
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  if (std::string missing = testsupport::MissingDockerTools(); !missing.empty()) GTEST_SKIP() << missing;
  testsupport::ScratchDir dir("docker-dm");
  testsupport::DockerScenario s;
  s.driver = "devicemapper";
  s.storage_opts = {"dm.loopdatasize=2G", "dm.basesize=64M"};
  s.plugin_root = dir.Sub("plugin");
  s.dir = dir.path();
  s.run_after_restart = false;
  s.own_containerd = true;
  testsupport::CleanupStack cleanup;
  cleanup.Push([&] { EXPECT_EQ(testsupport::DestroyDriverPools(s.plugin_root + "/devicemapper"), absl::OkStatus()); });

  auto tar = testsupport::BuildDockerTestImage(dir.Sub("image"));
  ASSERT_TRUE(tar.ok()) << tar.status();
  s.image_tar = *tar;
  if (const char* ref = std::getenv("DMTHIN_DOCKER_VM_REFERENCE"); ref != nullptr && std::string(ref) == "1") {
    auto reference = testsupport::DockerVfsReference(dir.Sub("ref"), s.image_tar);
    ASSERT_TRUE(reference.ok()) << reference.status();
    s.reference = *reference;
  }
  testsupport::RunDockerScenario(s);
}

}  // namespace
