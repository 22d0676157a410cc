#include "tests/support/fill_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace testsupport {

std::pair<uint64_t, int> FillFile(const std::string& path, uint64_t limit) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return {0, errno};
  std::vector<char> buf(1 << 20, 'x');
  uint64_t written = 0;
  int err = 0;
  while (written < limit) {
    ssize_t n = ::write(fd, buf.data(), buf.size());
    if (n < 0) {
      err = errno;
      break;
    }
    written += static_cast<uint64_t>(n);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  ::close(fd);
  return {written, err};
}

}  // namespace testsupport
