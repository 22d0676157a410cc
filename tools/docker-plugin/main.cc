// dmthin-docker-plugin: serves libgraph's drivers and libvolume's volumes to
// dockerd (and podman) over Docker's plugin protocol (HTTP + JSON on a unix
// socket). Roles: GraphDriver (graphdriver_role.*, with --root) and
// VolumeDriver (volume_role.*, with --volume-root); either or both. See
// docs/docker.md.
//
//   dmthin-docker-plugin [--root DIR] [--socket PATH] [--driver NAME]
//                        [--storage-opt KEY=VALUE]... [--group GROUP] [-v]
//                        [--volume-root DIR [--volume-pool POOL]
//                         [--volume-data-dir DIR] [--thin-state-dir DIR]]
//
// Runs in the foreground; SIGTERM or SIGINT stops accepting connections and
// exits once the requests in flight are answered.
#include <signal.h>

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
#include "graph/store.h"
#include "tools/common/cli.h"
#include "tools/common/storage_opts.h"
#include "tools/docker-plugin/graphdriver_role.h"
#include "tools/docker-plugin/router.h"
#include "tools/docker-plugin/unix_server.h"
#include "tools/docker-plugin/volume_role.h"
#include "volume/store.h"

namespace dockerplugin {
namespace {

struct Flags {
  std::string root;
  std::string socket = "/run/docker/plugins/dmthin.sock";
  std::string driver;
  std::vector<std::string> storage_opts;
  std::string group;
  bool verbose = false;
  std::string volume_root;
  std::string volume_pool;
  std::string volume_data_dir;
  std::string thin_state_dir;
};

absl::Status Run(const Flags& flags) {
  if (flags.root.empty() && flags.volume_root.empty()) {
    return cli::UsageError("nothing to serve: give --root (GraphDriver) and/or --volume-root (VolumeDriver)");
  }
  if (!flags.root.empty() && flags.root[0] != '/') {
    return cli::UsageError(absl::StrCat("--root must be an absolute path, got '", flags.root, "'"));
  }
  ASSIGN_OR_RETURN(auto options, cli::ParseStorageOptions(flags.storage_opts));
  std::unique_ptr<graph::LayerStore> layers;
  if (!flags.root.empty()) {
    // The layer store in --root (graphctl --root sees the same layers): its
    // recorded driver unless --driver, else the first that works here.
    auto opened = graph::OpenLayerStore(flags.root, flags.driver, options);
    if (!opened.ok()) return base::Annotate(opened.status(), absl::StrCat("opening the layer store in ", flags.root));
    layers = std::move(*opened);
  }
  std::unique_ptr<volume::VolumeStore> volumes;
  if (!flags.volume_root.empty()) {
    volume::StoreOptions vo;
    vo.root = flags.volume_root;
    vo.pool = flags.volume_pool;
    vo.data_dir = flags.volume_data_dir;
    vo.thin_state_dir = flags.thin_state_dir;
    auto store = volume::VolumeStore::Open(vo);
    if (!store.ok()) return base::Annotate(store.status(), absl::StrCat("opening volumes in ", flags.volume_root));
    volumes = std::move(*store);
  }

  // Signals go to sigwait below, never to a server thread.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  Router router;
  std::string serving_what;
  std::unique_ptr<GraphDriverRole> graphdriver;
  if (layers) {
    serving_what = absl::StrCat("GraphDriver (", layers->driver().Name(), " in ", flags.root, ")");
    graphdriver = std::make_unique<GraphDriverRole>(std::move(layers), options);
    graphdriver->Register(router);
  }
  std::unique_ptr<VolumeDriverRole> volumedriver;
  if (volumes) {
    absl::StrAppend(&serving_what, serving_what.empty() ? "" : " and ", "VolumeDriver (", flags.volume_root, ")");
    volumedriver = std::make_unique<VolumeDriverRole>(std::move(volumes));
    volumedriver->Register(router);
  }

  ASSIGN_OR_RETURN(std::unique_ptr<UnixServer> server, UnixServer::Listen(flags.socket, flags.group));
  router.Install(server->http());
  bool verbose = flags.verbose;
  server->http().set_logger([verbose](const httplib::Request& req, const httplib::Response& res) {
    if (!verbose && res.status == 200) return;
    std::string detail = res.status == 200 ? "" : absl::StrCat(" ", res.body);
    std::fprintf(stderr, "dmthin-docker-plugin: %s %s %d%s\n", req.method.c_str(), req.target.c_str(),
                 res.status, detail.c_str());
  });
  std::fprintf(stderr, "dmthin-docker-plugin: serving %s on %s\n", serving_what.c_str(),
               flags.socket.c_str());

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
  app.add_option("--root", flags.root,
                 "serve GraphDriver: the layer store (graphctl --root DIR; the driver's data under DIR/NAME)");
  app.add_option("--socket", flags.socket, "unix socket to serve on (dockerd finds /run/docker/plugins/NAME.sock)")
      ->capture_default_str();
  app.add_option("--driver", flags.driver,
                 "libgraph driver: overlay, btrfs, devicemapper, vfs, aufs (default: the store's, "
                 "else the first that works)");
  app.add_option("--storage-opt", flags.storage_opts, "driver option KEY=VALUE (repeatable)")
      ->take_all();
  app.add_option("--group", flags.group, "group allowed to connect (socket 0660; default root only, 0600)");
  app.add_flag("-v,--verbose", flags.verbose, "log every request");
  app.add_option("--volume-root", flags.volume_root, "serve VolumeDriver: the volume store (libvolume)");
  app.add_option("--volume-pool", flags.volume_pool,
                 "thin pool for thin volumes (recorded in the store at first use)");
  app.add_option("--volume-data-dir", flags.volume_data_dir,
                 "where directory volumes live (default VOLUME-ROOT/data; btrfs gives them sizes)");
  app.add_option("--thin-state-dir", flags.thin_state_dir,
                 "thinpool state dir of --volume-pool (default /var/lib/dmthin)");
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
