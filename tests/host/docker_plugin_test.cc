// dmthin-docker-plugin speaking Docker's graph-driver plugin protocol, driven
// the way dockerd drives it (HTTP + JSON on its unix socket; cpp-httplib's
// client), on the vfs driver in a scratch directory: the socket's
// permissions, every method, bad requests that must change nothing, and
// SIGTERM finishing a request in flight. The real dockerd is in
// docker_dockerd_test.
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "graph/store.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "tests/support/daemon.h"
#include "tests/support/graph_tar.h"
#include "tests/support/process.h"
#include "tests/support/scratch_dir.h"

namespace {

using Json = nlohmann::json;
using testsupport::BuildTar;
using testsupport::Daemon;
using testsupport::ScratchDir;
using testsupport::TarEntry;
using namespace std::chrono_literals;

struct Reply {
  int status = -1;  // -1: no HTTP reply at all
  std::string body;
  Json json() const { return Json::parse(body, nullptr, false); }
  std::string err() const {
    Json j = json();
    return j.is_object() && j.contains("Err") && j["Err"].is_string() ? j["Err"].get<std::string>() : "";
  }
};

class DockerPluginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (the plugin's socket is root-only)";
    dir_ = std::make_unique<ScratchDir>("docker-plugin");
    root_ = dir_->Sub("root");
    socket_ = dir_->Sub("plugin.sock");
  }

  std::unique_ptr<Daemon> StartPlugin(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {testsupport::BuiltTool("dmthin-docker-plugin"), "--root", root_,
                                     "--socket", socket_, "--driver", "vfs"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto d = Daemon::Start(argv, dir_->Sub("plugin.log"));
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return nullptr;
    absl::Status up = (*d)->WaitForListening(socket_);
    EXPECT_TRUE(up.ok()) << up << "\n" << (*d)->Log();
    return std::move(*d);
  }

  httplib::Client Client() {
    httplib::Client cli(socket_);
    cli.set_address_family(AF_UNIX);
    cli.set_read_timeout(30, 0);
    return cli;
  }

  Reply Call(const std::string& method, const std::string& body) {
    httplib::Client cli = Client();
    auto res = cli.Post(("/" + method).c_str(), body, "application/json");
    if (!res) return {};
    return {res->status, res->body};
  }
  Reply CallJson(const std::string& method, const Json& body) { return Call(method, body.dump()); }

  Reply ApplyDiff(const std::string& id, const std::string& parent, const std::string& tar) {
    httplib::Client cli = Client();
    std::string path = "/GraphDriver.ApplyDiff?id=" + id + "&parent=" + parent;
    // Chunked, as dockerd sends it (a tar of unknown length).
    auto res = cli.Post(
        path.c_str(),
        [&](size_t offset, httplib::DataSink& sink) {
          size_t n = std::min<size_t>(tar.size() - offset, 4096);
          if (n > 0) sink.write(tar.data() + offset, n);
          if (offset + n == tar.size()) sink.done();
          return true;
        },
        "application/x-tar");
    if (!res) return {};
    return {res->status, res->body};
  }

  // What the plugin keeps: the driver's files and the layers the store
  // shows (opened beside the running plugin, as graphctl would), not the
  // registry's bytes (a refused import writes and drops its record).
  std::string Fingerprint() {
    std::string out = testsupport::TreeFingerprint(root_ + "/vfs");
    auto store = graph::OpenLayerStore(root_, "vfs");
    if (!store.ok()) return out + "store: " + store.status().ToString();
    auto layers = (*store)->List();
    if (!layers.ok()) return out + "list: " + layers.status().ToString();
    for (const graph::LayerInfo& l : *layers) {
      out += "layer " + l.name + " " + graph::LayerKindName(l.kind) + " on '" + l.parent + "' " + l.cache_id + "\n";
    }
    auto check = (*store)->Check(/*repair=*/false);
    out += check.ok() ? absl::StrCat("check problems: ", check->problems.size(), "\n") : check.status().ToString();
    return out;
  }

  std::unique_ptr<ScratchDir> dir_;
  std::string root_;
  std::string socket_;
};

std::string BaseTar() {
  return BuildTar({{.path = "etc", .type = '5', .mode = 0755},
                   {.path = "etc/hello", .type = '0', .data = "hello\n"},
                   {.path = "etc/doomed", .type = '0', .data = "bye\n"}});
}

TEST_F(DockerPluginTest, SocketIsRootOnlyAndActivateNamesTheRole) {
  auto plugin = StartPlugin();
  ASSERT_NE(plugin, nullptr);
  struct stat st;
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);
  Reply r = Call("Plugin.Activate", std::string());
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.json(), Json::parse(R"({"Implements":["GraphDriver"]})"));
  EXPECT_EQ(Call("GraphDriver.NoSuchMethod", std::string("{}")).status, 404);
  EXPECT_EQ(plugin->Stop(SIGTERM).value_or(-1), 0);
  EXPECT_NE(::access(socket_.c_str(), F_OK), 0) << "socket left behind";
}

TEST_F(DockerPluginTest, GroupMakesTheSocket0660) {
  struct group* g = ::getgrnam("daemon");
  if (g == nullptr) GTEST_SKIP() << "no group 'daemon'";
  auto plugin = StartPlugin({"--group", "daemon"});
  ASSERT_NE(plugin, nullptr);
  struct stat st;
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, g->gr_gid);
}

TEST_F(DockerPluginTest, StaleSocketIsReplacedALiveOneRefused) {
  auto first = StartPlugin();
  ASSERT_NE(first, nullptr);
  // Another plugin on the same live socket refuses to start.
  auto second = Daemon::Start({testsupport::BuiltTool("dmthin-docker-plugin"), "--root", dir_->Sub("root2"),
                               "--socket", socket_, "--driver", "vfs"},
                              dir_->Sub("second.log"));
  ASSERT_TRUE(second.ok());
  for (int i = 0; i < 200 && (*second)->running(); ++i) std::this_thread::sleep_for(50ms);
  EXPECT_EQ((*second)->Stop(SIGTERM).value_or(-1), 1);
  EXPECT_NE((*second)->Log().find("already listening"), std::string::npos) << (*second)->Log();
  // A crashed plugin leaves its socket; the next one replaces it.
  first->Stop(SIGKILL).IgnoreError();
  ASSERT_EQ(::access(socket_.c_str(), F_OK), 0);
  auto third = StartPlugin();
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(Call("Plugin.Activate", std::string()).status, 200);
}

TEST_F(DockerPluginTest, EveryMethodAsDockerdCallsIt) {
  auto plugin = StartPlugin();
  ASSERT_NE(plugin, nullptr);
  EXPECT_EQ(CallJson("GraphDriver.Init", Json{{"Home", "/var/lib/docker/x"}, {"Opts", Json::array()},
                                          {"UIDMaps", nullptr}, {"GIDMaps", nullptr}})
                .status,
            200);
  Reply caps = Call("GraphDriver.Capabilities", std::string("{}"));
  EXPECT_EQ(caps.json(), Json::parse(R"({"Capabilities":{"ReproducesExactDiffs":false}})"));

  // docker load: Create + ApplyDiff.
  ASSERT_EQ(CallJson("GraphDriver.Create", Json{{"ID", "base"}}).status, 200);
  Reply applied = ApplyDiff("base", "", BaseTar());
  ASSERT_EQ(applied.status, 200) << applied.body;
  EXPECT_EQ(applied.json()["Size"], 10);
  EXPECT_EQ(CallJson("GraphDriver.Exists", Json{{"ID", "base"}}).json()["Exists"], true);
  EXPECT_FALSE(CallJson("GraphDriver.Exists", Json{{"ID", "nope"}}).json().value("Exists", false));

  // docker run: the -init layer and the container layer, both made by dockerd.
  ASSERT_EQ(CallJson("GraphDriver.CreateReadWrite", Json{{"ID", "c-init"}, {"Parent", "base"}}).status, 200);
  ASSERT_EQ(CallJson("GraphDriver.CreateReadWrite", Json{{"ID", "c"}, {"Parent", "c-init"}}).status, 200);
  Reply got = CallJson("GraphDriver.Get", Json{{"ID", "c"}});
  ASSERT_EQ(got.status, 200) << got.body;
  std::string dir = got.json()["Dir"];
  EXPECT_EQ(testsupport::ReadFileOrEmpty(dir + "/etc/hello"), "hello\n");
  testsupport::WriteFileOrDie(dir + "/etc/added", "new\n");
  ASSERT_EQ(::unlink((dir + "/etc/doomed").c_str()), 0);
  EXPECT_EQ(CallJson("GraphDriver.Put", Json{{"ID", "c"}}).status, 200);

  // The layers are the store's, named by dockerd's ids (graphctl --root sees them).
  {
    auto store = graph::OpenLayerStore(root_, "");
    ASSERT_TRUE(store.ok()) << store.status();
    auto base = (*store)->Stat("base");
    ASSERT_TRUE(base.ok()) << base.status();
    EXPECT_EQ(base->kind, graph::LayerKind::kCommitted);
    EXPECT_EQ(base->chain_id, base->diff_id);
    EXPECT_EQ(base->diff_id.rfind("sha256:", 0), 0u);
    auto c = (*store)->Stat("c");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->kind, graph::LayerKind::kActive);
    EXPECT_EQ(c->parent, "c-init");
    EXPECT_EQ((*store)->Stat("c-init").value_or(graph::LayerInfo{}).parent, "base");
  }

  // docker diff, inspect, info.
  Reply changes = CallJson("GraphDriver.Changes", Json{{"ID", "c"}, {"Parent", "c-init"}});
  ASSERT_EQ(changes.status, 200) << changes.body;
  EXPECT_EQ(changes.json()["Changes"],
            Json::parse(R"([{"Path":"/etc","Kind":0},{"Path":"/etc/added","Kind":1},)"
                        R"({"Path":"/etc/doomed","Kind":2}])"));
  EXPECT_EQ(CallJson("GraphDriver.DiffSize", Json{{"ID", "c"}, {"Parent", "c-init"}}).json()["Size"], 4);
  Reply meta = CallJson("GraphDriver.GetMetadata", Json{{"ID", "c"}});
  ASSERT_EQ(meta.status, 200);
  EXPECT_EQ(meta.json()["Metadata"]["Dir"], dir);
  Reply status = Call("GraphDriver.Status", std::string(""));
  ASSERT_EQ(status.status, 200);
  EXPECT_EQ(status.json()["Status"][0], Json::parse(R"(["Graph Driver","vfs"])"));

  // docker commit: Diff streams the layer's changes as a tar.
  httplib::Client cli = Client();
  std::string tar;
  auto res = cli.Post("/GraphDriver.Diff", Json{{"ID", "c"}, {"Parent", "c-init"}}.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  auto names = testsupport::TarEntryNames(res->body);
  std::vector<std::string> paths;
  for (const auto& [path, link] : names) paths.push_back(path);
  EXPECT_EQ(paths, (std::vector<std::string>{"etc/", "etc/added", "etc/.wh.doomed"}));

  // docker rm / rmi.
  for (const char* id : {"c", "c-init", "base"}) {
    EXPECT_EQ(CallJson("GraphDriver.Remove", Json{{"ID", id}}).status, 200) << id;
  }
  EXPECT_EQ(Call("GraphDriver.Cleanup", std::string("")).status, 200);
  EXPECT_FALSE(CallJson("GraphDriver.Exists", Json{{"ID", "base"}}).json().value("Exists", false));
}

TEST_F(DockerPluginTest, BadRequestsGetErrAndChangeNothing) {
  auto plugin = StartPlugin();
  ASSERT_NE(plugin, nullptr);
  ASSERT_EQ(CallJson("GraphDriver.Create", Json{{"ID", "base"}}).status, 200);
  ASSERT_EQ(ApplyDiff("base", "", BaseTar()).status, 200);
  ASSERT_EQ(CallJson("GraphDriver.Create", Json{{"ID", "fresh"}, {"Parent", "base"}}).status, 200);
  const std::string before = Fingerprint();

  struct Bad {
    std::string method, body, want;
  };
  std::vector<Bad> bad = {
      {"GraphDriver.Create", "{\"ID\":", "not valid JSON"},
      {"GraphDriver.Create", "[1,2]", "must be a JSON object"},
      {"GraphDriver.Create", R"({"ID":5})", "must be a string"},
      {"GraphDriver.Create", R"({"ID":"x","StorageOpt":{"size":1}})", "must be a string"},
      {"GraphDriver.Create", R"({"ID":"x","Parent":"missing"})", "no layer missing"},
      {"GraphDriver.Create", R"({"ID":"../x"})", "bad ID"},
      {"GraphDriver.Create", R"({})", "no ID"},
      {"GraphDriver.Create", R"({"ID":"base"})", "exists"},
      {"GraphDriver.CreateReadWrite", R"({"ID":"x","Parent":"../../etc"})", "bad Parent"},
      {"GraphDriver.Create", R"({"ID":"x","StorageOpt":{"nosuch":"1"}})", "nosuch"},
      {"GraphDriver.Remove", R"({"ID":"missing"})", "no layer missing"},
      {"GraphDriver.Get", R"({"ID":"missing"})", "no layer missing"},
      {"GraphDriver.Put", R"({"ID":"missing"})", "no layer missing"},
      {"GraphDriver.GetMetadata", R"({"ID":"missing"})", "no layer missing"},
      {"GraphDriver.Changes", R"({"ID":"missing"})", "no layer missing"},
      {"GraphDriver.Changes", R"({"ID":"base","Parent":"missing"})", "no layer missing"},
      {"GraphDriver.DiffSize", R"({"ID":"missing"})", "no layer missing"},
      {"GraphDriver.Diff", R"({"ID":"missing"})", "no layer missing"},
      {"GraphDriver.Init", R"({"Home":"/x","Opts":["overlay.size=1G"]})", "not in force"},
      {"GraphDriver.Init", R"({"Home":"/x","UIDMaps":[{"ContainerID":0,"HostID":1000,"Size":1}]})",
       "user namespace"},
  };
  for (const Bad& b : bad) {
    Reply r = Call(b.method, b.body);
    EXPECT_EQ(r.status, 500) << b.method << " " << b.body << " -> " << r.body;
    EXPECT_NE(r.err().find(b.want), std::string::npos) << b.method << " " << b.body << " -> " << r.body;
  }
  // ApplyDiff: unknown layer, wrong parent, a layer already filled, and
  // hostile tarballs: an escaping path, an escaping hard link, a cut-short one.
  EXPECT_NE(ApplyDiff("missing", "", BaseTar()).err().find("no layer missing"), std::string::npos);
  EXPECT_NE(ApplyDiff("fresh", "", BaseTar()).err().find("created on parent"), std::string::npos);
  EXPECT_NE(ApplyDiff("base", "", BaseTar()).err().find("not an empty image layer"), std::string::npos);
  std::string escape = testsupport::RawHeader("../escaped", '0', "00000000004") +
                       testsupport::Pad512("evil") + testsupport::TarEnd();
  std::string hardlink = testsupport::RawHeader("etc/passwd", '1', "00000000000", "../../../etc/passwd") +
                         testsupport::TarEnd();
  std::string good = BaseTar();
  std::string cut = good.substr(0, 700);
  for (const std::string& tar : {escape, hardlink, cut}) {
    Reply r = ApplyDiff("fresh", "base", tar);
    EXPECT_EQ(r.status, 500) << r.body;
    EXPECT_FALSE(r.err().empty()) << r.body;
  }
  EXPECT_NE(::access(dir_->Sub("escaped").c_str(), F_OK), 0);
  EXPECT_NE(::access((root_ + "/escaped").c_str(), F_OK), 0);

  EXPECT_EQ(testsupport::FirstDifference(before, Fingerprint()), "");
  // The fresh layer is still empty and takes a good tar afterwards.
  EXPECT_EQ(ApplyDiff("fresh", "base", BuildTar({{.path = "ok", .type = '0', .data = "ok"}})).status, 200);
}

TEST_F(DockerPluginTest, SigtermFinishesTheRequestInFlight) {
  auto plugin = StartPlugin();
  ASSERT_NE(plugin, nullptr);
  ASSERT_EQ(CallJson("GraphDriver.Create", Json{{"ID", "slow"}}).status, 200);
  std::string tar = BuildTar({{.path = "big", .type = '0', .data = std::string(1 << 20, 'x')}});
  Reply reply;
  std::thread sender([&] {
    httplib::Client cli = Client();
    auto res = cli.Post(
        "/GraphDriver.ApplyDiff?id=slow&parent=",
        [&](size_t offset, httplib::DataSink& sink) {
          if (offset == tar.size() / 2) std::this_thread::sleep_for(1s);  // SIGTERM arrives here
          size_t n = std::min<size_t>(tar.size() - offset, tar.size() / 2);
          sink.write(tar.data() + offset, n);
          if (offset + n == tar.size()) sink.done();
          return true;
        },
        "application/x-tar");
    if (res) reply = {res->status, res->body};
  });
  std::this_thread::sleep_for(300ms);
  ::kill(plugin->pid(), SIGTERM);
  sender.join();
  EXPECT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(reply.json().value("Size", 0), 1 << 20) << reply.body;
  // Already exiting: Stop's own SIGTERM finds it gone or going.
  EXPECT_EQ(plugin->Stop(SIGTERM).value_or(-1), 0) << plugin->Log();
  EXPECT_NE(::access(socket_.c_str(), F_OK), 0);
}

}  // namespace
