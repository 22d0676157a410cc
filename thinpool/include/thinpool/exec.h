// Running the few external programs thinpool relies on where no library
// exists (thin_check; libvolume: mkfs.xfs, xfs_growfs). argv vectors only,
// never a shell; posix_spawn, no fork.
#ifndef DMTHIN_THINPOOL_EXEC_H_
#define DMTHIN_THINPOOL_EXEC_H_

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace thinpool {

struct ExecResult {
  int exit_code = -1;  // or 128 + signal
  std::string output;  // stdout and stderr, interleaved
  // The program printed more than RunProgram's max_output: `output` holds
  // the first max_output bytes only (the rest was read and dropped).
  bool truncated = false;
};

// Full path of `program` from PATH, /usr/sbin or /sbin; nullopt if absent.
std::optional<std::string> FindProgram(const std::string& program);

// Runs argv[0] (a full path) with stdin from /dev/null, keeping at most
// max_output bytes of what it prints.
absl::StatusOr<ExecResult> RunProgram(const std::vector<std::string>& argv,
                                      size_t max_output = 1 << 20);

}  // namespace thinpool
DMTHIN_API_END

#endif  // DMTHIN_THINPOOL_EXEC_H_
