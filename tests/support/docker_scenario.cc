#include "tests/support/docker_scenario.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "graph/store.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/daemon.h"
#include "tests/support/dockerd.h"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"

namespace testsupport {
namespace {

// Writes a file, deletes one from the image, changes one.
constexpr char kScript[] = "echo new > /etc/added && rm /etc/doomed && echo more >> /etc/kept";

// Inside RunDockerScenario: a failed command shows the daemons' logs.
#define ASSERT_RUN(result)                                                     \
  do {                                                                         \
    RunResult r_ = (result);                                                   \
    ASSERT_TRUE(r_.ok()) << r_.Describe() << "\n" << r_.out << stack.Logs();   \
  } while (0)

// Fingerprint of the tar `path` unpacked (GNU tar) into `dir`; "" on failure.
std::string Unpacked(const std::string& tar, const std::string& dir) {
  ::mkdir(dir.c_str(), 0755);
  RunResult r = Run({"tar", "-xpf", tar, "-C", dir, "--numeric-owner"});
  if (!r.ok()) return "";
  return TreeFingerprint(dir);
}

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// A plugin and a dockerd on it, each stopped by the destructor (dockerd
// first: it calls the plugin's Cleanup).
class Stack {
 public:
  explicit Stack(const DockerScenario& s)
      : s_(s), name_(UniqueName("dmthin-t")), socket_("/run/docker/plugins/" + name_ + ".sock") {}
  ~Stack() {
    StopBoth();
    ::unlink(socket_.c_str());
  }

  absl::Status Start() {
    // dockerd looks for plugins here (a fresh /run, as in the vm guest, lacks it).
    std::error_code ec;
    std::filesystem::create_directories("/run/docker/plugins", ec);
    std::vector<std::string> argv = {BuiltTool("dmthin-docker-plugin"), "--root", s_.plugin_root,
                                     "--socket", socket_, "--driver", s_.driver};
    for (const std::string& o : s_.storage_opts) argv.insert(argv.end(), {"--storage-opt", o});
    ASSIGN_OR_RETURN(plugin_, Daemon::Start(argv, s_.dir + "/plugin.log"));
    absl::Status up = plugin_->WaitForListening(socket_, absl::Seconds(120));
    if (!up.ok()) return absl::InternalError(absl::StrCat(up.ToString(), "\n", plugin_->Log()));
    if (!dockerd_) {
      dockerd_ = std::make_unique<Dockerd>(s_.dir + "/docker", name_);
      if (s_.own_containerd) dockerd_->OwnContainerd();
    }
    absl::Status started = dockerd_->Start();
    if (!started.ok()) return absl::InternalError(absl::StrCat(started.ToString(), "\n", plugin_->Log()));
    return absl::OkStatus();
  }
  // Graceful: 0 when the plugin exited cleanly.
  int StopBoth() {
    if (dockerd_) dockerd_->Stop();
    int rc = 0;
    if (plugin_) rc = plugin_->Stop(SIGTERM).value_or(-1);
    plugin_.reset();
    return rc;
  }

  RunResult Docker(std::vector<std::string> args) { return dockerd_->Docker(args); }
  RunResult Graphctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {BuiltTool("graphctl"), "--root", s_.plugin_root};
    for (const std::string& o : s_.storage_opts) argv.insert(argv.end(), {"--storage-opt", o});
    argv.insert(argv.end(), args.begin(), args.end());
    return Run(argv);
  }
  std::string Logs() {
    return absl::StrCat("--- plugin:\n", plugin_ ? plugin_->Log() : "", "--- dockerd:\n",
                        dockerd_ ? dockerd_->Log() : "");
  }
  const std::string& name() const { return name_; }

 private:
  const DockerScenario& s_;
  std::string name_, socket_;
  std::unique_ptr<Daemon> plugin_;
  std::unique_ptr<Dockerd> dockerd_;
};

}  // namespace

absl::StatusOr<std::string> BuildDockerTestImage(const std::string& dir) {
  return BuildBusyboxImage(
      dir, kDockerTestImage, {"sh", "cat", "echo", "rm", "test", "true", "ls", "touch"},
      {{"/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"}, {"/etc/doomed", "bye\n"}, {"/etc/kept", "keep\n"}});
}

absl::StatusOr<std::string> DockerVfsReference(const std::string& dir, const std::string& image_tar) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return base::ErrnoError(errno, "creating " + dir);
  Dockerd dockerd(dir + "/docker", "vfs");
  RETURN_IF_ERROR(dockerd.Start());
  std::string exported = dir + "/ref.tar";
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"load", "-i", image_tar},
           {"run", "--name", "c1", "--network", "none", kDockerTestImage, "sh", "-c", kScript},
           {"export", "-o", exported, "c1"},
           {"rm", "c1"},
           {"rmi", kDockerTestImage}}) {
    RunResult r = dockerd.Docker(args);
    if (!r.ok()) return absl::InternalError("reference: " + r.Describe());
  }
  dockerd.Stop();
  std::string tree = Unpacked(exported, dir + "/ref-tree");
  if (tree.empty()) return absl::InternalError("reference export is empty");
  return tree;
}

void RunDockerScenario(const DockerScenario& s) {
  Stack stack(s);
  absl::Status started = stack.Start();
  ASSERT_TRUE(started.ok()) << started;
  RunResult info = stack.Docker({"info", "--format", "{{.Driver}} {{json .DriverStatus}}"});
  ASSERT_RUN(info);
  EXPECT_NE(info.out.find(stack.name() + " [[\"Graph Driver\",\"" + s.driver + "\"]"), std::string::npos)
      << info.out;

  ASSERT_RUN(stack.Docker({"load", "-i", s.image_tar}));
  RunResult run = stack.Docker({"run", "--name", "c1", "--network", "none", kDockerTestImage, "sh", "-c", kScript});
  ASSERT_TRUE(run.ok()) << run.Describe() << stack.Logs();

  RunResult diff = stack.Docker({"diff", "c1"});
  ASSERT_RUN(diff);
  EXPECT_EQ(diff.out, "C /etc\nA /etc/added\nD /etc/doomed\nC /etc/kept\n");

  // docker inspect says where the stopped container's files are: the layer
  // in the plugin's store, which graphctl lists and mounts read-only.
  RunResult inspect = stack.Docker({"inspect", "-f", "{{.GraphDriver.Name}} {{json .GraphDriver.Data}}", "c1"});
  ASSERT_RUN(inspect);
  ASSERT_EQ(inspect.out.rfind(stack.name() + " {\"", 0), 0u) << inspect.out;
  auto data = nlohmann::json::parse(inspect.out.substr(stack.name().size() + 1), nullptr, false);
  ASSERT_TRUE(data.is_object()) << inspect.out;
  EXPECT_EQ(data.value("LayerStore", ""), s.plugin_root) << inspect.out;
  std::string layer = data.value("Layer", "");
  ASSERT_FALSE(layer.empty()) << inspect.out;
  RunResult ls = stack.Graphctl({"ls"});
  ASSERT_RUN(ls);
  EXPECT_NE(ls.out.find(layer), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find(layer + "-init"), std::string::npos) << ls.out;
  std::string look = s.dir + "/look";
  ASSERT_EQ(::mkdir(look.c_str(), 0755), 0);
  RunResult mounted = stack.Graphctl({"mount", layer, "--ro", look});
  ASSERT_RUN(mounted);
  EXPECT_EQ(Trimmed(mounted.out), look);
  EXPECT_EQ(ReadFileOrEmpty(look + "/etc/added"), "new\n");
  EXPECT_EQ(ReadFileOrEmpty(look + "/etc/kept"), "keep\nmore\n");
  EXPECT_NE(::access((look + "/etc/doomed").c_str(), F_OK), 0);
  int made = ::mkdir((look + "/etc/nope").c_str(), 0755);
  int err = errno;
  EXPECT_NE(made, 0);
  EXPECT_EQ(err, EROFS);
  RunResult refused = stack.Graphctl({"rm", layer});
  EXPECT_FALSE(refused.ok()) << "a mounted layer was removed";
  ASSERT_RUN(stack.Graphctl({"umount", layer, "--ro", look}));

  ASSERT_RUN(stack.Docker({"commit", "c1", "dmthin-committed:1"}));
  RunResult committed = stack.Docker({"run", "--rm", "--network", "none", "dmthin-committed:1", "sh", "-c",
                                      "cat /etc/added /etc/kept; test -e /etc/doomed || echo gone"});
  ASSERT_RUN(committed);
  EXPECT_EQ(committed.out, "new\nkeep\nmore\ngone\n");

  if (!s.reference.empty()) {
    std::string exported = s.dir + "/c1.tar";
    ASSERT_RUN(stack.Docker({"export", "-o", exported, "c1"}));
    std::string tree = Unpacked(exported, s.dir + "/c1-tree");
    EXPECT_EQ(FirstDifference(s.reference, tree), "") << "export differs from dockerd's vfs";
  }

  // Restart both: images and the stopped container survive.
  ASSERT_EQ(stack.StopBoth(), 0) << stack.Logs();
  started = stack.Start();
  ASSERT_TRUE(started.ok()) << started;
  RunResult images = stack.Docker({"images", "--format", "{{.Repository}}:{{.Tag}}"});
  ASSERT_RUN(images);
  EXPECT_NE(images.out.find(kDockerTestImage), std::string::npos) << images.out;
  EXPECT_NE(images.out.find("dmthin-committed:1"), std::string::npos) << images.out;
  RunResult ps = stack.Docker({"ps", "-a", "--format", "{{.Names}} {{.State}}"});
  ASSERT_RUN(ps);
  EXPECT_EQ(ps.out, "c1 exited\n");
  RunResult diff_again = stack.Docker({"diff", "c1"});
  ASSERT_RUN(diff_again);
  EXPECT_EQ(diff_again.out, diff.out);
  if (s.run_after_restart) {
    ASSERT_RUN(stack.Docker({"run", "--rm", "--network", "none", "dmthin-committed:1", "cat", "/etc/added"}));
  }

  // rm and rmi leave the store (and the driver) empty.
  ASSERT_RUN(stack.Docker({"rm", "c1"}));
  ASSERT_RUN(stack.Docker({"rmi", "dmthin-committed:1", kDockerTestImage}));
  ASSERT_EQ(stack.StopBoth(), 0) << stack.Logs();
  std::map<std::string, std::string> options;
  for (const std::string& o : s.storage_opts) options[o.substr(0, o.find('='))] = o.substr(o.find('=') + 1);
  auto store = graph::OpenLayerStore(s.plugin_root, s.driver, options);
  ASSERT_TRUE(store.ok()) << store.status();
  auto layers = (*store)->List();
  ASSERT_TRUE(layers.ok()) << layers.status();
  EXPECT_TRUE(layers->empty()) << layers->size() << " layers left, first " << layers->front().name;
  auto left = (*store)->driver().List();
  ASSERT_TRUE(left.ok()) << left.status();
  EXPECT_TRUE(left->empty()) << left->size() << " driver layers left";
}

}  // namespace testsupport
