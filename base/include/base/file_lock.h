// An exclusive flock() on a file, held until destruction (and released by
// the kernel if the process dies).
#ifndef DMTHIN_BASE_FILE_LOCK_H_
#define DMTHIN_BASE_FILE_LOCK_H_

#include <string>

#include "absl/status/statusor.h"
#include "base/export.h"
#include "base/unique_fd.h"

DMTHIN_API_BEGIN
namespace base {

class FileLock {
 public:
  // Opens (creating 0600, never following a symlink) and locks `path`,
  // waiting for another holder.
  static absl::StatusOr<FileLock> Take(const std::string& path);

 private:
  explicit FileLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace base
DMTHIN_API_END

#endif  // DMTHIN_BASE_FILE_LOCK_H_
