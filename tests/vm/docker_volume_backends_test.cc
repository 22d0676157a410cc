// dmthin-docker-plugin's VolumeDriver with a real dockerd (and podman)
// inside the tests/vm guest, on the two backends the host tier cannot give:
// the thin backend (a dm-thin pool made by the test on the guest's tmpfs)
// and the directory backend on an ext4 with project quota enforced (the
// guest's Debian kernel has QFMT_V2). Two plugins, one per backend, serve
// one stock dockerd (vfs: the image's storage is not what is tested).
// For each backend, in the same container (each docker run costs ~5 s
// under TCG): docker volume create -o size=64M; a write past 64 MiB fails
// (ENOSPC on thin, EDQUOT on the quota'd ext4) and a later small write
// succeeds; a container's data persists across its restart (docker restart);
// docker volume rm is refused while a container uses the volume, and the
// plugin itself refuses Remove while mounted; then rm succeeds and leaves
// the store (and the pool) empty. Then podman through containers.conf: one
// run on both backends, the same size checks.
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "libdm/control.h"
#include "nlohmann/json.hpp"
#include "tests/support/daemon.h"
#include "tests/support/dockerd.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"
#include "thinpool/pool.h"
#include "thinpool/state_dir.h"

namespace {

using Json = nlohmann::json;
using testsupport::Daemon;
using testsupport::RunResult;
using testsupport::ScratchDir;

constexpr uint64_t kMiB = 1 << 20;

// One plugin process serving one volume store.
struct Plugin {
  std::string name, socket;
  std::unique_ptr<Daemon> daemon;

  absl::Status Start(const std::vector<std::string>& store_args, const std::string& log) {
    name = testsupport::UniqueName("dmthin-v");
    socket = "/run/docker/plugins/" + name + ".sock";
    std::vector<std::string> argv = {testsupport::BuiltTool("dmthin-docker-plugin"), "--socket", socket};
    argv.insert(argv.end(), store_args.begin(), store_args.end());
    auto d = Daemon::Start(argv, log);
    if (!d.ok()) return d.status();
    daemon = std::move(*d);
    return daemon->WaitForListening(socket, absl::Seconds(60));
  }
  void Stop() {
    if (daemon) daemon->Stop(SIGTERM).IgnoreError();
    daemon.reset();
    if (!socket.empty()) ::unlink(socket.c_str());
  }
  Json Call(const std::string& method, const Json& body) const {
    httplib::Client cli(socket);
    cli.set_address_family(AF_UNIX);
    cli.set_read_timeout(60, 0);
    auto res = cli.Post(("/" + method).c_str(), body.dump(), "application/json");
    if (!res) return Json();
    return Json::parse(res->body, nullptr, false);
  }
  std::string Log() const { return daemon ? daemon->Log() : ""; }
};

// In the container: for each volume mount point, a small file, then 100 MiB
// into the 64 MiB volume (must fail), then, after deleting it, a small write.
constexpr const char* kFillScript =
    "for d in /thin /quota; do "
    "  echo hello > $d/f || exit 11; "
    "  if err=$(dd if=/dev/zero of=$d/big bs=1M count=100 2>&1) && sync; then echo \"$d past-size-ok\"; "
    "  else echo \"$d past-size-failed: $err\"; fi; "
    "  rm -f $d/big && sync && echo small > $d/small && echo \"$d small: $(cat $d/small)\"; "
    "done";

void ExpectFillResult(const std::string& out) {
  for (const char* d : {"/thin", "/quota"}) {
    std::string failed = absl::StrCat(d, " past-size-failed: ");
    size_t at = out.find(failed);
    ASSERT_NE(at, std::string::npos) << d << ": a write past 64 MiB did not fail:\n" << out;
    // dd's messages, up to the next line of the script.
    std::string line = out.substr(at, out.find(absl::StrCat(d, " small:"), at) - at);
    EXPECT_TRUE(line.find("No space left") != std::string::npos ||
                line.find("Disk quota exceeded") != std::string::npos)
        << line;
    EXPECT_NE(out.find(absl::StrCat(d, " small: small")), std::string::npos) << d << " unusable after:\n" << out;
  }
}

class DockerVolumeBackendsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/mapper/control", F_OK) != 0) {
      GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
    }
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    if (::getenv("DMTHIN_IN_VM") == nullptr) GTEST_SKIP() << "ext4 project quota: run inside tests/vm/run";
    if (std::string missing = testsupport::MissingDockerTools(); !missing.empty()) GTEST_SKIP() << missing;
    dir_ = std::make_unique<ScratchDir>("docker-volume-vm");
    ::mkdir("/run/docker", 0700);
    ::mkdir("/run/docker/plugins", 0700);
    // The thin backend's pool, on the guest's tmpfs.
    auto dm = dm::Control::Open();
    ASSERT_TRUE(dm.ok()) << dm.status();
    dm_ = std::move(*dm);
    auto state = thinpool::StateDir::Open(dir_->Sub("thin"));
    ASSERT_TRUE(state.ok()) << state.status();
    state_ = std::move(*state);
    pool_ = absl::StrCat("dvp", ::getpid());
    thinpool::PoolOptions po;
    po.data_bytes = 512 * kMiB;
    auto pool = thinpool::Pool::Create(*state_, *dm_, pool_, po);
    ASSERT_TRUE(pool.ok()) << pool.status();
    // The directory backend's ext4 with project quota enforced.
    auto fs = graph::testing::ScratchBtrfs::CreateOf("ext4", {"mkfs.ext4", "-q", "-O", "quota,project"},
                                                     "prjquota", 128);
    ASSERT_TRUE(fs.ok()) << fs.status();
    quota_fs_ = std::move(*fs);

    absl::Status s = thin_.Start({"--volume-root", dir_->Sub("thin-volumes"), "--volume-pool", pool_,
                                  "--thin-state-dir", dir_->Sub("thin")},
                                 dir_->Sub("thin-plugin.log"));
    ASSERT_TRUE(s.ok()) << s << thin_.Log();
    s = quota_.Start({"--volume-root", dir_->Sub("quota-volumes"), "--volume-data-dir",
                      quota_fs_->path() + "/volumes"},
                     dir_->Sub("quota-plugin.log"));
    ASSERT_TRUE(s.ok()) << s << quota_.Log();
  }
  void TearDown() override {
    if (dockerd_) dockerd_->Stop();
    thin_.Stop();
    quota_.Stop();
    if (!dir_) return;
    // Whatever a failed test left mounted, then the pool.
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_->Sub("thin-volumes") + "/mnt", ec)) {
      ::umount2(e.path().c_str(), MNT_DETACH);
    }
    quota_fs_.reset();
    if (state_) {
      auto pool = thinpool::Pool::Open(*state_, *dm_, pool_);
      if (pool.ok()) {
        absl::Status s = (*pool)->Destroy(/*force=*/true);
        EXPECT_TRUE(s.ok()) << s;
      }
    }
  }
  std::string Logs() const { return absl::StrCat("\nthin plugin:\n", thin_.Log(), "\nquota plugin:\n", quota_.Log()); }

  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<dm::Control> dm_;
  std::unique_ptr<thinpool::StateDir> state_;
  std::string pool_;
  std::unique_ptr<graph::testing::ScratchBtrfs> quota_fs_;
  Plugin thin_, quota_;
  std::unique_ptr<testsupport::Dockerd> dockerd_;
};

TEST_F(DockerVolumeBackendsTest, DockerAndPodmanOnThinAndProjectQuota) {
  auto image = testsupport::BuildBusyboxImage(dir_->Sub("image"), "dmthin-vol:1",
                                              {"sh", "cat", "dd", "rm", "echo", "sync", "sleep"}, {});
  ASSERT_TRUE(image.ok()) << image.status();
  dockerd_ = std::make_unique<testsupport::Dockerd>(dir_->Sub("docker"), "vfs");
  dockerd_->OwnContainerd();
  absl::Status up = dockerd_->Start();
  ASSERT_TRUE(up.ok()) << up << dockerd_->Log();
  auto docker = [&](std::vector<std::string> args) {
    auto t0 = std::chrono::steady_clock::now();
    RunResult r = dockerd_->Docker(args);
    std::fprintf(stderr, "docker %s %s: %.1f s\n", args[0].c_str(), args.size() > 1 ? args[1].c_str() : "",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return r;
  };
  RunResult load = docker({"load", "-i", *image});
  ASSERT_TRUE(load.ok()) << load.Describe();
  for (const Plugin* p : {&thin_, &quota_}) {
    std::string vol = p == &thin_ ? "vthin" : "vquota";
    RunResult create = docker({"volume", "create", "-d", p->name, "-o", "size=64M", vol});
    ASSERT_TRUE(create.ok()) << create.Describe() << Logs();
    Json got = p->Call("VolumeDriver.Get", {{"Name", vol}});
    EXPECT_EQ(got["Volume"]["Status"]["size_bytes"], 64 * kMiB) << got.dump();
    EXPECT_EQ(got["Volume"]["Status"]["backend"], p == &thin_ ? "thin" : "directory") << got.dump();
  }
  // One long-lived container (each start costs ~5 s under TCG; docker exec
  // does not see the container's root in the guest's chroot, so everything
  // is read from its log): its first start fills the volumes past their size,
  // every start appends a line and prints what the volumes hold.
  const std::string script = absl::StrCat(
      "if [ ! -e /thin/runs ]; then ", kFillScript, "; fi; ",
      "for d in /thin /quota; do echo run >> $d/runs; done; cat /thin/f /thin/runs /quota/f /quota/runs /thin/small "
      "/quota/small; echo ready; exec sleep 600");
  RunResult started = docker({"run", "-d", "--name", "user", "--network", "none", "-v", "vthin:/thin", "-v",
                              "vquota:/quota", "dmthin-vol:1", "sh", "-c", script});
  ASSERT_TRUE(started.ok()) << started.Describe() << Logs();
  // The container's log once it has printed "ready" `n` times.
  auto log_when_ready = [&](size_t n) {
    std::string out;
    for (int i = 0; i < 300; ++i) {
      RunResult logs = dockerd_->Docker({"logs", "user"});
      out = logs.out;
      size_t count = 0;
      for (size_t at = out.find("ready\n"); at != std::string::npos; at = out.find("ready\n", at + 1)) ++count;
      if (count >= n) break;
      ::sleep(1);
    }
    return out;
  };
  std::string first = log_when_ready(1);
  ExpectFillResult(first);
  EXPECT_NE(first.find("hello\nrun\nhello\nrun\nsmall\nsmall\nready\n"), std::string::npos) << first;

  // Remove is refused while a container uses the volume: by dockerd, and by
  // the plugin itself should anyone ask it.
  for (const Plugin* p : {&thin_, &quota_}) {
    std::string vol = p == &thin_ ? "vthin" : "vquota";
    RunResult rm = docker({"volume", "rm", vol});
    EXPECT_FALSE(rm.ok()) << vol << " removed while in use";
    EXPECT_NE(rm.err.find("in use"), std::string::npos) << rm.err;
    Json refused = p->Call("VolumeDriver.Remove", {{"Name", vol}});
    EXPECT_TRUE(refused.contains("Err") && !refused["Err"].get<std::string>().empty()) << refused.dump();
    EXPECT_EQ(p->Call("VolumeDriver.Get", {{"Name", vol}})["Volume"]["Status"]["mount_refs"], 1) << vol;
  }

  // Data persists across the container's restart (unmounted at its stop,
  // mounted again at its start).
  RunResult restarted = docker({"restart", "-t", "1", "user"});
  ASSERT_TRUE(restarted.ok()) << restarted.Describe() << Logs();
  std::string second = log_when_ready(2);
  EXPECT_NE(second.find("hello\nrun\nrun\nhello\nrun\nrun\nsmall\nsmall\nready\n"), std::string::npos)
      << second;
  ASSERT_TRUE(docker({"rm", "-f", "user"}).ok());
  for (const Plugin* p : {&thin_, &quota_}) {
    std::string vol = p == &thin_ ? "vthin" : "vquota";
    EXPECT_EQ(p->Call("VolumeDriver.Get", {{"Name", vol}})["Volume"]["Status"]["mount_refs"], 0) << vol;
    RunResult rm = docker({"volume", "rm", vol});
    EXPECT_TRUE(rm.ok()) << rm.Describe() << Logs();
    EXPECT_EQ(p->Call("VolumeDriver.List", Json::object())["Volumes"].size(), 0u) << vol;
  }
  dockerd_->Stop();

  // podman (containers.conf names the plugins): one run on both backends.
  if (!testsupport::HaveProgram("podman")) return;
  std::string conf = dir_->Sub("containers.conf");
  testsupport::WriteFileOrDie(conf, absl::StrCat("[containers]\ndefault_ulimits = []\n[engine]\n"
                                                 "events_logger = \"file\"\n[engine.volume_plugins]\n",
                                                 thin_.name, " = \"", thin_.socket, "\"\n", quota_.name, " = \"",
                                                 quota_.socket, "\"\n"));
  auto podman = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {"env", "CONTAINERS_CONF=" + conf, "podman", "--root", dir_->Sub("proot"),
                                     "--runroot", dir_->Sub("prunroot"), "--tmpdir", dir_->Sub("ptmp"),
                                     "--storage-driver", "vfs"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto t0 = std::chrono::steady_clock::now();
    RunResult r = testsupport::Run(argv);
    std::fprintf(stderr, "podman %s: %.1f s\n", args[0].c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return r;
  };
  RunResult pload = podman({"load", "-i", *image});
  ASSERT_TRUE(pload.ok()) << pload.Describe();
  for (const Plugin* p : {&thin_, &quota_}) {
    std::string vol = p == &thin_ ? "vthin" : "vquota";
    RunResult create = podman({"volume", "create", "--driver", p->name, "-o", "size=64M", vol});
    ASSERT_TRUE(create.ok()) << create.Describe() << Logs();
  }
  RunResult pfill = podman({"run", "--rm", "--network", "none", "-v", "vthin:/thin", "-v", "vquota:/quota",
                            "dmthin-vol:1", "sh", "-c", kFillScript});
  ASSERT_TRUE(pfill.ok()) << pfill.Describe() << pfill.out << Logs();
  ExpectFillResult(pfill.out);
  for (const Plugin* p : {&thin_, &quota_}) {
    std::string vol = p == &thin_ ? "vthin" : "vquota";
    EXPECT_EQ(p->Call("VolumeDriver.Get", {{"Name", vol}})["Volume"]["Status"]["mount_refs"], 0)
        << vol << ": podman's constant id, every mount unmounted";
    RunResult rm = podman({"volume", "rm", vol});
    EXPECT_TRUE(rm.ok()) << rm.Describe() << Logs();
    EXPECT_EQ(p->Call("VolumeDriver.List", Json::object())["Volumes"].size(), 0u) << vol;
  }
}

}  // namespace
