#include "volume/bind_path.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "base/unique_fd.h"

namespace volume {
namespace {

absl::StatusOr<std::string> Normalize(const std::string& path, absl::string_view what) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(what, " \"", path, "\" is not absolute"));
  }
  if (path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " contains NUL"));
  }
  std::string out;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == "." || part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " \"", path, "\" has a \"", part, "\" component"));
    }
    absl::StrAppend(&out, "/", part);
  }
  return out.empty() ? std::string("/") : out;
}

}  // namespace

absl::StatusOr<std::string> ValidateBindPath(const std::string& path, const std::string& within) {
  ASSIGN_OR_RETURN(std::string p, Normalize(path, "bind path"));
  std::string base = "/";
  std::string rel = p.substr(1);
  if (!within.empty()) {
    ASSIGN_OR_RETURN(base, Normalize(within, "bind root"));
    if (p != base && p.rfind(base == "/" ? base : base + "/", 0) != 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("bind path ", p, " is not beneath ", base));
    }
    rel = p == base ? "" : p.substr(base == "/" ? 1 : base.size() + 1);
  }
  base::UniqueFd root(::open(base.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (!root) return base::ErrnoError(errno, absl::StrCat("bind root ", base));
  if (rel.empty()) return p;
  struct open_how how = {};
  how.flags = O_PATH | O_CLOEXEC;  // no O_NOFOLLOW: a final symlink must fail too
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, root.get(), rel.c_str(), &how, sizeof(how)));
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP) {
      return base::ErrnoError(err, absl::StrCat("bind path ", p, ": a component is a symlink"));
    }
    return base::ErrnoError(err, absl::StrCat("bind path ", p));
  }
  ::close(fd);
  return p;
}

}  // namespace volume
