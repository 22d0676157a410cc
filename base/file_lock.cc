#include "base/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace base {

absl::StatusOr<FileLock> FileLock::Take(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return ErrnoError(errno, absl::StrCat("opening ", path));
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return ErrnoError(errno, absl::StrCat("locking ", path));
  }
  return FileLock(std::move(fd));
}

}  // namespace base
