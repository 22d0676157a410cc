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

// A socket left by a server that is gone is removed; a live one, or
// anything that is not a socket, is refused.
absl::Status ClaimSocketPath(const std::string& path) {
  struct sockaddr_un addr = {};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--address must be a unix socket path of 1..", sizeof(addr.sun_path) - 1, " bytes"));
  }
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoError(errno, absl::StrCat("stat ", path));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a socket"));
  }
  base::UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return base::ErrnoError(errno, "socket");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (connect(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) == 0) {
    return absl::FailedPreconditionError(absl::StrCat("a server is already listening on ", path));
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return base::ErrnoError(errno, absl::StrCat("remove stale socket ", path));
  }
  return absl::OkStatus();
}

// Root-only socket (0600), or 0660 owned by `group` when one is named.
absl::Status RestrictSocket(const std::string& path, const std::string& group) {
  if (group.empty()) {
    if (chmod(path.c_str(), 0600) != 0) return base::ErrnoError(errno, absl::StrCat("chmod ", path));
    return absl::OkStatus();
  }
  std::vector<char> buf(16384);
  struct group gr;
  struct group* found = nullptr;
  int err = getgrnam_r(group.c_str(), &gr, buf.data(), buf.size(), &found);
  if (err != 0) return base::ErrnoError(err, absl::StrCat("look up group ", group));
  if (found == nullptr) return absl::InvalidArgumentError(absl::StrCat("--group ", group, ": no such group"));
  if (chown(path.c_str(), static_cast<uid_t>(-1), found->gr_gid) != 0) {
    return base::ErrnoError(errno, absl::StrCat("chown ", path, " to group ", group));
  }
  if (chmod(path.c_str(), 0660) != 0) return base::ErrnoError(errno, absl::StrCat("chmod ", path));
  return absl::OkStatus();
}

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
  if (absl::Status s = ClaimSocketPath(flags.address); !s.ok()) {
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
  if (absl::Status s = RestrictSocket(flags.address, flags.group); !s.ok()) {
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
                 "graph driver (overlay, btrfs, vfs, aufs, devicemapper); default: the store's, or the best "
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
