#include "tools/docker-plugin/unix_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "tools/common/unix_socket.h"

namespace dockerplugin {
namespace {

absl::Status MakeParents(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return base::ErrnoError(errno, absl::StrCat("creating ", dir));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<UnixServer>> UnixServer::Listen(const std::string& path,
                                                               const std::string& group) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("socket path must be absolute, got '", path, "'"));
  }
  RETURN_IF_ERROR(MakeParents(path));
  RETURN_IF_ERROR(cli::ClaimSocketPath(path));

  std::unique_ptr<UnixServer> server(new UnixServer());
  server->path_ = path;
  httplib::Server& http = server->http_;
  http.set_address_family(AF_UNIX);
  // Layer tarballs stream for as long as dockerd takes to feed or read them.
  http.set_read_timeout(std::chrono::minutes(10));
  http.set_write_timeout(std::chrono::minutes(10));
  mode_t old_umask = ::umask(0177);
  bool bound = http.bind_to_port(path, 80);  // the port is unused on AF_UNIX
  int bind_errno = errno;
  ::umask(old_umask);
  if (!bound) return base::ErrnoError(bind_errno, absl::StrCat("listening on ", path));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return base::ErrnoError(errno, absl::StrCat("looking at ", path));
  server->dev_ = st.st_dev;
  server->ino_ = st.st_ino;
  RETURN_IF_ERROR(cli::RestrictSocket(path, group));
  return server;
}

UnixServer::~UnixServer() {
  Stop();
  // Remove the socket only if it is still ours.
  struct stat st;
  if (!path_.empty() && ::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    ::unlink(path_.c_str());
  }
}

absl::Status UnixServer::Serve() {
  if (!http_.listen_after_bind()) return absl::InternalError(absl::StrCat("serving on ", path_, " failed"));
  return absl::OkStatus();
}

void UnixServer::Stop() { http_.stop(); }

}  // namespace dockerplugin
