// --storage-opt KEY=VALUE (dockerd's driver options) as the tools take them.
#ifndef DMTHIN_TOOLS_COMMON_STORAGE_OPTS_H_
#define DMTHIN_TOOLS_COMMON_STORAGE_OPTS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cli {

// The driver options from --storage-opt values as given, or a usage error
// (cli::UsageError) naming the malformed or repeated one. Unknown keys are
// the driver's to refuse.
absl::StatusOr<std::map<std::string, std::string>> ParseStorageOptions(
    const std::vector<std::string>& storage_opts);

}  // namespace cli

#endif  // DMTHIN_TOOLS_COMMON_STORAGE_OPTS_H_
