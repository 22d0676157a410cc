#include "graph/store/init_layer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace graph::store {
namespace {

enum class Kind { kDir, kFile, kSymlink };

struct Entry {
  const char* path;
  Kind kind;
  const char* target;  // symlinks
};

constexpr Entry kEntries[] = {
    {"dev/pts", Kind::kDir, nullptr},
    {"dev/shm", Kind::kDir, nullptr},
    {"proc", Kind::kDir, nullptr},
    {"sys", Kind::kDir, nullptr},
    {".dockerenv", Kind::kFile, nullptr},
    {"etc/resolv.conf", Kind::kFile, nullptr},
    {"etc/hosts", Kind::kFile, nullptr},
    {"etc/hostname", Kind::kFile, nullptr},
    {"dev/console", Kind::kFile, nullptr},
    {"etc/mtab", Kind::kSymlink, "/proc/mounts"},
};

// Opens directory `name` in `dir`, creating it (0755) if missing. Returns an
// invalid fd (not an error) when `name` exists but is not a directory or is
// a symlink: the entry is skipped.
absl::StatusOr<base::UniqueFd> OpenOrMakeDir(int dir, const std::string& name,
                                             const std::string& what) {
  base::UniqueFd fd(::openat(dir, name.c_str(),
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd) return fd;
  if (errno == ELOOP || errno == ENOTDIR) return base::UniqueFd();
  if (errno != ENOENT) return base::ErrnoError(errno, absl::StrCat("open ", what));
  if (::mkdirat(dir, name.c_str(), 0755) != 0 && errno != EEXIST) {
    return base::ErrnoError(errno, absl::StrCat("mkdir ", what));
  }
  fd.reset(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ELOOP || errno == ENOTDIR) return base::UniqueFd();
    return base::ErrnoError(errno, absl::StrCat("open ", what));
  }
  return fd;
}

}  // namespace

absl::Status PopulateInitLayer(const std::string& root) {
  base::UniqueFd root_fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd) return base::ErrnoError(errno, absl::StrCat("open init layer ", root));
  for (const Entry& e : kEntries) {
    std::vector<std::string> parts = absl::StrSplit(e.path, '/');
    std::string leaf = parts.back();
    parts.pop_back();
    base::UniqueFd dir(::fcntl(root_fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!dir) return base::ErrnoError(errno, "dup");
    std::string so_far = root;
    for (const std::string& part : parts) {
      so_far = absl::StrCat(so_far, "/", part);
      ASSIGN_OR_RETURN(base::UniqueFd next, OpenOrMakeDir(dir.get(), part, so_far));
      dir = std::move(next);
      if (!dir) break;
    }
    if (!dir) continue;  // a parent is a symlink or a file in the image
    std::string what = absl::StrCat(root, "/", e.path);
    struct stat st;
    if (::fstatat(dir.get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) continue;
    if (errno != ENOENT) return base::ErrnoError(errno, absl::StrCat("stat ", what));
    switch (e.kind) {
      case Kind::kDir:
        if (::mkdirat(dir.get(), leaf.c_str(), 0755) != 0) {
          return base::ErrnoError(errno, absl::StrCat("mkdir ", what));
        }
        break;
      case Kind::kFile: {
        base::UniqueFd f(::openat(dir.get(), leaf.c_str(),
                                  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
        if (!f) return base::ErrnoError(errno, absl::StrCat("create ", what));
        if (::fchmod(f.get(), 0644) != 0) return base::ErrnoError(errno, absl::StrCat("chmod ", what));
        break;
      }
      case Kind::kSymlink:
        if (::symlinkat(e.target, dir.get(), leaf.c_str()) != 0) {
          return base::ErrnoError(errno, absl::StrCat("symlink ", what));
        }
        break;
    }
  }
  return absl::OkStatus();
}

}  // namespace graph::store
