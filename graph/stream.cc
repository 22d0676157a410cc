#include "graph/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace graph {

namespace {

// fd must be open, not a directory, and open for `want` (O_RDONLY or
// O_WRONLY; O_RDWR serves both).
absl::Status CheckStreamFd(int fd, int want) {
  const char* use = want == O_RDONLY ? "reading" : "writing";
  int flags = ::fcntl(fd, F_GETFL);
  if (fd < 0 || flags < 0) {
    return base::WithErrno(absl::InvalidArgumentError(absl::StrCat(
                               "fd ", fd, " is not an open file descriptor")), EBADF);
  }
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    return base::WithErrno(absl::InvalidArgumentError(absl::StrCat(
                               "fd ", fd, " is a directory; ", use, " a layer tar needs a file or a pipe")), EISDIR);
  }
  int mode = flags & O_ACCMODE;
  if (mode != O_RDWR && mode != want) {
    return base::WithErrno(absl::InvalidArgumentError(absl::StrCat(
                               "fd ", fd, " is not open for ", use, " (it is open ",
                               mode == O_RDONLY ? "read-only" : "write-only", ")")), EBADF);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status FdSource::Check(int fd) { return CheckStreamFd(fd, O_RDONLY); }
absl::Status FdSink::Check(int fd) { return CheckStreamFd(fd, O_WRONLY); }

absl::StatusOr<size_t> FdSource::Read(void* buf, size_t len) {
  for (;;) {
    ssize_t n = ::read(fd_, buf, len);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) return base::ErrnoError(errno, absl::StrCat("read from fd ", fd_));
  }
}

absl::Status FdSink::Write(const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::write(fd_, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(errno, absl::StrCat("write to fd ", fd_));
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> StringSource::Read(void* buf, size_t len) {
  size_t n = std::min(len, data_.size() - pos_);
  std::memcpy(buf, data_.data() + pos_, n);
  pos_ += n;
  return n;
}

absl::Status StringSink::Write(const void* buf, size_t len) {
  out_->append(static_cast<const char*>(buf), len);
  return absl::OkStatus();
}

}  // namespace graph
