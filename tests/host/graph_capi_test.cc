// Runs the C11 program tests/host/graph_capi_c.c (linked against
// libgraph.so through graph.h only) against real drivers, checks driver
// options through graph_store_open_opts, and checks that libgraph.pc.in
// gives a usable pkg-config file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "graph.h"
#include "gtest/gtest.h"
#include "tests/support/graph_conformance.h"
#include "tests/support/graph_tar.h"

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

TEST(GraphCapi, CProgramOnVfs) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown on import)";
  ASSERT_EQ(::access(Program().c_str(), X_OK), 0) << Program() << " not built";
  auto dir = ScratchDir::Create("graph-capi-vfs");
  ASSERT_TRUE(dir.ok());
  std::string out;
  absl::Status s = RunProgram({Program(), (*dir)->path() + "/store", "vfs"}, &out);
  EXPECT_TRUE(s.ok()) << s << "\n" << out;
  EXPECT_NE(out.find("PASS"), std::string::npos) << out;
}

// graph_store_open_opts: malformed entries are GRAPH_EINVAL with a message
// naming the entry, and nothing is opened or created.
TEST(GraphCapiOptions, MalformedOptionsOpenNothing) {
  auto dir = ScratchDir::Create("graph-capi-opts");
  ASSERT_TRUE(dir.ok());
  std::string root = (*dir)->path() + "/store";
  struct Case {
    std::vector<const char*> options;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"overlay.mount_api", nullptr}, "options[0] \"overlay.mount_api\" is not key=value"},
           {{"overlay.mount_api=legacy", "=legacy", nullptr}, "options[1] \"=legacy\" has an empty key"},
           {{"overlay.mount_api=legacy", "overlay.mount_api=new", nullptr},
            "option overlay.mount_api given twice"},
       }) {
    graph_store* store = reinterpret_cast<graph_store*>(0x1);
    EXPECT_EQ(graph_store_open_opts(root.c_str(), "overlay", c.options.data(), &store), GRAPH_EINVAL);
    EXPECT_EQ(store, nullptr);
    EXPECT_NE(std::string(graph_last_error()).find(c.message), std::string::npos) << graph_last_error();
  }
  struct stat st;
  EXPECT_NE(::stat(root.c_str(), &st), 0) << "malformed options created the store";
  const char* fine[] = {"overlay.mount_api=legacy", nullptr};
  EXPECT_EQ(graph_store_open_opts(nullptr, "overlay", fine, nullptr), GRAPH_EINVAL);
}

// A key the driver does not know, or a value it refuses: GRAPH_EINVAL from
// the driver, naming the key.
TEST(GraphCapiOptions, DriverRefusalNamesTheKey) {
  auto dir = ScratchDir::Create("graph-capi-opts");
  ASSERT_TRUE(dir.ok());
  std::string root = (*dir)->path() + "/store";
  graph_store* store = nullptr;
  const char* unknown[] = {"vfs.size=10G", nullptr};
  EXPECT_EQ(graph_store_open_opts(root.c_str(), "vfs", unknown, &store), GRAPH_EINVAL);
  EXPECT_EQ(store, nullptr);
  std::string message = graph_last_error();
  EXPECT_NE(message.find("unknown option \"vfs.size\""), std::string::npos) << message;
  EXPECT_NE(message.find("with options vfs.size=10G"), std::string::npos) << message;
  // No options (NULL, or an empty list) opens the same store.
  ASSERT_EQ(graph_store_open_opts(root.c_str(), "vfs", nullptr, &store), GRAPH_OK) << graph_last_error();
  EXPECT_STREQ(graph_store_driver(store), "vfs");
  graph_store_close(store);
}

// overlay.mount_api reaches overlay: "legacy" opens and serves a layer,
// a value overlay refuses fails naming the option.
TEST(GraphCapiOptions, OverlayMountApi) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  auto dir = ScratchDir::Create("graph-capi-overlay");
  ASSERT_TRUE(dir.ok());
  std::string root = (*dir)->path() + "/store";
  graph_store* store = nullptr;
  const char* sideways[] = {"overlay.mount_api=sideways", nullptr};
  int rc = graph_store_open_opts(root.c_str(), "overlay", sideways, &store);
  if (rc == GRAPH_EUNSUPPORTED) GTEST_SKIP() << graph_last_error();
  EXPECT_EQ(rc, GRAPH_EINVAL);
  EXPECT_NE(std::string(graph_last_error()).find("overlay.mount_api"), std::string::npos) << graph_last_error();

  const char* legacy[] = {"overlay.mount_api=legacy", nullptr};
  ASSERT_EQ(graph_store_open_opts(root.c_str(), "overlay", legacy, &store), GRAPH_OK) << graph_last_error();
  EXPECT_STREQ(graph_store_driver(store), "overlay");
  std::string tar_path = (*dir)->path() + "/layer.tar";
  testsupport::WriteFileOrDie(tar_path, testsupport::BuildTar({{"hello", '0', "from C\n"}}));
  int fd = ::open(tar_path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  char* chain = nullptr;
  EXPECT_EQ(graph_import_fd(store, fd, nullptr, &chain), GRAPH_OK) << graph_last_error();
  ::close(fd);
  ASSERT_NE(chain, nullptr);
  ASSERT_EQ(graph_create(store, "ctr", chain, GRAPH_LAYER_ACTIVE), GRAPH_OK) << graph_last_error();
  char* path = nullptr;
  ASSERT_EQ(graph_mount(store, "ctr", &path), GRAPH_OK) << graph_last_error();
  EXPECT_EQ(testsupport::ReadFileOrEmpty(std::string(path) + "/hello"), "from C\n");
  graph_free(path);
  EXPECT_EQ(graph_umount(store, "ctr"), GRAPH_OK) << graph_last_error();
  EXPECT_EQ(graph_remove(store, "ctr"), GRAPH_OK) << graph_last_error();
  EXPECT_EQ(graph_remove(store, chain), GRAPH_OK) << graph_last_error();
  graph_free(chain);
  graph_store_close(store);
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
