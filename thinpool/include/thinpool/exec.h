// Running the few external programs thinpool relies on where no library
// exists (thin_check; libvolume: mkfs.xfs, xfs_growfs). argv vectors only,
// never a shell; posix_spawn, no fork.
#ifndef DMTHIN_THINPOOL_EXEC_H_
#define DMTHIN_THINPOOL_EXEC_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace thinpool {

struct ExecResult {
  int exit_code = -1;  // or 128 + signal
  std::string output;  // stdout and stderr, interleaved
};

// Full path of `program` from PATH, /usr/sbin or /sbin; nullopt if absent.
std::optional<std::string> FindProgram(const std::string& program);

// Runs argv[0] (a full path) with stdin from /dev/null.
absl::StatusOr<ExecResult> RunProgram(const std::vector<std::string>& argv);

}  // namespace thinpool

#endif  // DMTHIN_THINPOOL_EXEC_H_
