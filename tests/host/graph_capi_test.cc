// Runs the C11 program tests/host/graph_capi_c.c (linked against
// libgraph.so through graph.h only) against real drivers, and checks that
// libgraph.pc.in gives a usable pkg-config file.
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/graph_conformance.h"

namespace graph::testing {
namespace {

std::string BinDir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string self(buf, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/'));
}

std::string Program() { return BinDir() + "/graph_capi_c"; }

TEST(GraphCapi, CProgramOnBtrfs) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  ASSERT_EQ(::access(Program().c_str(), X_OK), 0) << Program() << " not built";
  auto fs = ScratchBtrfs::Create();
  if (!fs.ok()) GTEST_SKIP() << fs.status();
  std::string out;
  absl::Status s = RunProgram({Program(), (*fs)->path() + "/store", "btrfs"}, &out);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_NE(out.find("PASS"), std::string::npos) << out;
}

TEST(GraphCapi, CProgramReportsUnsupportedDriver) {
  ASSERT_EQ(::access(Program().c_str(), X_OK), 0);
  auto dir = ScratchDir::Create("graph-capi");
  ASSERT_TRUE(dir.ok());
  std::string out;
  // /tmp is not btrfs: opening fails with the typed reason, the program
  // reports it and exits 1.
  absl::Status s = RunProgram({Program(), (*dir)->path() + "/store", "btrfs"}, &out);
  if (::geteuid() != 0) GTEST_SKIP();
  std::string probe;
  if (RunProgram({"stat", "-f", "-c", "%T", (*dir)->path()}, &probe).ok() &&
      probe.find("btrfs") != std::string::npos) {
    GTEST_SKIP() << "scratch dir is on btrfs";
  }
  EXPECT_FALSE(s.ok());
  EXPECT_NE(out.find("not supported here"), std::string::npos) << out;
  EXPECT_NE(out.find("not btrfs"), std::string::npos) << out;
}

TEST(GraphCapi, PkgConfigFile) {
  std::string in_path = BinDir() + "/../../../graph/libgraph.pc.in";
  std::ifstream in(in_path);
  if (!in) GTEST_SKIP() << "no " << in_path;
  std::stringstream ss;
  ss << in.rdbuf();
  std::string pc = ss.str();
  for (auto [from, to] : {std::pair<std::string, std::string>{"@PREFIX@", "/opt/dmthin"},
                          {"@LIBDIR@", "/opt/dmthin/lib"},
                          {"@INCDIR@", "/opt/dmthin/include"}}) {
    for (size_t pos; (pos = pc.find(from)) != std::string::npos;) pc.replace(pos, from.size(), to);
  }
  auto dir = ScratchDir::Create("graph-pc");
  ASSERT_TRUE(dir.ok());
  std::ofstream((*dir)->path() + "/libgraph.pc") << pc;
  std::string out;
  ::setenv("PKG_CONFIG_PATH", (*dir)->path().c_str(), 1);
  absl::Status s = RunProgram({"pkg-config", "--cflags", "--libs", "libgraph"}, &out);
  ::unsetenv("PKG_CONFIG_PATH");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_NE(out.find("-I/opt/dmthin/include"), std::string::npos) << out;
  EXPECT_NE(out.find("-L/opt/dmthin/lib -lgraph"), std::string::npos) << out;
}

}  // namespace
}  // namespace graph::testing
