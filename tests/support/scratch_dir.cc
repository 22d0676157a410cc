#include "tests/support/scratch_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace testsupport {
namespace {

absl::Status RemoveBelow(int dir_fd, const std::string& path, int depth) {
  if (depth > 10000) return absl::InternalError(absl::StrCat("too deep: ", path));
  int dup_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return base::ErrnoError(errno, "dup");
  DIR* dir = ::fdopendir(dup_fd);
  if (dir == nullptr) {
    ::close(dup_fd);
    return base::ErrnoError(errno, absl::StrCat("fdopendir ", path));
  }
  std::vector<std::string> names;
  while (struct dirent* ent = ::readdir(dir)) {
    if (std::strcmp(ent->d_name, ".") && std::strcmp(ent->d_name, "..")) {
      names.emplace_back(ent->d_name);
    }
  }
  ::closedir(dir);
  for (const std::string& name : names) {
    struct statx stx;
    if (::statx(dir_fd, name.c_str(), AT_SYMLINK_NOFOLLOW, STATX_TYPE, &stx) != 0) {
      if (errno == ENOENT) continue;
      return base::ErrnoError(errno, absl::StrCat("statx ", path, "/", name));
    }
    std::string child = absl::StrCat(path, "/", name);
    if (S_ISDIR(stx.stx_mode)) {
      if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
          (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
        return absl::FailedPreconditionError(absl::StrCat(child, " is a mount point"));
      }
      base::UniqueFd fd(::openat(dir_fd, name.c_str(),
                                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) return base::ErrnoError(errno, absl::StrCat("open ", child));
      RETURN_IF_ERROR(RemoveBelow(fd.get(), child, depth + 1));
      fd.reset();
      if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        return base::ErrnoError(errno, absl::StrCat("rmdir ", child));
      }
    } else if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return base::ErrnoError(errno, absl::StrCat("unlink ", child));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return base::ErrnoError(errno, absl::StrCat("stat ", path));
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlink(path.c_str()) != 0) return base::ErrnoError(errno, absl::StrCat("unlink ", path));
    return absl::OkStatus();
  }
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return base::ErrnoError(errno, absl::StrCat("open ", path));
  RETURN_IF_ERROR(RemoveBelow(fd.get(), path, 0));
  fd.reset();
  if (::rmdir(path.c_str()) != 0) return base::ErrnoError(errno, absl::StrCat("rmdir ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ScratchDir::Make(const std::string& tag, const std::string& parent) {
  std::string base = parent;
  if (base.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    base = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";
  }
  std::string tmpl = absl::StrCat(base, "/dmthin-", tag, "-", ::getpid(), "-XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return base::ErrnoError(errno, absl::StrCat("mkdtemp ", tmpl));
  }
  return tmpl;
}

ScratchDir::ScratchDir(const std::string& tag, const std::string& parent) {
  absl::StatusOr<std::string> path = Make(tag, parent);
  if (!path.ok()) throw std::runtime_error(path.status().ToString());
  path_ = *std::move(path);
}

absl::StatusOr<std::unique_ptr<ScratchDir>> ScratchDir::Create(const std::string& tag,
                                                                const std::string& parent) {
  absl::StatusOr<std::string> path = Make(tag, parent);
  if (!path.ok()) return path.status();
  return std::unique_ptr<ScratchDir>(new ScratchDir(Made{}, *std::move(path)));
}

ScratchDir::~ScratchDir() {
  absl::Status s = RemoveTree(path_);
  if (!s.ok()) std::fprintf(stderr, "warning: cleanup of %s: %s\n", path_.c_str(),
                            std::string(s.message()).c_str());
}

}  // namespace testsupport
