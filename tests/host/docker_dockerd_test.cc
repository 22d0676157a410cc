// A real dockerd (Debian's docker.io) on dmthin-docker-plugin: docker load of
// an image the test builds (umoci + skopeo, busybox-static inside), docker run
// that writes and deletes, docker diff, commit, export compared entry by entry
// with the same container under dockerd's own vfs driver, a restart of plugin
// and dockerd keeping images and stopped containers, and rm/rmi leaving the
// driver empty. On overlay, vfs and btrfs (loop-mounted).
//
// Each test starts its own plugin under a unique name (socket
// /run/docker/plugins/NAME.sock, where dockerd looks; removed by the plugin at
// exit) and its own dockerd with data root, exec root, pid file and API
// socket in a scratch directory.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "graph/driver.h"
#include "gtest/gtest.h"
#include "tests/support/daemon.h"
#include "tests/support/dockerd.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"

namespace {

using testsupport::Daemon;
using testsupport::Dockerd;
using testsupport::RunResult;
using testsupport::ScratchDir;

constexpr char kImage[] = "dmthin-test:1";
// Writes a file, deletes one from the image, changes one.
constexpr char kScript[] = "echo new > /etc/added && rm /etc/doomed && echo more >> /etc/kept";

#define ASSERT_RUN(result)                                \
  do {                                                     \
    RunResult r_ = (result);                               \
    ASSERT_TRUE(r_.ok()) << r_.Describe() << "\n" << r_.out; \
  } while (0)

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
    std::string error = BuildImage();
    if (error.empty()) error = Reference();
    if (!error.empty()) setup_error_ = error;
  }
  static void TearDownTestSuite() {
    delete suite_dir_;
    suite_dir_ = nullptr;
  }

  // A docker-archive of kImage: busybox-static, /etc/doomed, /etc/kept.
  static std::string BuildImage() {
    auto tar = testsupport::BuildBusyboxImage(
        suite_dir_->path(), kImage, {"sh", "cat", "echo", "rm", "test", "true", "ls"},
        {{"/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"}, {"/etc/doomed", "bye\n"}, {"/etc/kept", "keep\n"}});
    if (!tar.ok()) return tar.status().ToString();
    image_tar_ = *tar;
    return "";
  }

  // The export of the scenario's container under dockerd's own vfs driver,
  // unpacked and fingerprinted.
  static std::string Reference() {
    Dockerd dockerd(suite_dir_->Sub("ref"), "vfs");
    absl::Status started = dockerd.Start();
    if (!started.ok()) return "reference dockerd: " + started.ToString();
    std::string exported = suite_dir_->Sub("ref.tar");
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"load", "-i", image_tar_},
             {"run", "--name", "c1", "--network", "none", kImage, "sh", "-c", kScript},
             {"export", "-o", exported, "c1"},
             {"rm", "c1"},
             {"rmi", kImage}}) {
      RunResult r = dockerd.Docker(args);
      if (!r.ok()) return "reference: " + r.Describe();
    }
    dockerd.Stop();
    reference_ = Unpacked(exported, suite_dir_->Sub("ref-tree"));
    return reference_.empty() ? "reference export is empty" : "";
  }

  // Fingerprint of the tar `path` unpacked (GNU tar) into `dir`.
  static std::string Unpacked(const std::string& tar, const std::string& dir) {
    ::mkdir(dir.c_str(), 0755);
    RunResult r = testsupport::Run({"tar", "-xpf", tar, "-C", dir, "--numeric-owner"});
    if (!r.ok()) return "";
    return testsupport::TreeFingerprint(dir);
  }

  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_EQ(setup_error_, "");
    dir_ = std::make_unique<ScratchDir>("dockerd-" + GetParam());
    std::string parent = dir_->path();
    if (GetParam() == "btrfs") {
      auto fs = graph::testing::ScratchBtrfs::Create();
      if (!fs.ok()) GTEST_SKIP() << "no scratch btrfs: " << fs.status();
      btrfs_ = std::move(*fs);
      parent = btrfs_->path();
    }
    plugin_root_ = parent + "/plugin";
    name_ = testsupport::UniqueName("dmthin-t");
    socket_ = "/run/docker/plugins/" + name_ + ".sock";
    StartPlugin();
    dockerd_ = std::make_unique<Dockerd>(dir_->Sub("docker"), name_);
    absl::Status started = dockerd_->Start();
    ASSERT_TRUE(started.ok()) << started << "\n" << plugin_->Log();
  }

  void TearDown() override {
    if (dockerd_) dockerd_->Stop();  // before the plugin: dockerd calls Cleanup
    if (plugin_) plugin_->Stop(SIGTERM).IgnoreError();
    ::unlink(socket_.c_str());
    dockerd_.reset();
    plugin_.reset();
    btrfs_.reset();
  }

  void StartPlugin() {
    auto d = Daemon::Start({testsupport::BuiltTool("dmthin-docker-plugin"), "--root", plugin_root_,
                            "--socket", socket_, "--driver", GetParam()},
                           dir_->Sub("plugin.log"));
    ASSERT_TRUE(d.ok()) << d.status();
    plugin_ = std::move(*d);
    absl::Status up = plugin_->WaitForListening(socket_);
    ASSERT_TRUE(up.ok()) << up << "\n" << plugin_->Log();
  }

  RunResult Docker(std::vector<std::string> args) { return dockerd_->Docker(std::move(args)); }
  std::string Logs() { return "--- plugin:\n" + plugin_->Log() + "--- dockerd:\n" + dockerd_->Log(); }

  static inline ScratchDir* suite_dir_ = nullptr;
  static inline std::string skip_;
  static inline std::string setup_error_;
  static inline std::string image_tar_;
  static inline std::string reference_;

  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<graph::testing::ScratchBtrfs> btrfs_;
  std::string plugin_root_, name_, socket_;
  std::unique_ptr<Daemon> plugin_;
  std::unique_ptr<Dockerd> dockerd_;
};

TEST_P(DockerdTest, LoadRunDiffCommitExportRestartRemove) {
  RunResult info = Docker({"info", "--format", "{{.Driver}} {{json .DriverStatus}}"});
  ASSERT_RUN(info);
  EXPECT_NE(info.out.find(name_ + " [[\"Graph Driver\",\"" + GetParam() + "\"]"), std::string::npos)
      << info.out;

  ASSERT_RUN(Docker({"load", "-i", image_tar_}));
  RunResult run = Docker({"run", "--name", "c1", "--network", "none", kImage, "sh", "-c", kScript});
  ASSERT_TRUE(run.ok()) << run.Describe() << Logs();

  RunResult diff = Docker({"diff", "c1"});
  ASSERT_RUN(diff);
  EXPECT_EQ(diff.out, "C /etc\nA /etc/added\nD /etc/doomed\nC /etc/kept\n");

  RunResult inspect = Docker({"inspect", "-f", "{{.GraphDriver.Name}} {{json .GraphDriver.Data}}", "c1"});
  ASSERT_RUN(inspect);
  EXPECT_EQ(inspect.out.rfind(name_ + " {\"", 0), 0u) << inspect.out;
  EXPECT_NE(inspect.out.find(plugin_root_), std::string::npos) << inspect.out;

  ASSERT_RUN(Docker({"commit", "c1", "dmthin-committed:1"}));
  RunResult committed = Docker({"run", "--rm", "--network", "none", "dmthin-committed:1", "sh", "-c",
                                "cat /etc/added /etc/kept; test -e /etc/doomed || echo gone"});
  ASSERT_RUN(committed);
  EXPECT_EQ(committed.out, "new\nkeep\nmore\ngone\n");

  std::string exported = dir_->Sub("c1.tar");
  ASSERT_RUN(Docker({"export", "-o", exported, "c1"}));
  std::string tree = Unpacked(exported, dir_->Sub("c1-tree"));
  EXPECT_EQ(testsupport::FirstDifference(reference_, tree), "") << "export differs from dockerd's vfs";

  // Restart both: images and the stopped container survive.
  dockerd_->Stop();
  ASSERT_EQ(plugin_->Stop(SIGTERM).value_or(-1), 0) << plugin_->Log();
  StartPlugin();
  absl::Status restarted = dockerd_->Start();
  ASSERT_TRUE(restarted.ok()) << restarted << "\n" << plugin_->Log();
  RunResult images = Docker({"images", "--format", "{{.Repository}}:{{.Tag}}"});
  ASSERT_RUN(images);
  EXPECT_NE(images.out.find(kImage), std::string::npos) << images.out;
  EXPECT_NE(images.out.find("dmthin-committed:1"), std::string::npos) << images.out;
  RunResult ps = Docker({"ps", "-a", "--format", "{{.Names}} {{.State}}"});
  ASSERT_RUN(ps);
  EXPECT_EQ(ps.out, "c1 exited\n");
  RunResult diff_again = Docker({"diff", "c1"});
  ASSERT_RUN(diff_again);
  EXPECT_EQ(diff_again.out, diff.out);
  ASSERT_RUN(Docker({"run", "--rm", "--network", "none", "dmthin-committed:1", "cat", "/etc/added"}));

  // rm and rmi leave the driver empty.
  ASSERT_RUN(Docker({"rm", "c1"}));
  ASSERT_RUN(Docker({"rmi", "dmthin-committed:1", kImage}));
  dockerd_->Stop();
  ASSERT_EQ(plugin_->Stop(SIGTERM).value_or(-1), 0) << plugin_->Log();
  auto driver = graph::OpenDriver(GetParam(), plugin_root_);
  ASSERT_TRUE(driver.ok()) << driver.status();
  auto layers = (*driver)->List();
  ASSERT_TRUE(layers.ok()) << layers.status();
  EXPECT_TRUE(layers->empty()) << layers->size() << " layers left, first " << layers->front();
}

INSTANTIATE_TEST_SUITE_P(Drivers, DockerdTest, ::testing::Values("overlay", "vfs", "btrfs"),
                         [](const auto& info) { return info.param; });

}  // namespace
