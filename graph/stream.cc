#include "graph/stream.h"

#include <errno.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/status.h"

namespace graph {

absl::StatusOr<size_t> FdSource::Read(void* buf, size_t len) {
  for (;;) {
    ssize_t n = ::read(fd_, buf, len);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) return base::ErrnoError(errno, "reading layer stream");
  }
}

absl::Status FdSink::Write(const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::write(fd_, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return base::ErrnoError(errno, "writing layer stream");
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
