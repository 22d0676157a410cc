#include "tools/common/unix_socket.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace cli {

// A socket left by a server that is gone is removed; a live one, or
// anything that is not a socket, is refused.
absl::Status ClaimSocketPath(const std::string& path) {
  struct sockaddr_un addr = {};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a unix socket path must have 1..", sizeof(addr.sun_path) - 1, " bytes, got '", path, "'"));
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
  if (found == nullptr) return absl::InvalidArgumentError(absl::StrCat("no group ", group));
  if (chown(path.c_str(), static_cast<uid_t>(-1), found->gr_gid) != 0) {
    return base::ErrnoError(errno, absl::StrCat("chown ", path, " to group ", group));
  }
  if (chmod(path.c_str(), 0660) != 0) return base::ErrnoError(errno, absl::StrCat("chmod ", path));
  return absl::OkStatus();
}

}  // namespace cli
