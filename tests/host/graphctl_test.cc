// graphctl end to end: the real binary against a real store (vfs in /tmp,
// plus btrfs on a loop image), exit codes 0/1/2, JSON output, stdin
// imports, and hostile tarballs rejected with nothing left behind.
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/unique_fd.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/graph_conformance.h"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"

namespace {

using testsupport::BuildTar;
using testsupport::RunResult;
using testsupport::TarEntry;

std::string Graphctl() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string self(buf, n > 0 ? static_cast<size_t>(n) : 0);
  return self.substr(0, self.rfind('/')) + "/../../bin/graphctl";
}

class GraphctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts, chown)";
    ASSERT_EQ(::access(Graphctl().c_str(), X_OK), 0) << Graphctl() << " not built (make tools)";
    auto dir = graph::testing::ScratchDir::Create("graphctl");
    ASSERT_TRUE(dir.ok());
    dir_ = std::move(*dir);
    root_ = dir_->path() + "/root";
  }
  void TearDown() override {
    if (dir_) {
      // Drop mounts the test may have left (overlay) before the dir goes.
      Run({"--driver", driver_, "check"});
    }
  }

 public:  // for helpers that run one scenario on several drivers
  RunResult RunP(std::vector<std::string> args, const std::string& stdin_data = "") {
    return Run(std::move(args), stdin_data);
  }

 protected:
  RunResult Run(std::vector<std::string> args, const std::string& stdin_data = "") {
    std::vector<std::string> argv = {Graphctl(), "--root", root_};
    argv.insert(argv.end(), args.begin(), args.end());
    return testsupport::Run(argv, stdin_data);
  }
  std::string Write(const std::string& name, const std::string& data) {
    std::string p = dir_->path() + "/" + name;
    testsupport::WriteFileOrDie(p, data);
    return p;
  }
  std::unique_ptr<graph::testing::ScratchDir> dir_;
  std::string root_;
  std::string driver_ = "vfs";
};

std::string Line(const RunResult& r) { return std::string(absl::StripTrailingAsciiWhitespace(r.out)); }

TEST_F(GraphctlTest, ImportCreateMountChangesDiffRemove) {
  std::string tar = BuildTar({{"etc", '5', "", "", 0755},
                              {"etc/issue", '0', "hello\n"},
                              {"bin", '5', "", "", 0755},
                              {"bin/sh", '0', "#!", "", 04755}});
  std::string tar_path = Write("base.tar", tar);
  RunResult imp = Run({"--driver", "vfs", "import", tar_path});
  ASSERT_TRUE(imp.ok()) << imp.Describe();
  std::string chain = Line(imp);
  EXPECT_EQ(chain.rfind("sha256:", 0), 0u);
  EXPECT_EQ(chain.size(), 71u);

  // The same layer again (store remembers vfs): a second reference.
  RunResult again = Run({"import", tar_path});
  ASSERT_TRUE(again.ok()) << again.Describe();
  EXPECT_EQ(Line(again), chain);

  RunResult ls = Run({"--json", "ls"});
  ASSERT_TRUE(ls.ok()) << ls.Describe();
  auto layers = nlohmann::json::parse(ls.out);
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0]["name"], chain);
  EXPECT_EQ(layers[0]["diff_id"], chain);
  EXPECT_EQ(layers[0]["refs"], 2);
  EXPECT_EQ(layers[0]["size"], 8);

  ASSERT_TRUE(Run({"create", "ctr", "--parent", chain, "--rw"}).ok());
  RunResult mount = Run({"mount", "ctr"});
  ASSERT_TRUE(mount.ok()) << mount.Describe();
  std::string dir = Line(mount);
  struct stat st;
  EXPECT_EQ(::stat((dir + "/etc/hosts").c_str(), &st), 0) << "init layer placeholder";
  EXPECT_EQ(::stat((dir + "/bin/sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  testsupport::WriteFileOrDie(dir + "/newfile", "new\n");
  ASSERT_EQ(::unlink((dir + "/etc/issue").c_str()), 0);
  RunResult umount = Run({"--json", "umount", "ctr"});
  ASSERT_TRUE(umount.ok()) << umount.Describe();
  EXPECT_EQ(nlohmann::json::parse(umount.out),
            (nlohmann::json{{"name", "ctr"}, {"unmounted", true}}));

  RunResult changes = Run({"changes", "ctr"});
  ASSERT_TRUE(changes.ok()) << changes.Describe();
  EXPECT_EQ(changes.out, "C /etc\nD /etc/issue\nA /newfile\n");

  std::string out = dir_->path() + "/ctr.tar";
  RunResult diff = Run({"diff", "ctr", "-o", out});
  ASSERT_TRUE(diff.ok()) << diff.Describe();
  RunResult listing = testsupport::Run({"tar", "-tf", out});
  ASSERT_TRUE(listing.ok()) << listing.Describe();
  EXPECT_EQ(listing.out, "etc/\netc/.wh.issue\nnewfile\n");
  // The exported diff imports as a child layer.
  RunResult child = Run({"import", "--parent", chain, out});
  ASSERT_TRUE(child.ok()) << child.Describe();
  EXPECT_NE(Line(child), chain);

  RunResult inspect = Run({"inspect", "ctr"});
  ASSERT_TRUE(inspect.ok());
  auto j = nlohmann::json::parse(inspect.out);
  EXPECT_EQ(j["kind"], "active");
  EXPECT_EQ(j["graph_driver"]["name"], "vfs");

  // rm: the image layer had two references; dropping the second one with
  // layers built on it is refused.
  RunResult dropped = Run({"--json", "rm", chain});
  ASSERT_TRUE(dropped.ok()) << dropped.Describe();
  EXPECT_EQ(nlohmann::json::parse(dropped.out),
            (nlohmann::json{{"name", chain}, {"removed", false}, {"references", 1}}));
  RunResult busy = Run({"rm", chain});
  EXPECT_EQ(busy.exit_code, 1);
  EXPECT_NE(busy.err.find("2 children"), std::string::npos) << busy.err;
  RunResult removed = Run({"--json", "rm", "ctr"});
  ASSERT_TRUE(removed.ok()) << removed.Describe();
  EXPECT_EQ(nlohmann::json::parse(removed.out),
            (nlohmann::json{{"name", "ctr"}, {"removed", true}}));
  ASSERT_TRUE(Run({"rm", Line(child)}).ok());
  ASSERT_TRUE(Run({"rm", chain}).ok());
  EXPECT_EQ(Run({"rm", chain}).exit_code, 1);
  RunResult check = Run({"check"});
  EXPECT_TRUE(check.ok()) << check.Describe();
  EXPECT_EQ(Line(Run({"--json", "ls"})), "[]");
}

TEST_F(GraphctlTest, ImportFromStdinCompressed) {
  std::string plain = BuildTar({{"f", '0', "data"}});
  std::string gz = BuildTar({{"f", '0', "data"}}, testsupport::TarFilter::kGzip);
  RunResult want = Run({"--driver", "vfs", "import", Write("plain.tar", plain)});
  ASSERT_TRUE(want.ok()) << want.Describe();
  RunResult got = Run({"import", "-"}, gz);
  ASSERT_TRUE(got.ok()) << got.Describe();
  EXPECT_EQ(Line(got), Line(want)) << "diff id is the sha256 of the uncompressed tar";
}

TEST_F(GraphctlTest, ExitCodes) {
  EXPECT_EQ(Run({}).exit_code, 2);
  EXPECT_EQ(Run({"bogus"}).exit_code, 2);
  EXPECT_EQ(Run({"--driver", "vfs", "mount"}).exit_code, 2) << "missing ID";
  EXPECT_EQ(Run({"--driver", "vfs", "ls", "--nope"}).exit_code, 2);
  EXPECT_EQ(Run({"--driver", "vfs", "create", "x", "--no-init"}).exit_code, 2);
  EXPECT_EQ(Run({"--help"}).exit_code, 0);
  RunResult other = Run({"--driver", "no-such-driver", "ls"});
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("unknown graph driver"), std::string::npos) << other.err;
  RunResult missing = Run({"--driver", "vfs", "inspect", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("not found"), std::string::npos) << missing.err;
  ASSERT_TRUE(Run({"--driver", "vfs", "ls"}).ok());
  RunResult mismatch = Run({"--driver", "overlay", "ls"});
  EXPECT_EQ(mismatch.exit_code, 1);
  EXPECT_NE(mismatch.err.find("was created with driver \"vfs\""), std::string::npos) << mismatch.err;
  RunResult status = Run({"--json", "status"});
  ASSERT_TRUE(status.ok()) << status.Describe();
  auto j = nlohmann::json::parse(status.out);
  EXPECT_EQ(j["driver"], "vfs");
  bool saw_aufs = false;
  for (const auto& d : j["drivers"]) {
    if (d["driver"] == "aufs") saw_aufs = true;
  }
  EXPECT_TRUE(saw_aufs);
}

TEST_F(GraphctlTest, HostileTarballsLeaveNothing) {
  std::string outside = dir_->path() + "/outside";
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  std::string before = testsupport::TreeFingerprint(outside);
  ASSERT_TRUE(Run({"--driver", "vfs", "ls"}).ok());
  std::vector<std::pair<std::string, std::string>> hostile = {
      {"traversal", testsupport::RawHeader("../outside/evil", '0', "0") + testsupport::TarEnd()},
      {"absolute-link-escape",
       BuildTar({{"link", '2', "", outside}, {"link/evil", '0', "x"}})},
      {"truncated", BuildTar({{"big", '0', std::string(100000, 'x')}}).substr(0, 5000)},
      {"garbage", std::string(4096, '\x7f')},
  };
  for (const auto& [name, data] : hostile) {
    RunResult r = Run({"import", Write(name + ".tar", data)});
    EXPECT_EQ(r.exit_code, 1) << name << ": " << r.Describe();
  }
  struct stat st;
  EXPECT_NE(::lstat((outside + "/evil").c_str(), &st), 0);
  EXPECT_NE(::lstat((dir_->path() + "/evil").c_str(), &st), 0);
  EXPECT_EQ(Line(Run({"--json", "ls"})), "[]");
  RunResult check = Run({"check"});
  EXPECT_TRUE(check.ok()) << "a failed import leaves no half layer: " << check.Describe();
  EXPECT_EQ(testsupport::FirstDifference(before, testsupport::TreeFingerprint(outside)), "");
}

// kill -9 in the middle of an import: nothing visible, check reports the
// interrupted create (exit 1), check --repair reaps it, the driver is empty.
TEST_F(GraphctlTest, KilledImportIsInvisibleAndRepaired) {
  ASSERT_TRUE(Run({"--driver", "vfs", "ls"}).ok());
  std::string tar = BuildTar({{"big", '0', std::string(8 << 20, 'z')}});
  int in[2];
  ASSERT_EQ(::pipe(in), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in[0], 0);
    ::close(in[0]);
    ::close(in[1]);
    std::string bin = Graphctl();
    ::execl(bin.c_str(), bin.c_str(), "--root", root_.c_str(), "import", "-", nullptr);
    ::_exit(127);
  }
  ::close(in[0]);
  // Half the tarball, then wait until the import is under way.
  size_t half = tar.size() / 2;
  ASSERT_EQ(::write(in[1], tar.data(), half), static_cast<ssize_t>(half));
  bool incomplete = false;
  for (int i = 0; i < 300 && !incomplete; ++i) {
    RunResult st = Run({"--json", "status"});
    if (st.ok()) incomplete = nlohmann::json::parse(st.out)["layers"]["incomplete"] == 1;
    if (!incomplete) ::usleep(20000);
  }
  ::kill(pid, SIGKILL);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  ::close(in[1]);
  ASSERT_TRUE(incomplete) << "the import never showed up as in progress";
  ASSERT_TRUE(WIFSIGNALED(wstatus));

  EXPECT_EQ(Line(Run({"--json", "ls"})), "[]") << "no half layer is ever visible";
  RunResult check = Run({"check"});
  EXPECT_EQ(check.exit_code, 1) << check.Describe();
  EXPECT_NE(check.out.find("interrupted create"), std::string::npos) << check.out;
  RunResult repair = Run({"check", "--repair"});
  EXPECT_TRUE(repair.ok()) << repair.Describe();
  EXPECT_NE(repair.out.find("repaired: reaped"), std::string::npos) << repair.out;
  EXPECT_TRUE(Run({"check"}).ok());
  RunResult status = Run({"--json", "status"});
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(nlohmann::json::parse(status.out)["layers"]["incomplete"], 0);
  RunResult leftovers = testsupport::Run({"find", root_ + "/vfs/dir", "-mindepth", "1", "-maxdepth", "1"});
  ASSERT_TRUE(leftovers.ok()) << leftovers.Describe();
  EXPECT_EQ(leftovers.out, "") << "driver layers left behind";
}

// --storage-opt reaches the driver: overlay's mount API chosen by option
// shows in status and mounts work with it; options the driver refuses fail
// (exit 1) naming the option; malformed ones are usage errors (exit 2)
// before anything is opened.
TEST_F(GraphctlTest, StorageOptReachesTheDriver) {
  struct stat st;
  for (const auto& [opts, want] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--storage-opt", "overlay.mount_api"}, "--storage-opt wants KEY=VALUE"},
           {{"--storage-opt", "=legacy"}, "--storage-opt '=legacy' has an empty key"},
           {{"--storage-opt", "overlay.mount_api=legacy", "--storage-opt", "overlay.mount_api=new"},
            "--storage-opt overlay.mount_api given twice"},
       }) {
    for (const char* verb : {"ls", "status"}) {
      std::vector<std::string> args = {"--driver", "overlay"};
      args.insert(args.end(), opts.begin(), opts.end());
      args.push_back(verb);
      RunResult r = Run(args);
      EXPECT_EQ(r.exit_code, 2) << r.Describe();
      EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
    }
  }
  EXPECT_NE(::stat(root_.c_str(), &st), 0) << "a usage error opened (created) the store";
  RunResult missing = Run({"--driver", "overlay", "ls", "--storage-opt"});
  EXPECT_EQ(missing.exit_code, 2) << missing.Describe();

  RunResult help = Run({"--help"});
  ASSERT_TRUE(help.ok()) << help.Describe();
  EXPECT_NE(help.out.find("--storage-opt KEY=VAL"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("--driver devicemapper --storage-opt dm.loopdatasize="), std::string::npos)
      << help.out;

  // vfs takes no options at all: the refusal names the key and the option.
  RunResult vfs = Run({"--driver", "vfs", "--storage-opt", "vfs.bogus=1", "ls"});
  EXPECT_EQ(vfs.exit_code, 1) << vfs.Describe();
  EXPECT_NE(vfs.err.find("unknown option \"vfs.bogus\""), std::string::npos) << vfs.err;
  EXPECT_NE(vfs.err.find("--storage-opt vfs.bogus=1"), std::string::npos) << vfs.err;
  ::rmdir((root_ + "/vfs").c_str());

  RunResult probe = Run({"--json", "--driver", "overlay", "--storage-opt", "overlay.mount_api=legacy", "status"});
  if (!probe.ok()) {
    auto j = nlohmann::json::parse(probe.out, nullptr, false);
    if (!j.is_discarded()) {
      for (const auto& d : j["drivers"]) {
        if (d["driver"] == "overlay" && !d["usable"].get<bool>()) GTEST_SKIP() << d["reason"];
      }
    }
  }
  ASSERT_TRUE(probe.ok()) << probe.Describe();
  driver_ = "overlay";
  auto j = nlohmann::json::parse(probe.out);
  EXPECT_EQ(j["driver"], "overlay");
  EXPECT_EQ(j["driver_status"]["Mount API"], "mount(2) with short l/ links") << probe.out;

  // The --opt=value form works too; layers mount with the legacy API.
  std::string legacy = "--storage-opt=overlay.mount_api=legacy";
  RunResult imp = Run({legacy, "import", "-"}, BuildTar({{"etc", '5', "", "", 0755}, {"etc/issue", '0', "hi\n"}}));
  ASSERT_TRUE(imp.ok()) << imp.Describe();
  ASSERT_TRUE(Run({legacy, "create", "ctr", "--parent", Line(imp), "--rw"}).ok());
  RunResult mount = Run({legacy, "mount", "ctr"});
  ASSERT_TRUE(mount.ok()) << mount.Describe();
  EXPECT_EQ(testsupport::ReadFileOrEmpty(Line(mount) + "/etc/issue"), "hi\n");
  ASSERT_TRUE(Run({legacy, "umount", "ctr"}).ok());

  // A key overlay does not know, and a value it refuses: exit 1, named.
  RunResult bogus = Run({"--storage-opt", "overlay.bogus=1", "ls"});
  EXPECT_EQ(bogus.exit_code, 1) << bogus.Describe();
  EXPECT_NE(bogus.err.find("unknown option \"overlay.bogus\""), std::string::npos) << bogus.err;
  EXPECT_NE(bogus.err.find("--storage-opt overlay.bogus=1"), std::string::npos) << bogus.err;
  RunResult value = Run({"--storage-opt", "overlay.mount_api=sideways", "ls"});
  EXPECT_EQ(value.exit_code, 1) << value.Describe();
  EXPECT_NE(value.err.find("overlay.mount_api"), std::string::npos) << value.err;

  ASSERT_TRUE(Run({"rm", "ctr"}).ok());
  ASSERT_TRUE(Run({"rm", Line(imp)}).ok());
  EXPECT_TRUE(Run({"check"}).ok());
}

TEST_F(GraphctlTest, WorksOnBtrfs) {
  auto fs = graph::testing::ScratchBtrfs::Create();
  if (!fs.ok()) GTEST_SKIP() << fs.status();
  root_ = (*fs)->path() + "/store";
  driver_ = "btrfs";
  RunResult imp = Run({"--driver", "btrfs", "import", "-"}, BuildTar({{"a", '0', "b"}}));
  ASSERT_TRUE(imp.ok()) << imp.Describe();
  ASSERT_TRUE(Run({"create", "c", "--parent", Line(imp), "--rw"}).ok());
  RunResult inspect = Run({"inspect", "c"});
  ASSERT_TRUE(inspect.ok());
  EXPECT_EQ(nlohmann::json::parse(inspect.out)["graph_driver"]["name"], "btrfs");
  ASSERT_TRUE(Run({"rm", "c"}).ok());
  ASSERT_TRUE(Run({"rm", Line(imp)}).ok());
  EXPECT_TRUE(Run({"check"}).ok());
  root_ = dir_->path() + "/root";
  driver_ = "vfs";
}

// Every codec's integrity check is enforced: one flipped byte in the
// compressed data of a gzip, zstd or xz layer (made by the real tools; gzip
// -t reports a CRC error) fails the import, and nothing is left behind.
TEST_F(GraphctlTest, CorruptCompressedLayersAreRejected) {
  RunResult random = testsupport::Run({"head", "-c", "300000", "/dev/urandom"});
  ASSERT_TRUE(random.ok()) << random.Describe();
  std::string noise = random.out;
  std::string tar = Write("noise.tar", BuildTar({{"noise", '0', noise}, {"etc/issue", '0', "hi\n"}}));
  ASSERT_TRUE(Run({"--driver", "vfs", "ls"}).ok());
  for (const std::vector<std::string>& codec :
       std::vector<std::vector<std::string>>{{"gzip", "-1"}, {"zstd", "-q"}, {"xz", "-0"}}) {
    if (!testsupport::HaveProgram(codec[0])) continue;
    std::vector<std::string> argv = codec;
    argv.insert(argv.end(), {"-c", tar});
    RunResult z = testsupport::Run(argv);
    ASSERT_TRUE(z.ok()) << z.Describe();
    std::string bad = z.out;
    bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x5a);
    std::string path = Write("bad." + codec[0], bad);
    RunResult test = testsupport::Run({codec[0], "-t", path});
    ASSERT_NE(test.exit_code, 0) << codec[0] << " -t accepts the damaged file";
    RunResult imp = Run({"import", path});
    EXPECT_EQ(imp.exit_code, 1) << codec[0] << ": " << imp.Describe();
    RunResult good = Run({"import", "-"}, z.out);
    ASSERT_TRUE(good.ok()) << codec[0] << ": " << good.Describe();
    ASSERT_TRUE(Run({"rm", Line(good)}).ok());
  }
  EXPECT_EQ(Line(Run({"--json", "ls"})), "[]");
  RunResult check = Run({"check"});
  EXPECT_TRUE(check.ok()) << check.Describe();
  RunResult leftovers = testsupport::Run({"find", root_ + "/vfs/dir", "-mindepth", "1", "-maxdepth", "1"});
  EXPECT_EQ(leftovers.out, "") << "driver layers left behind";
}

// rm of a mounted layer is refused on every driver (the mount taken by one
// graphctl process, the rm by another), naming umount as the way out; the
// layer and its mount stay; after umount, rm works; --force is the only way
// past a mount.
void RemoveMountedIsRefused(GraphctlTest& t, const std::string& driver) {
  SCOPED_TRACE(driver);
  RunResult imp = t.RunP({"--driver", driver, "import", "-"}, BuildTar({{"etc/issue", '0', "hi\n"}}));
  ASSERT_TRUE(imp.ok()) << imp.Describe();
  std::string base = Line(imp);
  for (const char* kind : {"--rw", ""}) {
    std::vector<std::string> create = {"create", "c2", "--parent", base};
    if (*kind) create.push_back(kind);
    ASSERT_TRUE(t.RunP(create).ok());
    RunResult mount = t.RunP({"mount", "c2"});
    ASSERT_TRUE(mount.ok()) << mount.Describe();
    std::string dir = Line(mount);
    RunResult rm = t.RunP({"rm", "c2"});
    EXPECT_EQ(rm.exit_code, 1) << rm.Describe();
    EXPECT_NE(rm.err.find("\"c2\": it is mounted"), std::string::npos) << rm.err;
    EXPECT_NE(rm.err.find("umount"), std::string::npos) << rm.err;
    EXPECT_EQ(testsupport::ReadFileOrEmpty(dir + "/etc/issue"), "hi\n") << "the mount was disturbed";
    ASSERT_TRUE(t.RunP({"inspect", "c2"}).ok()) << "the layer is gone after a refused rm";
    // The image layer under it is refused too (it has a child), and a
    // mounted image layer with one reference as well.
    EXPECT_EQ(t.RunP({"rm", base}).exit_code, 1);
    ASSERT_TRUE(t.RunP({"umount", "c2"}).ok());
    EXPECT_TRUE(t.RunP({"rm", "c2"}).ok());
    // --force: the only way past a mount.
    ASSERT_TRUE(t.RunP(create).ok());
    ASSERT_TRUE(t.RunP({"mount", "c2"}).ok());
    RunResult forced = t.RunP({"rm", "--force", "c2"});
    EXPECT_TRUE(forced.ok()) << forced.Describe();
    EXPECT_NE(t.RunP({"inspect", "c2"}).exit_code, 0);
  }
  ASSERT_TRUE(t.RunP({"mount", base}).ok());
  RunResult rm_base = t.RunP({"rm", base});
  EXPECT_EQ(rm_base.exit_code, 1) << rm_base.Describe();
  ASSERT_TRUE(t.RunP({"umount", base}).ok());
  EXPECT_TRUE(t.RunP({"rm", base}).ok());
  RunResult check = t.RunP({"check"});
  EXPECT_TRUE(check.ok()) << check.Describe();
}

TEST_F(GraphctlTest, RemoveMountedIsRefusedVfs) { RemoveMountedIsRefused(*this, "vfs"); }

TEST_F(GraphctlTest, RemoveMountedIsRefusedOverlay) {
  driver_ = "overlay";
  RunResult probe = Run({"--driver", "overlay", "ls"});
  if (!probe.ok()) GTEST_SKIP() << probe.err;
  RemoveMountedIsRefused(*this, "overlay");
}

TEST_F(GraphctlTest, RemoveMountedIsRefusedBtrfs) {
  auto fs = graph::testing::ScratchBtrfs::Create();
  if (!fs.ok()) GTEST_SKIP() << fs.status();
  root_ = (*fs)->path() + "/store";
  driver_ = "btrfs";
  RemoveMountedIsRefused(*this, "btrfs");
  root_ = dir_->path() + "/root";
  driver_ = "vfs";
}

// The runtime-core verbs: label (containerd's Update with labels.KEY field
// paths: set, clear, shown; the 4096-byte limit and malformed words refused
// before the store is touched), usage (bytes and inodes of every kind, the
// active layer's own data), ls --filter (containerd's expressions, `,` AND,
// `|` and repeated --filter OR; one that does not parse is exit 2 with the
// byte it fails at), and labels and times in ls.
std::set<std::string> Names(const RunResult& r) {
  std::set<std::string> names;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded()) return {"<not JSON: " + r.Describe() + ">"};
  for (const auto& l : j) names.insert(l["name"].get<std::string>());
  return names;
}

void LabelsUsageAndFilters(GraphctlTest& t, const std::string& driver) {
  SCOPED_TRACE(driver);
  RunResult imp = t.RunP({"--driver", driver, "import", "-"},
                         BuildTar({{"etc", '5', "", "", 0755}, {"etc/issue", '0', "hi\n"}}));
  ASSERT_TRUE(imp.ok()) << imp.Describe();
  std::string base = Line(imp);
  ASSERT_TRUE(t.RunP({"create", "web", "--parent", base, "--rw", "--no-init", "--label", "team=web"}).ok());
  ASSERT_TRUE(t.RunP({"create", "db", "--parent", base, "--rw", "--label", "team=db"}).ok());
  ASSERT_TRUE(t.RunP({"create", "v", "--parent", base}).ok());

  // label: set two (one dotted key), clear one; the others stay.
  RunResult set = t.RunP({"label", "web", "containerd.io/gc.root=2026", "a.b=c"});
  ASSERT_TRUE(set.ok()) << set.Describe();
  EXPECT_EQ(set.out, "a.b=c\ncontainerd.io/gc.root=2026\nteam=web\n");
  RunResult clear = t.RunP({"--json", "label", "web", "team="});
  ASSERT_TRUE(clear.ok()) << clear.Describe();
  auto web = nlohmann::json::parse(clear.out);
  EXPECT_EQ(web["labels"], nlohmann::json({{"a.b", "c"}, {"containerd.io/gc.root", "2026"}}));
  EXPECT_EQ(web["kind"], "active");
  EXPECT_GE(web["updated"].get<std::string>(), web["created"].get<std::string>());
  EXPECT_EQ(t.RunP({"label", "web"}).out, "a.b=c\ncontainerd.io/gc.root=2026\n") << "no words: shown";
  RunResult unknown = t.RunP({"label", "nosuch", "a=b"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.Describe();
  EXPECT_NE(unknown.err.find("layer \"nosuch\" not found"), std::string::npos) << unknown.err;
  // containerd's limit: key + value <= 4096 bytes.
  ASSERT_TRUE(t.RunP({"label", "db", "k=" + std::string(4095, 'v')}).ok()) << "4096 bytes is allowed";
  RunResult big = t.RunP({"label", "db", "k=" + std::string(4096, 'v'), "x=y"});
  EXPECT_EQ(big.exit_code, 1) << big.Describe();
  EXPECT_NE(big.err.find("label \"k\": key and value are 4097 bytes, more than 4096"), std::string::npos)
      << big.err;
  EXPECT_EQ(t.RunP({"label", "db", "k="}).out, "team=db\n") << "a refused edit changed nothing";
  for (const std::vector<std::string>& words :
       std::vector<std::vector<std::string>>{{"noequals"}, {"=v"}, {"a=1", "a="}}) {
    std::vector<std::string> args = {"label", "db"};
    args.insert(args.end(), words.begin(), words.end());
    RunResult r = t.RunP(args);
    EXPECT_EQ(r.exit_code, 2) << r.Describe();
  }
  EXPECT_EQ(t.RunP({"create", "big", "--parent", base, "--label", "k=" + std::string(4096, 'v')}).exit_code, 1);

  // usage: the active layer's own data, not its parent's; every kind answers.
  RunResult mount = t.RunP({"mount", "web"});
  ASSERT_TRUE(mount.ok()) << mount.Describe();
  ASSERT_EQ(::mkdir((Line(mount) + "/data").c_str(), 0755), 0);
  testsupport::WriteFileOrDie(Line(mount) + "/data/blob", std::string(100000, 'x'));
  testsupport::WriteFileOrDie(Line(mount) + "/data/small", "y");
  ASSERT_TRUE(t.RunP({"umount", "web"}).ok());
  RunResult usage = t.RunP({"--json", "usage", "web"});
  ASSERT_TRUE(usage.ok()) << usage.Describe();
  auto u = nlohmann::json::parse(usage.out);
  EXPECT_EQ(u["name"], "web");
  EXPECT_GE(u["bytes"].get<int64_t>(), 100000);
  EXPECT_LT(u["bytes"].get<int64_t>(), 1 << 20);
  EXPECT_GE(u["inodes"].get<int64_t>(), 3) << "data/, blob, small";
  EXPECT_LT(u["inodes"].get<int64_t>(), 10) << "the parent's files are not counted";
  RunResult text = t.RunP({"usage", "web"});
  ASSERT_TRUE(text.ok()) << text.Describe();
  EXPECT_NE(text.out.find(absl::StrCat("(", u["bytes"].get<int64_t>(), " bytes), ")), std::string::npos)
      << text.out;
  for (const std::string& name : {base, std::string("db"), std::string("v")}) {
    RunResult r = t.RunP({"--json", "usage", name});
    EXPECT_TRUE(r.ok()) << name << ": " << r.Describe();
  }
  RunResult nousage = t.RunP({"usage", "nosuch"});
  EXPECT_EQ(nousage.exit_code, 1) << nousage.Describe();
  EXPECT_NE(nousage.err.find("not found"), std::string::npos) << nousage.err;

  // ls --filter.
  auto ls = [&](std::vector<std::string> filters) {
    std::vector<std::string> args = {"--json", "ls"};
    for (const std::string& f : filters) {
      args.push_back("--filter");
      args.push_back(f);
    }
    return Names(t.RunP(args));
  };
  using Set = std::set<std::string>;
  EXPECT_EQ(ls({}), (Set{base, "db", "v", "web"}));
  EXPECT_EQ(ls({"kind==active"}), (Set{"db", "web"}));
  EXPECT_EQ(ls({"labels.team==db"}), (Set{"db"}));
  EXPECT_EQ(ls({"labels.\"containerd.io/gc.root\""}), (Set{"web"}));
  EXPECT_EQ(ls({"labels.a.b==c"}), (Set{"web"})) << "a dotted key as several fields";
  EXPECT_EQ(ls({"kind==view|labels.\"a.b\"==c"}), (Set{"v", "web"}));
  EXPECT_EQ(ls({"kind==active,labels.team!=db"}), (Set{"web"}));
  EXPECT_EQ(ls({"kind==committed", "name==db"}), (Set{base, "db"})) << "repeated --filter: any";
  EXPECT_EQ(ls({"name~=/^w/", "parent==" + base + ",kind==view"}), (Set{"v", "web"}));
  EXPECT_EQ(ls({"labels.nosuch==x"}), Set{});
  for (const std::string& bad : {std::string("kind=="), std::string("name~=/[/"), std::string("labels.\"open"),
                                 std::string("kind==view,")}) {
    RunResult r = t.RunP({"--json", "ls", "--filter", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.Describe();
    EXPECT_NE(r.err.find("--filter: filter"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("at byte"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "") << "nothing listed for a bad filter";
  }
  // Text ls: labels (escaped to one line) and the update time.
  ASSERT_TRUE(t.RunP({"label", "db", "note=two\nlines"}).ok());
  RunResult table = t.RunP({"ls", "--filter", "name==db"});
  ASSERT_TRUE(table.ok()) << table.Describe();
  EXPECT_NE(table.out.find("UPDATED"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("note=two\\nlines,team=db"), std::string::npos) << table.out;
  EXPECT_EQ(std::count(table.out.begin(), table.out.end(), '\n'), 2) << table.out;

  for (const std::string& name : {std::string("web"), std::string("db"), std::string("v"), base}) {
    EXPECT_TRUE(t.RunP({"rm", name}).ok()) << name;
  }
  RunResult check = t.RunP({"check"});
  EXPECT_TRUE(check.ok()) << check.Describe();
}

TEST_F(GraphctlTest, LabelsUsageAndFiltersVfs) { LabelsUsageAndFilters(*this, "vfs"); }

TEST_F(GraphctlTest, LabelsUsageAndFiltersOverlay) {
  driver_ = "overlay";
  RunResult probe = Run({"--driver", "overlay", "ls"});
  if (!probe.ok()) GTEST_SKIP() << probe.err;
  LabelsUsageAndFilters(*this, "overlay");
}

// Labels and filters are checked before the store is opened: a refused
// one makes no root.
TEST_F(GraphctlTest, BadLabelsAndFiltersTouchNothing) {
  struct stat st;
  RunResult label = Run({"--driver", "vfs", "label", "x", "k=" + std::string(5000, 'v')});
  EXPECT_EQ(label.exit_code, 1) << label.Describe();
  EXPECT_NE(label.err.find("more than 4096"), std::string::npos) << label.err;
  RunResult create = Run({"--driver", "vfs", "create", "x", "--label", "k=" + std::string(5000, 'v')});
  EXPECT_EQ(create.exit_code, 1) << create.Describe();
  RunResult filter = Run({"--driver", "vfs", "ls", "--filter", "name=="});
  EXPECT_EQ(filter.exit_code, 2) << filter.Describe();
  RunResult twice = Run({"--driver", "vfs", "create", "x", "--label", "a=1", "--label", "a=2"});
  EXPECT_EQ(twice.exit_code, 2) << twice.Describe();
  EXPECT_NE(twice.err.find("--label a given twice"), std::string::npos) << twice.err;
  EXPECT_NE(::stat(root_.c_str(), &st), 0) << "a refused argument opened (created) the store";
}

// A relative --root is made absolute at the edge: mount paths, inspect's
// driver data and overlay's lowerdirs are absolute whatever the cwd.
TEST_F(GraphctlTest, RelativeRootBecomesAbsolute) {
  auto rel = [&](std::vector<std::string> args, const std::string& in = "") {
    std::vector<std::string> argv = {"env", "-C", dir_->path(), Graphctl(), "--root", "root"};
    argv.insert(argv.end(), args.begin(), args.end());
    return testsupport::Run(argv, in);
  };
  for (const std::string driver : {"vfs", "overlay"}) {
    SCOPED_TRACE(driver);
    root_ = dir_->path() + "/root";
    RunResult imp = rel({"--driver", driver, "import", "-"}, BuildTar({{"a", '0', "b"}}));
    if (!imp.ok() && driver == "overlay") GTEST_SKIP() << imp.err;
    ASSERT_TRUE(imp.ok()) << imp.Describe();
    ASSERT_TRUE(rel({"create", "c", "--parent", Line(imp), "--rw"}).ok());
    RunResult mount = rel({"mount", "c"});
    ASSERT_TRUE(mount.ok()) << mount.Describe();
    EXPECT_EQ(Line(mount).rfind(root_ + "/" + driver + "/", 0), 0u) << Line(mount);
    RunResult inspect = rel({"inspect", "c"});
    ASSERT_TRUE(inspect.ok()) << inspect.Describe();
    EXPECT_EQ(inspect.out.find("\"root/"), std::string::npos) << inspect.out;
    auto j = nlohmann::json::parse(inspect.out);
    for (const auto& [k, v] : j["graph_driver"]["data"].items()) {
      if (!absl::EndsWith(k, "Dir")) continue;  // LowerDir, UpperDir, Dir, ...
      for (absl::string_view p : absl::StrSplit(v.get<std::string>(), ':')) {
        EXPECT_EQ(p.substr(0, 1), "/") << k << "=" << v;
      }
    }
    RunResult status = rel({"--json", "status"});
    EXPECT_EQ(nlohmann::json::parse(status.out)["root"], root_);
    ASSERT_TRUE(rel({"umount", "c"}).ok());
    ASSERT_TRUE(rel({"rm", "c"}).ok());
    ASSERT_TRUE(rel({"rm", Line(imp)}).ok());
    ASSERT_EQ(testsupport::Run({"rm", "-rf", root_}).exit_code, 0);
  }
  driver_ = "vfs";
}

// A store knows it is a store: a deleted, emptied or foreign registry next
// to driver data is an error naming the recovery (never a fresh, empty
// registry), and check --repair keeps driver data it cannot account for
// unless --prune is typed.
TEST_F(GraphctlTest, LostRegistryIsNeverAFreshStart) {
  RunResult imp = Run({"--driver", "vfs", "import", "-"}, BuildTar({{"a", '0', "b"}}));
  ASSERT_TRUE(imp.ok()) << imp.Describe();
  std::string db = root_ + "/layers.db";
  std::string saved = testsupport::ReadFileOrEmpty(db);
  ASSERT_FALSE(saved.empty()) << "the registry's content lives in layers.db, not only in its WAL";
  // Deleted.
  ASSERT_EQ(::unlink(db.c_str()), 0);
  ::unlink((db + "-wal").c_str());
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"ls"}, {"--driver", "vfs", "check", "--repair"}, {"--driver", "overlay", "ls"}}) {
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 1) << r.Describe();
    EXPECT_NE(r.err.find("no registry (layers.db)"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("restore"), std::string::npos) << r.err;
  }
  struct stat st;
  EXPECT_NE(::stat(db.c_str(), &st), 0) << "a new registry was made over the old layers";
  // Emptied, and foreign.
  testsupport::WriteFileOrDie(db, "");
  RunResult empty = Run({"ls"});
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_NE(empty.err.find("is empty (0 bytes)"), std::string::npos) << empty.err;
  testsupport::WriteFileOrDie(db, std::string(8192, 'g'));
  RunResult garbage = Run({"ls"});
  EXPECT_EQ(garbage.exit_code, 1);
  EXPECT_NE(garbage.err.find("restore it from a backup"), std::string::npos) << garbage.err;
  // Back: all there.
  testsupport::WriteFileOrDie(db, saved);
  RunResult ls = Run({"--json", "ls"});
  ASSERT_TRUE(ls.ok()) << ls.Describe();
  EXPECT_EQ(nlohmann::json::parse(ls.out).size(), 1u);
  // A driver layer no record owns is reported, kept by --repair, deleted by
  // --prune only.
  ASSERT_EQ(testsupport::Run({"cp", "-a", root_ + "/vfs/dir/" +
                                          nlohmann::json::parse(ls.out)[0]["cache_id"].get<std::string>(),
                              root_ + "/vfs/dir/stray"}).exit_code, 0);
  RunResult repair = Run({"check", "--repair"});
  EXPECT_EQ(repair.exit_code, 1) << repair.Describe();
  EXPECT_NE(repair.out.find("driver layer stray"), std::string::npos) << repair.out;
  EXPECT_EQ(::stat((root_ + "/vfs/dir/stray").c_str(), &st), 0) << "repair deleted unaccounted data";
  EXPECT_EQ(Run({"check", "--prune"}).exit_code, 2);
  EXPECT_TRUE(Run({"check", "--repair", "--prune"}).ok());
  EXPECT_NE(::stat((root_ + "/vfs/dir/stray").c_str(), &st), 0);
  // A non-empty directory that is no store is not made one; an unknown
  // driver makes no directory.
  std::string foreign = dir_->path() + "/foreign";
  ASSERT_EQ(::mkdir(foreign.c_str(), 0755), 0);
  testsupport::WriteFileOrDie(foreign + "/notes.txt", "mine");
  RunResult other = testsupport::Run({Graphctl(), "--root", foreign, "--driver", "vfs", "ls"});
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("is not a layer store"), std::string::npos) << other.err;
  std::string fresh = dir_->path() + "/fresh";
  RunResult nosuch = testsupport::Run({Graphctl(), "--root", fresh, "--driver", "nosuch", "ls"});
  EXPECT_EQ(nosuch.exit_code, 1);
  EXPECT_NE(::stat(fresh.c_str(), &st), 0) << "--driver nosuch made the root";
}

// Names and labels are UTF-8 (validated at the edge); what the filesystem
// holds is printed safely: --json never aborts (bytes that are not UTF-8
// become U+FFFD), text output escapes newlines and raw bytes. Importing an
// existing layer with --label sets the label. check runs SQLite's own check.
TEST_F(GraphctlTest, HostileBytesNeverBreakOutput) {
  std::string bad_name = "c\xff\xfe";
  RunResult imp = Run({"--driver", "vfs", "import", "-"}, BuildTar({{"a", '0', "b"}}));
  ASSERT_TRUE(imp.ok()) << imp.Describe();
  std::string base = Line(imp);
  EXPECT_EQ(Run({"create", bad_name, "--parent", base, "--rw"}).exit_code, 1);
  ASSERT_TRUE(Run({"create", "x\ny", "--parent", base}).ok()) << "containerd keys may hold newlines";
  RunResult ls = Run({"ls"});
  EXPECT_NE(ls.out.find("x\\ny "), std::string::npos) << "text ls escapes the newline: " << ls.out;
  ASSERT_TRUE(Run({"rm", "x\ny"}).ok());
  EXPECT_EQ(Run({"create", "l", "--parent", base, "--label", "k=\xff"}).exit_code, 1);
  EXPECT_EQ(Run({"import", "--label", "k=\xff", "-"}, BuildTar({{"a", '0', "b"}})).exit_code, 1);
  // Re-import with a label: set on the existing layer.
  RunResult again = Run({"--json", "import", "--label", "origin=test", "-"}, BuildTar({{"a", '0', "b"}}));
  ASSERT_TRUE(again.ok()) << again.Describe();
  EXPECT_EQ(nlohmann::json::parse(again.out)["labels"]["origin"], "test");
  // A container process plants file names with newlines and raw bytes.
  ASSERT_TRUE(Run({"create", "ctr", "--parent", base, "--rw", "--label", "note=\u00e9t\u00e9"}).ok());
  RunResult mount = Run({"mount", "ctr"});
  ASSERT_TRUE(mount.ok()) << mount.Describe();
  testsupport::WriteFileOrDie(Line(mount) + "/evil\nA etc-passwd", "x");
  testsupport::WriteFileOrDie(Line(mount) + "/raw\xff\x1b[2J", "x");
  ASSERT_TRUE(Run({"umount", "ctr"}).ok());
  RunResult changes = Run({"changes", "ctr"});
  ASSERT_TRUE(changes.ok()) << changes.Describe();
  EXPECT_NE(changes.out.find("A /evil\\nA etc-passwd\n"), std::string::npos) << changes.out;
  EXPECT_NE(changes.out.find("A /raw\\xff\\x1b[2J\n"), std::string::npos) << changes.out;
  RunResult json = Run({"--json", "changes", "ctr"});
  ASSERT_TRUE(json.ok()) << json.Describe();
  auto list = nlohmann::json::parse(json.out);
  bool replaced = false;
  for (const auto& c : list) replaced |= c["path"].get<std::string>().find("\xef\xbf\xbd") != std::string::npos;
  EXPECT_TRUE(replaced) << json.out;
  for (const char* verb : {"ls", "status", "check"}) {
    RunResult r = Run({"--json", verb});
    EXPECT_TRUE(r.ok()) << verb << ": " << r.Describe();
    EXPECT_FALSE(nlohmann::json::parse(r.out, nullptr, false).is_discarded()) << r.out;
  }
  RunResult inspect = Run({"inspect", "ctr"});
  ASSERT_TRUE(inspect.ok()) << inspect.Describe();
  EXPECT_EQ(nlohmann::json::parse(inspect.out)["labels"]["note"], "\u00e9t\u00e9");
  ASSERT_TRUE(Run({"rm", "ctr"}).ok());
}

// A full filesystem: opening the store writes nothing, so reads, umount, rm
// and check still work; what cannot be done says "No space left on device".
// The store sits on a small tmpfs (SQLite's WAL index is a shared mapping
// there: a write to a page the full tmpfs cannot back is SIGBUS).
TEST_F(GraphctlTest, FullDiskKeepsTheStoreUsable) {
  std::string small = dir_->path() + "/small";
  ASSERT_EQ(::mkdir(small.c_str(), 0755), 0);
  ASSERT_EQ(::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=8m"), 0) << strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{small};
  root_ = small + "/root";
  RunResult imp = Run({"--driver", "vfs", "import", "-"}, BuildTar({{"etc", '5', "", "", 0755},
                                                                    {"etc/issue", '0', "hello\n"}}));
  ASSERT_TRUE(imp.ok()) << imp.Describe();
  std::string base = Line(imp);
  ASSERT_TRUE(Run({"create", "ctr", "--parent", base, "--rw"}).ok());
  RunResult mount = Run({"mount", "ctr"});
  ASSERT_TRUE(mount.ok()) << mount.Describe();
  // Fill the filesystem to the last byte.
  {
    base::UniqueFd fd(::open((small + "/filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd.valid()) << strerror(errno);
    std::string chunk(64 << 10, 'x');
    for (size_t size = chunk.size(); size > 0; size /= 2) {
      while (::write(fd.get(), chunk.data(), size) == static_cast<ssize_t>(size)) {
      }
    }
    ASSERT_EQ(errno, ENOSPC);
  }
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"ls"}, {"--json", "ls"}, {"inspect", "ctr"}, {"status"}, {"check"}}) {
    RunResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << absl::StrJoin(args, " ") << " on a full disk: " << r.Describe();
  }
  RunResult more = Run({"import", "-"}, BuildTar({{"big", '0', std::string(1 << 20, 'b')}}));
  EXPECT_EQ(more.exit_code, 1) << more.Describe();
  EXPECT_NE(more.err.find("No space left on device"), std::string::npos) << more.err;
  // Freeing space with the tool itself works.
  EXPECT_TRUE(Run({"umount", "ctr"}).ok());
  RunResult rm = Run({"rm", "ctr"});
  EXPECT_TRUE(rm.ok()) << "rm on a full disk: " << rm.Describe();
  RunResult check = Run({"check", "--repair"});
  EXPECT_TRUE(check.ok()) << check.Describe();
  ASSERT_EQ(::unlink((small + "/filler").c_str()), 0);
  RunResult after = Run({"--json", "ls"});
  ASSERT_TRUE(after.ok()) << after.Describe();
  EXPECT_EQ(nlohmann::json::parse(after.out).size(), 1u) << after.out;
  EXPECT_TRUE(Run({"check"}).ok());
  EXPECT_TRUE(Run({"rm", base}).ok());
}

// Fills the filesystem at `dir` to the last byte: files written until
// ENOSPC, synced, and again, until a sync gives nothing back (btrfs returns
// reserved space at a commit). Synced, the pages SQLite maps are clean: the
// next write to one is a page fault that must find space (page_mkwrite).
void FillFilesystem(const std::string& dir) {
  std::string chunk(1 << 20, 'x');
  for (int round = 0; round < 8; ++round) {
    base::UniqueFd fd(::open(absl::StrCat(dir, "/filler", testsupport::UniqueName("f")).c_str(),
                             O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) {
      ASSERT_EQ(errno, ENOSPC) << strerror(errno);
      ::sync();
      continue;
    }
    size_t written = 0;
    for (size_t size = chunk.size(); size >= 512; size /= 2) {
      ssize_t n;
      while ((n = ::write(fd.get(), chunk.data(), size)) == static_cast<ssize_t>(size)) written += size;
      ASSERT_TRUE(n >= 0 || errno == ENOSPC) << strerror(errno);
    }
    ASSERT_EQ(::syncfs(fd.get()), 0) << strerror(errno);
    if (written == 0 && round > 1) break;
  }
}

// A full filesystem under a store (a loop btrfs with the btrfs driver, a
// loop ext4 with vfs): reads, mounting an existing layer, umount and rm
// work, and nothing dies of a signal; an import or create that finds no
// space fails with "No space left on device" and leaves the store as it
// was (check is clean); rm frees space for the next import. Before the
// fix, on btrfs: every command died of SIGBUS (the registry's WAL index was
// copy-on-write: writing a clean mapped page needed space), and rm could not
// make its lock file.
void FullFilesystemKeepsTheStoreUsable(GraphctlTest& t, const std::string& mnt,
                                       const std::string& driver) {
  auto no_signal = [](const RunResult& r) { return r.exit_code >= 0 && r.exit_code < 128; };
  RunResult imp = t.RunP({"--driver", driver, "import", "-"},
                         BuildTar({{"etc", '5', "", "", 0755}, {"etc/issue", '0', "hello\n"}}));
  ASSERT_TRUE(imp.ok()) << imp.Describe();
  std::string base = Line(imp);
  ASSERT_TRUE(t.RunP({"create", "ctr", "--parent", base, "--rw"}).ok());
  RunResult mount = t.RunP({"mount", "ctr"});
  ASSERT_TRUE(mount.ok()) << mount.Describe();
  FillFilesystem(mnt);
  if (::testing::Test::HasFatalFailure()) return;
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"ls"}, {"--json", "ls"}, {"inspect", "ctr"}, {"status"}, {"check"},
           {"mount", base}, {"umount", base}}) {
    RunResult r = t.RunP(args);
    EXPECT_EQ(r.exit_code, 0) << absl::StrJoin(args, " ") << " on a full " << driver << ": " << r.Describe();
  }
  RunResult more = t.RunP({"import", "-"}, BuildTar({{"big", '0', std::string(4 << 20, 'b')}}));
  EXPECT_EQ(more.exit_code, 1) << more.Describe();
  EXPECT_NE(more.err.find("No space left on device"), std::string::npos) << more.err;
  RunResult check = t.RunP({"check"});
  EXPECT_TRUE(check.ok()) << "a failed import left the store inconsistent: " << check.Describe();
  // Freeing space with the tool itself works.
  RunResult umount = t.RunP({"umount", "ctr"});
  EXPECT_TRUE(umount.ok()) << "umount on a full disk: " << umount.Describe();
  RunResult rm = t.RunP({"rm", "ctr"});
  EXPECT_TRUE(rm.ok()) << "rm on a full disk: " << rm.Describe();
  // A create that finds no space fails with ENOSPC and shows nothing. When
  // btrfs refuses even the commit of its undo, an invisible record remains
  // that check reports and check --repair reaps once there is space.
  FillFilesystem(mnt);
  if (::testing::Test::HasFatalFailure()) return;
  for (int i = 0; i < 4; ++i) {  // snapshots are cheap: some may fit
    RunResult made = t.RunP({"create", absl::StrCat("c", i), "--parent", base, "--rw"});
    EXPECT_TRUE(no_signal(made)) << made.Describe();
    if (!made.ok()) {
      EXPECT_NE(made.err.find("No space left on device"), std::string::npos) << made.err;
      break;
    }
    EXPECT_TRUE(t.RunP({"rm", absl::StrCat("c", i)}).ok());
  }
  RunResult listed = t.RunP({"--json", "ls"});
  ASSERT_TRUE(listed.ok()) << listed.Describe();
  EXPECT_EQ(nlohmann::json::parse(listed.out).size(), 1u) << listed.out;
  for (const auto& entry : std::filesystem::directory_iterator(mnt)) {
    if (absl::StartsWith(entry.path().filename().string(), "filler")) std::filesystem::remove(entry.path());
  }
  ::sync();
  RunResult repair = t.RunP({"check", "--repair"});
  EXPECT_TRUE(repair.ok()) << repair.Describe();
  RunResult again = t.RunP({"import", "-"}, BuildTar({{"big", '0', std::string(4 << 20, 'b')}}));
  ASSERT_TRUE(again.ok()) << again.Describe();
  RunResult after = t.RunP({"--json", "ls"});
  ASSERT_TRUE(after.ok()) << after.Describe();
  EXPECT_EQ(nlohmann::json::parse(after.out).size(), 2u) << after.out;
  EXPECT_TRUE(t.RunP({"check"}).ok());
  EXPECT_TRUE(t.RunP({"rm", Line(again)}).ok());
  EXPECT_TRUE(t.RunP({"rm", base}).ok());
}

TEST_F(GraphctlTest, FullBtrfsKeepsTheStoreUsable) {
  auto fs = graph::testing::ScratchBtrfs::CreateOf("btrfs", {"mkfs.btrfs", "-q", "-f", "--mixed"}, "", 256);
  if (!fs.ok()) GTEST_SKIP() << fs.status();
  root_ = (*fs)->path() + "/store";
  driver_ = "btrfs";
  absl::Cleanup back = [&] {
    root_ = dir_->path() + "/root";
    driver_ = "vfs";
  };
  FullFilesystemKeepsTheStoreUsable(*this, (*fs)->path(), "btrfs");
  // What a full btrfs must rewrite in place (a mapped copy-on-write page
  // that needs space is SIGBUS) is no-copy-on-write.
  for (const char* file : {"layers.db", "layers.db-wal", "layers.db-shm"}) {
    base::UniqueFd fd(::open((root_ + "/" + file).c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd.valid()) << file << ": " << strerror(errno);
    int flags = 0;
    ASSERT_EQ(::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags), 0) << strerror(errno);
    EXPECT_NE(flags & FS_NOCOW_FL, 0) << file << " is copy-on-write";
  }
}

TEST_F(GraphctlTest, FullExt4KeepsTheStoreUsable) {
  auto fs = graph::testing::ScratchBtrfs::CreateOf("ext4", {"mkfs.ext4", "-q", "-F"}, "", 64);
  if (!fs.ok()) GTEST_SKIP() << fs.status();
  root_ = (*fs)->path() + "/store";
  absl::Cleanup back = [&] { root_ = dir_->path() + "/root"; };
  FullFilesystemKeepsTheStoreUsable(*this, (*fs)->path(), "vfs");
}

}  // namespace
