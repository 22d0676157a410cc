#include "graph/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace graph {
namespace {

int OpenBeneath(int dirfd, const std::string& path, int flags) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV |
                RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how));
}

// Lists the names in directory `fd` (without . and ..).
absl::StatusOr<std::vector<std::string>> ListDir(int fd, const std::string& what) {
  int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return base::ErrnoError(errno, absl::StrCat("dup for ", what));
  DIR* dir = ::fdopendir(dup);
  if (dir == nullptr) {
    int err = errno;
    ::close(dup);
    return base::ErrnoError(err, absl::StrCat("opendir ", what));
  }
  ::rewinddir(dir);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* d = ::readdir(dir)) {
    if (d->d_name[0] == '.' &&
        (d->d_name[1] == 0 || (d->d_name[1] == '.' && d->d_name[2] == 0))) {
      continue;
    }
    names.emplace_back(d->d_name);
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) return base::ErrnoError(err, absl::StrCat("readdir ", what));
  return names;
}

}  // namespace

absl::Status RemoveTree(int dirfd, const std::string& name) {
  if (::unlinkat(dirfd, name.c_str(), 0) == 0 || errno == ENOENT) {
    return absl::OkStatus();
  }
  if (errno != EISDIR) {
    return base::ErrnoError(errno, absl::StrCat("unlink ", name));
  }
  // Iterative depth-first removal: one fd open at a time, paths resolved
  // beneath `dirfd` without symlinks or mount crossings.
  std::vector<std::pair<std::string, bool>> stack = {{name, false}};
  while (!stack.empty()) {
    auto& [path, visited] = stack.back();
    if (visited) {
      if (::unlinkat(dirfd, path.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        return base::ErrnoError(errno, absl::StrCat("rmdir ", path));
      }
      stack.pop_back();
      continue;
    }
    visited = true;
    std::string dir = path;  // `path` may dangle once the stack grows
    base::UniqueFd fd(OpenBeneath(dirfd, dir, O_RDONLY | O_DIRECTORY));
    if (!fd) {
      if (errno == ENOENT) continue;
      return base::ErrnoError(errno, absl::StrCat("open ", dir, " for removal"));
    }
    ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(fd.get(), dir));
    for (const std::string& child : names) {
      if (::unlinkat(fd.get(), child.c_str(), 0) == 0 || errno == ENOENT) continue;
      if (errno != EISDIR) {
        return base::ErrnoError(errno, absl::StrCat("unlink ", dir, "/", child));
      }
      stack.emplace_back(absl::StrCat(dir, "/", child), false);
    }
  }
  return absl::OkStatus();
}

absl::Status RemoveTree(const std::string& path) {
  std::string parent = ".";
  std::string name = path;
  while (name.size() > 1 && name.back() == '/') name.pop_back();
  size_t slash = name.rfind('/');
  if (slash != std::string::npos) {
    parent = slash == 0 ? "/" : name.substr(0, slash);
    name = name.substr(slash + 1);
  }
  if (name.empty() || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("refusing to remove \"", path, "\""));
  }
  base::UniqueFd fd(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoError(errno, absl::StrCat("open ", parent));
  }
  return base::Annotate(RemoveTree(fd.get(), name), absl::StrCat("removing ", path));
}

}  // namespace graph
