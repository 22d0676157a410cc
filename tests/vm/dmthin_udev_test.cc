// udev-triggered pool activation with a real systemd-udevd in the guest and
// dmthin's rules installed into a temporary rules directory: a deactivated
// pool whose files are attached to loop devices again becomes active by
// itself, within a bounded time.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/cleanup_stack.h"
#include "tests/support/process.h"

namespace {

using Json = nlohmann::json;
using testsupport::RunResult;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
  return s;
}

class UdevActivationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/mapper/control", F_OK) != 0)
      GTEST_SKIP() << "no /dev/mapper/control: run this inside tests/vm/run";
    if (access("/lib/systemd/systemd-udevd", X_OK) != 0)
      GTEST_SKIP() << "systemd-udevd not installed (the udev package)";
    if (access("/run/udev/control", F_OK) == 0)
      GTEST_SKIP() << "a udevd already runs here; this test starts its own";
    repo_ = testsupport::RepoRoot();
    bin_ = repo_ + "/" + (getenv("BUILD") ? getenv("BUILD") : "build") + "/bin/dmthin";
    ASSERT_EQ(access(bin_.c_str(), X_OK), 0) << bin_;
    dir_ = "/tmp/" + testsupport::UniqueName("dmthin-udev");
    state_ = dir_ + "/state";
    std::filesystem::create_directories(dir_);
    cleanup_.Push([d = dir_] { std::filesystem::remove_all(d); });
    // udevadm refuses to act in a chroot (the guest runs the host's root as
    // one) unless told otherwise.
    setenv("SYSTEMD_IGNORE_CHROOT", "1", 1);
  }

  RunResult Dmthin(std::vector<std::string> args) {
    args.insert(args.begin(), {bin_, "--state-dir", state_});
    return testsupport::Run(args);
  }

  void StartUdevd() {
    std::filesystem::create_directories("/run/udev/rules.d");
    std::string rules = ReadAll(repo_ + "/udev-rules/69-dmthin.rules.in");
    ASSERT_FALSE(rules.empty());
    rules = Replace(rules, "@BINDIR@/dmthin", bin_);
    rules = Replace(rules, "@STATE_DIR@", state_);
    std::ofstream(rules_path_) << rules;
    cleanup_.Push([p = rules_path_] { std::filesystem::remove(p); });
    RunResult r = testsupport::Run(
        {"/lib/systemd/systemd-udevd", "--daemon", "--resolve-names=never"});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
    cleanup_.Push([] {
      testsupport::Run({"udevadm", "control", "--exit"});
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      // udevd leaves its control socket behind; while it exists, libudev
      // (and dmsetup's udev sync, which would then wait forever for a
      // cookie) believe udev runs. Leave the guest as we found it: no udev.
      std::filesystem::remove("/run/udev/control");
    });
    for (int i = 0; i < 50 && access("/run/udev/control", F_OK) != 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_EQ(testsupport::Run({"udevadm", "control", "--reload"}).exit_code, 0);
  }

  std::string repo_, bin_, dir_, state_;
  const std::string rules_path_ = "/run/udev/rules.d/69-dmthin.rules";
  testsupport::CleanupStack cleanup_;
};

TEST_F(UdevActivationTest, PoolActivatesWhenItsLoopDevicesReappear) {
  const std::string pool = "udev" + std::to_string(getpid() % 100000);
  StartUdevd();
  RunResult r = Dmthin({"pool", "create", pool, "--data-size", "128M"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  cleanup_.Push([this, pool] { Dmthin({"pool", "destroy", pool, "--force"}); });
  r = Dmthin({"thin", "create", pool, "t0", "--size", "32M"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  ASSERT_EQ(Dmthin({"thin", "deactivate", pool, "t0"}).exit_code, 0);
  ASSERT_EQ(Dmthin({"pool", "deactivate", pool}).exit_code, 0);
  r = Dmthin({"--json", "pool", "status", pool});
  ASSERT_FALSE(Json::parse(r.out)["active"].get<bool>()) << r.out;
  ASSERT_EQ(testsupport::Run({"udevadm", "settle", "--timeout=10"}).exit_code, 0);

  // What an admin or a boot script does: attach the files again. losetup
  // sets the backing file, the kernel sends "change", our rule matches.
  const std::string files = state_ + "/" + pool;
  RunResult meta = testsupport::Run({"losetup", "--find", "--show", files + "/metadata"});
  ASSERT_EQ(meta.exit_code, 0) << meta.Describe();
  RunResult data = testsupport::Run({"losetup", "--find", "--show", files + "/data"});
  ASSERT_EQ(data.exit_code, 0) << data.Describe();
  // The match the rule makes, as udev would see it.
  std::string data_dev = data.out.substr(0, data.out.find('\n'));
  RunResult match = Dmthin({"udev", "match", data_dev});
  EXPECT_NE(match.out.find("DMTHIN_POOL=" + pool + "\n"), std::string::npos) << match.Describe();

  bool active = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!active && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    r = Dmthin({"--json", "pool", "status", pool});
    if (r.ok()) active = Json::parse(r.out, nullptr, false).value("active", false);
  }
  EXPECT_TRUE(active) << "the pool did not become active within 30 s; last status: " << r.out
                      << r.err;
  // The pool uses the loops we attached rather than attaching its own.
  r = testsupport::Run({"losetup", "-j", files + "/data"});
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  // And the thin device is usable again.
  r = Dmthin({"thin", "activate", pool, "t0"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
}

}  // namespace
