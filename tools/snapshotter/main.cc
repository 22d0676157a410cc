// dmthin-snapshotter: containerd's external snapshotter (a proxy plugin) on
// a libgraph layer store. Runs in the foreground, logs to stderr, serves
// containerd.services.snapshots.v1.Snapshots on a unix socket; SIGTERM or
// SIGINT lets calls in flight finish, then closes the store.
//
//   dmthin-snapshotter --root DIR --address SOCK [--driver NAME]
//                      [--storage-opt KEY=VALUE]... [--group GROUP]
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/unique_fd.h"
#include "graph/driver.h"
#include "graph/store.h"
#include "grpcpp/grpcpp.h"
#include "tools/common/storage_opts.h"
#include "tools/common/unix_socket.h"
#include "tools/snapshotter/service.h"

namespace snapshotter {
namespace {

constexpr char kVersion[] = "0.1.0";

struct Flags {
  std::string root;
  std::string address;
  std::string driver;
  std::vector<std::string> storage_opts;
  std::string group;
};

void Log(const std::string& line) { std::cerr << "dmthin-snapshotter: " << line << "\n"; }

int Run(const Flags& flags) {
  // Signals go to the one thread that waits for them (blocked before gRPC
  // starts its threads, which inherit the mask).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<std::map<std::string, std::string>> options = cli::ParseStorageOptions(flags.storage_opts);
  if (!options.ok()) {
    Log(std::string(options.status().message()));
    return 2;
  }
  absl::StatusOr<std::unique_ptr<graph::LayerStore>> store =
      graph::OpenLayerStore(flags.root, flags.driver, *options);
  if (!store.ok()) {
    Log(absl::StrCat("opening layer store ", flags.root, ": ", store.status().ToString()));
    return 1;
  }
  if (absl::Status s = cli::ClaimSocketPath(flags.address); !s.ok()) {
    Log(s.ToString());
    return 1;
  }

  SnapshotsService service(store->get());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat("unix:", flags.address), grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  // The socket is born 0600 (no window where others may connect).
  mode_t old_umask = umask(0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  umask(old_umask);
  if (server == nullptr) {
    Log(absl::StrCat("cannot listen on ", flags.address));
    return 1;
  }
  if (absl::Status s = cli::RestrictSocket(flags.address, flags.group); !s.ok()) {
    Log(s.ToString());
    server->Shutdown();
    unlink(flags.address.c_str());
    return 1;
  }
  Log(absl::StrCat("serving ", flags.address, " (driver ", (*store)->driver().Name(), ", root ", flags.root,
                   ")"));

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    Log(absl::StrCat("signal ", sig, ": finishing calls in flight"));
    server->Shutdown();
  });
  server->Wait();
  waiter.join();
  unlink(flags.address.c_str());
  store->reset();
  Log("stopped");
  return 0;
}

}  // namespace
}  // namespace snapshotter

int main(int argc, char** argv) {
  snapshotter::Flags flags;
  CLI::App app{"dmthin-snapshotter: containerd snapshotter (proxy plugin) on a dmthin layer store"};
  app.set_version_flag("--version", std::string("dmthin-snapshotter ") + snapshotter::kVersion);
  app.add_option("--root", flags.root, "layer store directory")->required();
  app.add_option("--address", flags.address, "unix socket to serve on")->required();
  app.add_option("--driver", flags.driver,
                 "graph driver (overlay, btrfs, vfs, aufs, devicemapper, zfs); default: the store's, or the best "
                 "this machine supports");
  app.add_option("--storage-opt", flags.storage_opts, "driver option KEY=VALUE (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--group", flags.group, "make the socket 0660 for this group (default: 0600, root only)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; usage errors exit 2 like every dmthin tool.
    return app.exit(e) == 0 ? 0 : 2;
  }
  return snapshotter::Run(flags);
}
