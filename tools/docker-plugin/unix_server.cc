#include "tools/docker-plugin/unix_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/unique_fd.h"

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

// True if a server accepts connections on the unix socket `path`.
bool Answers(const std::string& path) {
  base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
}

// Makes `path` free for a new socket: a stale socket is removed.
absl::Status ClearStale(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoError(errno, absl::StrCat("looking at ", path));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a socket"));
  }
  if (Answers(path)) {
    return absl::AlreadyExistsError(absl::StrCat("another server listens on ", path));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return base::ErrnoError(errno, absl::StrCat("removing stale socket ", path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<UnixServer>> UnixServer::Listen(const std::string& path,
                                                               std::optional<gid_t> group) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("socket path must be absolute, got '", path, "'"));
  }
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", path, " is longer than ",
                                                   sizeof(sockaddr_un{}.sun_path) - 1, " bytes"));
  }
  RETURN_IF_ERROR(MakeParents(path));
  RETURN_IF_ERROR(ClearStale(path));

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
  if (group.has_value()) {
    if (::chown(path.c_str(), static_cast<uid_t>(-1), *group) != 0) {
      return base::ErrnoError(errno, absl::StrCat("giving ", path, " to group ", *group));
    }
    if (::chmod(path.c_str(), 0660) != 0) return base::ErrnoError(errno, absl::StrCat("chmod 0660 ", path));
  }
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
