// A real dockerd (Debian's docker.io) on dmthin-docker-plugin, on overlay, vfs
// and btrfs (loop-mounted): the scenario of tests/support/docker_scenario —
// docker load of an image the test builds (umoci, busybox-static
// inside), a run that writes, deletes and changes, exact docker diff, the
// stopped container's layer mounted read-only with graphctl from what docker
// inspect says, commit, export compared entry by entry with the same
// container under dockerd's own vfs driver, a restart of plugin and dockerd
// keeping images and the stopped container, and rm/rmi leaving the layer
// store empty.
//
// Each test starts its own plugin under a unique name (socket
// /run/docker/plugins/NAME.sock, where dockerd looks; removed by the plugin at
// exit) and its own dockerd with data root, exec root, pid file and API
// socket in a scratch directory.
#include <unistd.h>

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/docker_scenario.h"
#include "tests/support/dockerd.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/scratch_dir.h"

namespace {

using testsupport::ScratchDir;

class DockerdTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) {
      skip_ = "needs root (dockerd)";
      return;
    }
    skip_ = testsupport::MissingDockerTools();
    if (!skip_.empty()) return;
    suite_dir_ = new ScratchDir("dockerd");
    auto tar = testsupport::BuildDockerTestImage(suite_dir_->Sub("image"));
    if (!tar.ok()) {
      setup_error_ = tar.status().ToString();
      return;
    }
    image_tar_ = *tar;
    auto reference = testsupport::DockerVfsReference(suite_dir_->Sub("ref"), image_tar_);
    if (!reference.ok()) {
      setup_error_ = reference.status().ToString();
      return;
    }
    reference_ = *reference;
  }
  static void TearDownTestSuite() {
    delete suite_dir_;
    suite_dir_ = nullptr;
  }

  static inline ScratchDir* suite_dir_ = nullptr;
  static inline std::string skip_;
  static inline std::string setup_error_;
  static inline std::string image_tar_;
  static inline std::string reference_;
};

TEST_P(DockerdTest, LoadRunDiffInspectCommitExportRestartRemove) {
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  ASSERT_EQ(setup_error_, "");
  ScratchDir dir("dockerd-" + GetParam());
  std::string parent = dir.path();
  std::unique_ptr<graph::testing::ScratchBtrfs> btrfs;
  if (GetParam() == "btrfs") {
    auto fs = graph::testing::ScratchBtrfs::Create();
    if (!fs.ok()) GTEST_SKIP() << "no scratch btrfs: " << fs.status();
    btrfs = std::move(*fs);
    parent = btrfs->path();
  }
  testsupport::DockerScenario s;
  s.driver = GetParam();
  s.plugin_root = parent + "/plugin";
  s.dir = dir.path();
  s.image_tar = image_tar_;
  s.reference = reference_;
  testsupport::RunDockerScenario(s);
}

INSTANTIATE_TEST_SUITE_P(Drivers, DockerdTest, ::testing::Values("overlay", "vfs", "btrfs"),
                         [](const auto& info) { return info.param; });

}  // namespace
