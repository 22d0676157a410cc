// dmthin-docker-plugin: serves libgraph's drivers to dockerd over Docker's
// plugin protocol (HTTP + JSON on a unix socket). Roles: GraphDriver
// (graphdriver_role.*). See docs/docker.md.
//
//   dmthin-docker-plugin --root DIR [--socket PATH] [--driver NAME]
//                        [--storage-opt KEY=VALUE]... [--group GROUP] [-v]
//
// Runs in the foreground; SIGTERM or SIGINT stops accepting connections and
// exits once the requests in flight are answered.
#include <signal.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "graph/driver.h"
#include "tools/common/cli.h"
#include "tools/common/storage_opts.h"
#include "tools/docker-plugin/graphdriver_role.h"
#include "tools/docker-plugin/router.h"
#include "tools/docker-plugin/unix_server.h"

namespace dockerplugin {
namespace {

struct Flags {
  std::string root;
  std::string socket = "/run/docker/plugins/dmthin.sock";
  std::string driver;
  std::vector<std::string> storage_opts;
  std::string group;
  bool verbose = false;
};

// The driver to open: --driver, else the one whose directory a previous run
// left under the root (so a restart keeps its layers), else auto-selection.
std::string ChooseDriver(const Flags& flags) {
  if (!flags.driver.empty()) return flags.driver;
  for (const graph::DriverInfo& info : graph::RegisteredDrivers()) {
    struct stat st;
    std::string dir = absl::StrCat(flags.root, "/", info.name);
    if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return info.name;
  }
  return "";
}

absl::Status Run(const Flags& flags) {
  if (flags.root.empty() || flags.root[0] != '/') {
    return cli::UsageError(absl::StrCat("--root must be an absolute path, got '", flags.root, "'"));
  }
  ASSIGN_OR_RETURN(auto options, cli::ParseStorageOptions(flags.storage_opts));
  if (::mkdir(flags.root.c_str(), 0700) != 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("creating ", flags.root));
  }
  auto driver = graph::OpenDriver(ChooseDriver(flags), flags.root, options);
  if (!driver.ok()) return base::Annotate(driver.status(), absl::StrCat("opening a driver in ", flags.root));
  std::string driver_name = (*driver)->Name();

  // Signals go to sigwait below, never to a server thread.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  Router router;
  GraphDriverRole graphdriver(std::move(*driver), options);
  graphdriver.Register(router);

  ASSIGN_OR_RETURN(std::unique_ptr<UnixServer> server, UnixServer::Listen(flags.socket, flags.group));
  router.Install(server->http());
  bool verbose = flags.verbose;
  server->http().set_logger([verbose](const httplib::Request& req, const httplib::Response& res) {
    if (!verbose && res.status == 200) return;
    std::string detail = res.status == 200 ? "" : absl::StrCat(" ", res.body);
    std::fprintf(stderr, "dmthin-docker-plugin: %s %s %d%s\n", req.method.c_str(), req.target.c_str(),
                 res.status, detail.c_str());
  });
  std::fprintf(stderr, "dmthin-docker-plugin: serving GraphDriver (%s in %s) on %s\n", driver_name.c_str(),
               flags.root.c_str(), flags.socket.c_str());

  absl::Status served;
  std::thread serving([&] { served = server->Serve(); });
  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "dmthin-docker-plugin: signal %d, finishing requests in flight\n", sig);
  server->Stop();
  serving.join();
  server.reset();  // removes the socket
  return served;
}

}  // namespace
}  // namespace dockerplugin

int main(int argc, char** argv) {
  dockerplugin::Flags flags;
  CLI::App app{
      "Serves dmthin's layer drivers to dockerd as a graph-driver plugin "
      "(dockerd --experimental --storage-driver=NAME, NAME from the socket's name).",
      "dmthin-docker-plugin"};
  app.add_option("--root", flags.root, "directory of the layer store (the driver's under DIR/NAME)")
      ->required();
  app.add_option("--socket", flags.socket, "unix socket to serve on (dockerd finds /run/docker/plugins/NAME.sock)")
      ->capture_default_str();
  app.add_option("--driver", flags.driver,
                 "libgraph driver: overlay, btrfs, devicemapper, vfs, aufs (default: the one under --root, "
                 "else the first that works)");
  app.add_option("--storage-opt", flags.storage_opts, "driver option KEY=VALUE (repeatable)")
      ->take_all();
  app.add_option("--group", flags.group, "group allowed to connect (socket 0660; default root only, 0600)");
  app.add_flag("-v,--verbose", flags.verbose, "log every request");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? cli::kExitOk : cli::kExitUsage;
  }
  absl::Status status = dockerplugin::Run(flags);
  if (!status.ok()) {
    std::fprintf(stderr, "dmthin-docker-plugin: %s\n", std::string(status.message()).c_str());
    return cli::IsUsageError(status) ? cli::kExitUsage : cli::kExitFailed;
  }
  return cli::kExitOk;
}
