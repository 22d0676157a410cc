// dmthin-docker-plugin's VolumeDriver role: a plugin serving only volumes
// (a libvolume store on a loop-mounted btrfs made by the test), driven over
// HTTP as dockerd drives it, then by a real, stock dockerd on overlay2:
// docker volume create -d NAME -o size=64M, a container writes, a second one
// reads, a write past 64 MiB fails and a later small write succeeds;
// --volumes-from with one container stopping; a restart of plugin and
// dockerd keeps volumes and data.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/support/daemon.h"
#include "tests/support/dockerd.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"

namespace {

using Json = nlohmann::json;
using testsupport::Daemon;
using testsupport::RunResult;
using testsupport::ScratchDir;

struct Reply {
  int status = -1;
  Json json;
  std::string err() const {
    return json.is_object() && json.contains("Err") && json["Err"].is_string()
               ? json["Err"].get<std::string>()
               : "";
  }
};

// One container writes, a second reads, a write past 64 MiB fails with
// EDQUOT/ENOSPC, and after deleting it a small write succeeds.
void ContainersShareAVolumeOf64M(const std::function<RunResult(const std::string&)>& run) {
  RunResult w = run("echo hello > /data/f");
  ASSERT_TRUE(w.ok()) << w.Describe();
  RunResult r = run("cat /data/f");
  ASSERT_TRUE(r.ok()) << r.Describe();
  EXPECT_EQ(r.out, "hello\n");
  RunResult big = run("dd if=/dev/zero of=/data/big bs=1M count=100 && sync");
  EXPECT_FALSE(big.ok()) << "100 MiB into a 64 MiB volume";
  EXPECT_TRUE(big.err.find("Disk quota exceeded") != std::string::npos ||
              big.err.find("No space left") != std::string::npos)
      << big.err;
  RunResult after = run("rm -f /data/big && sync && echo small > /data/small && cat /data/small");
  ASSERT_TRUE(after.ok()) << after.Describe();
  EXPECT_EQ(after.out, "small\n");
}

class DockerVolumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, the plugin's socket)";
    auto fs = graph::testing::ScratchBtrfs::Create(512);
    if (!fs.ok()) GTEST_SKIP() << "no scratch btrfs: " << fs.status();
    fs_ = std::move(*fs);
    dir_ = std::make_unique<ScratchDir>("docker-volume");
    name_ = testsupport::UniqueName("dmthin-v");
    socket_ = "/run/docker/plugins/" + name_ + ".sock";
    ::mkdir("/run/docker", 0700);
    ::mkdir("/run/docker/plugins", 0700);
    StartPlugin();
  }
  void StartPlugin() {
    auto d = Daemon::Start({testsupport::BuiltTool("dmthin-docker-plugin"), "--volume-root",
                            fs_->path() + "/volumes", "--socket", socket_},
                           dir_->Sub("plugin.log"));
    ASSERT_TRUE(d.ok()) << d.status();
    plugin_ = std::move(*d);
    absl::Status up = plugin_->WaitForListening(socket_);
    ASSERT_TRUE(up.ok()) << up << "\n" << plugin_->Log();
  }
  uint64_t MountRefs(const std::string& volume) {
    Json refs = Call("VolumeDriver.Get", {{"Name", volume}}).json["Volume"]["Status"]["mount_refs"];
    return refs.is_number() ? refs.get<uint64_t>() : 999;
  }
  void TearDown() override {
    if (dockerd_) dockerd_->Stop();
    if (plugin_) plugin_->Stop(SIGTERM).IgnoreError();
    ::unlink(socket_.c_str());
  }
  Reply Call(const std::string& method, const Json& body) {
    httplib::Client cli(socket_);
    cli.set_address_family(AF_UNIX);
    cli.set_read_timeout(60, 0);
    auto res = cli.Post(("/" + method).c_str(), body.is_null() ? "" : body.dump(), "application/json");
    if (!res) return {};
    return {res->status, Json::parse(res->body, nullptr, false)};
  }

  std::unique_ptr<graph::testing::ScratchBtrfs> fs_;
  std::unique_ptr<ScratchDir> dir_;
  std::string name_, socket_;
  std::unique_ptr<Daemon> plugin_;
  std::unique_ptr<testsupport::Dockerd> dockerd_;
};

TEST_F(DockerVolumeTest, ProtocolWithCountedMounts) {
  struct stat st;
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(Call("Plugin.Activate", nullptr).json, Json::parse(R"({"Implements":["VolumeDriver"]})"));
  EXPECT_EQ(Call("VolumeDriver.Capabilities", nullptr).json["Capabilities"]["Scope"], "local");

  Reply bad = Call("VolumeDriver.Create", {{"Name", "v1"}, {"Opts", {{"sise", "1G"}}}});
  EXPECT_EQ(bad.status, 500);
  EXPECT_NE(bad.err().find("unknown volume option"), std::string::npos) << bad.err();
  EXPECT_NE(Call("VolumeDriver.Create", {{"Name", "../x"}}).err(), "");
  EXPECT_NE(Call("VolumeDriver.Create", "not an object").err(), "");
  EXPECT_EQ(Call("VolumeDriver.List", nullptr).json["Volumes"].size(), 0u) << "nothing made";

  Reply made = Call("VolumeDriver.Create", {{"Name", "v1"}, {"Opts", {{"size", "64M"}}}});
  ASSERT_EQ(made.status, 200) << made.err();
  Reply m1 = Call("VolumeDriver.Mount", {{"Name", "v1"}, {"ID", "podman"}});
  ASSERT_EQ(m1.status, 200) << m1.err();
  std::string mp = m1.json["Mountpoint"];
  EXPECT_EQ(Call("VolumeDriver.Mount", {{"Name", "v1"}, {"ID", "podman"}}).status, 200);
  EXPECT_EQ(Call("VolumeDriver.Path", {{"Name", "v1"}}).json["Mountpoint"], mp);
  Reply got = Call("VolumeDriver.Get", {{"Name", "v1"}});
  EXPECT_EQ(got.json["Volume"]["Status"]["size_bytes"], 64u << 20);
  EXPECT_EQ(got.json["Volume"]["Status"]["mount_refs"], 2);
  EXPECT_NE(Call("VolumeDriver.Remove", {{"Name", "v1"}}).err(), "") << "mounted";

  Reply snap = Call("VolumeDriver.Create", {{"Name", "s1"}, {"Opts", {{"from", "v1"}}}});
  EXPECT_EQ(snap.status, 200) << snap.err();
  EXPECT_EQ(Call("VolumeDriver.List", nullptr).json["Volumes"].size(), 2u);

  EXPECT_EQ(Call("VolumeDriver.Unmount", {{"Name", "v1"}, {"ID", "podman"}}).status, 200);
  EXPECT_NE(Call("VolumeDriver.Remove", {{"Name", "v1"}}).err(), "") << "one reference left";
  EXPECT_EQ(Call("VolumeDriver.Unmount", {{"Name", "v1"}, {"ID", "podman"}}).status, 200);
  EXPECT_NE(Call("VolumeDriver.Unmount", {{"Name", "v1"}, {"ID", "podman"}}).err(), "");
  EXPECT_EQ(Call("VolumeDriver.Remove", {{"Name", "v1"}}).status, 200);
  EXPECT_EQ(Call("VolumeDriver.Remove", {{"Name", "s1"}}).status, 200);
  EXPECT_NE(Call("VolumeDriver.Get", {{"Name", "v1"}}).err(), "");
}

TEST_F(DockerVolumeTest, StockDockerdOnOverlay2) {
  std::string missing = testsupport::MissingDockerTools();
  if (!missing.empty()) GTEST_SKIP() << missing;
  auto image = testsupport::BuildBusyboxImage(dir_->Sub("image"), "dmthin-vol:1",
                                              {"sh", "cat", "dd", "rm", "echo", "sync"}, {});
  ASSERT_TRUE(image.ok()) << image.status();
  dockerd_ = std::make_unique<testsupport::Dockerd>(dir_->Sub("docker"), "overlay2");
  absl::Status up = dockerd_->Start();
  if (!up.ok()) GTEST_SKIP() << "dockerd on overlay2 does not start here: " << up;
  auto docker = [&](std::vector<std::string> args) { return dockerd_->Docker(args); };
  RunResult load = docker({"load", "-i", *image});
  ASSERT_TRUE(load.ok()) << load.Describe();
  RunResult create = docker({"volume", "create", "-d", name_, "-o", "size=64M", "v1"});
  ASSERT_TRUE(create.ok()) << create.Describe() << plugin_->Log();
  auto run = [&](const std::string& script) {
    return docker({"run", "--rm", "--network", "none", "-v", "v1:/data", "dmthin-vol:1", "sh", "-c", script});
  };
  ContainersShareAVolumeOf64M(run);
  if (HasFatalFailure()) return;
  RunResult inspect = docker({"volume", "inspect", "v1"});
  ASSERT_TRUE(inspect.ok()) << inspect.Describe();
  Json j = Json::parse(inspect.out, nullptr, false);
  ASSERT_TRUE(j.is_array() && j.size() == 1) << inspect.out;
  EXPECT_EQ(j[0]["Driver"], name_);
  EXPECT_FALSE(j[0]["Mountpoint"].get<std::string>().empty());
  RunResult rm = docker({"volume", "rm", "v1"});
  EXPECT_TRUE(rm.ok()) << rm.Describe();
  EXPECT_EQ(Call("VolumeDriver.List", nullptr).json["Volumes"].size(), 0u);
}

// Two containers share a volume (--volumes-from): one stops, the other keeps
// its mount and the count follows; then plugin and dockerd restart and the
// volume and its data are still there.
TEST_F(DockerVolumeTest, VolumesFromAndRestart) {
  std::string missing = testsupport::MissingDockerTools();
  if (!missing.empty()) GTEST_SKIP() << missing;
  auto image = testsupport::BuildBusyboxImage(dir_->Sub("image"), "dmthin-vol:1",
                                              {"sh", "cat", "echo", "sleep"}, {});
  ASSERT_TRUE(image.ok()) << image.status();
  dockerd_ = std::make_unique<testsupport::Dockerd>(dir_->Sub("docker"), "overlay2");
  absl::Status up = dockerd_->Start();
  if (!up.ok()) GTEST_SKIP() << "dockerd on overlay2 does not start here: " << up;
  auto docker = [&](std::vector<std::string> args) { return dockerd_->Docker(args); };
  ASSERT_TRUE(docker({"load", "-i", *image}).ok());
  RunResult create = docker({"volume", "create", "-d", name_, "-o", "size=64M", "shared"});
  ASSERT_TRUE(create.ok()) << create.Describe() << plugin_->Log();

  RunResult a = docker({"run", "-d", "--name", "ca", "--network", "none", "-v", "shared:/data",
                        "dmthin-vol:1", "sh", "-c", "echo from-a > /data/a && exec sleep 600"});
  ASSERT_TRUE(a.ok()) << a.Describe() << plugin_->Log();
  RunResult b = docker({"run", "-d", "--name", "cb", "--network", "none", "--volumes-from", "ca",
                        "dmthin-vol:1", "sleep", "600"});
  ASSERT_TRUE(b.ok()) << b.Describe() << plugin_->Log();
  EXPECT_EQ(MountRefs("shared"), 2u) << "one reference per container";

  RunResult stop = docker({"stop", "-t", "1", "ca"});
  ASSERT_TRUE(stop.ok()) << stop.Describe();
  EXPECT_EQ(MountRefs("shared"), 1u) << "a stopped";
  RunResult read = docker({"exec", "cb", "cat", "/data/a"});
  ASSERT_TRUE(read.ok()) << read.Describe();
  EXPECT_EQ(read.out, "from-a\n") << "b keeps its mount";
  RunResult write = docker({"exec", "cb", "sh", "-c", "echo from-b > /data/b"});
  ASSERT_TRUE(write.ok()) << write.Describe();
  ASSERT_TRUE(docker({"rm", "-f", "cb"}).ok());
  EXPECT_EQ(MountRefs("shared"), 0u) << "b removed";
  ASSERT_TRUE(docker({"rm", "ca"}).ok());

  // Restart both: the registry is on disk, the data in the volume.
  dockerd_->Stop();
  ASSERT_TRUE(plugin_->Stop(SIGTERM).ok());
  plugin_.reset();
  ::unlink(socket_.c_str());
  StartPlugin();
  if (HasFatalFailure()) return;
  up = dockerd_->Start();
  ASSERT_TRUE(up.ok()) << up;
  RunResult ls = docker({"volume", "ls", "-q"});
  ASSERT_TRUE(ls.ok()) << ls.Describe();
  EXPECT_NE(ls.out.find("shared"), std::string::npos) << ls.out;
  RunResult again = docker({"run", "--rm", "--network", "none", "-v", "shared:/data", "dmthin-vol:1",
                            "cat", "/data/a", "/data/b"});
  ASSERT_TRUE(again.ok()) << again.Describe() << plugin_->Log();
  EXPECT_EQ(again.out, "from-a\nfrom-b\n");
  EXPECT_EQ(MountRefs("shared"), 0u);
  RunResult rm = docker({"volume", "rm", "shared"});
  EXPECT_TRUE(rm.ok()) << rm.Describe();
}

TEST_F(DockerVolumeTest, PodmanThroughContainersConf) {
  std::string missing = testsupport::MissingDockerTools();
  if (!missing.empty()) GTEST_SKIP() << missing;
  if (!testsupport::HaveProgram("podman")) GTEST_SKIP() << "no podman";
  auto image = testsupport::BuildBusyboxImage(dir_->Sub("image"), "dmthin-vol:1",
                                              {"sh", "cat", "dd", "rm", "echo", "sync"}, {});
  ASSERT_TRUE(image.ok()) << image.status();
  // podman here needs default_ulimits = [] (rlimits cannot be raised).
  std::string conf = dir_->Sub("containers.conf");
  testsupport::WriteFileOrDie(conf, "[containers]\ndefault_ulimits = []\n[engine]\n"
                                    "events_logger = \"file\"\n[engine.volume_plugins]\n" +
                                        name_ + " = \"" + socket_ + "\"\n");
  auto podman = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {"env", "CONTAINERS_CONF=" + conf, "podman",
                                     "--root", dir_->Sub("proot"), "--runroot", dir_->Sub("prunroot"),
                                     "--tmpdir", dir_->Sub("ptmp"), "--storage-driver", "vfs"};
    argv.insert(argv.end(), args.begin(), args.end());
    return testsupport::Run(argv);
  };
  RunResult load = podman({"load", "-i", *image});
  ASSERT_TRUE(load.ok()) << load.Describe();
  RunResult create = podman({"volume", "create", "--driver", name_, "-o", "size=64M", "pv1"});
  ASSERT_TRUE(create.ok()) << create.Describe() << plugin_->Log();
  auto run = [&](const std::string& script) {
    return podman({"run", "--rm", "--network", "none", "-v", "pv1:/data", "dmthin-vol:1", "sh", "-c",
                   script});
  };
  RunResult probe = run("true");
  if (!probe.ok() && probe.err.find("volume") == std::string::npos) {
    GTEST_SKIP() << "podman run does not work here: " << probe.Describe();
  }
  ContainersShareAVolumeOf64M(run);
  if (HasFatalFailure()) return;
  EXPECT_EQ(Call("VolumeDriver.Get", {{"Name", "pv1"}}).json["Volume"]["Status"]["mount_refs"], 0)
      << "podman's constant id: every mount was unmounted";
  RunResult rm = podman({"volume", "rm", "pv1"});
  EXPECT_TRUE(rm.ok()) << rm.Describe();
  EXPECT_EQ(Call("VolumeDriver.List", nullptr).json["Volumes"].size(), 0u);
}

}  // namespace
