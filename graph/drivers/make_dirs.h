// mkdir -p for driver roots.
#ifndef DMTHIN_GRAPH_DRIVERS_MAKE_DIRS_H_
#define DMTHIN_GRAPH_DRIVERS_MAKE_DIRS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace graph {

// mkdir -p `path` (0700 for what it creates). An error carries errno and
// reads "<driver>: mkdir <the directory that failed>".
absl::Status MakeDirs(const std::string& path, absl::string_view driver);

}  // namespace graph

#endif  // DMTHIN_GRAPH_DRIVERS_MAKE_DIRS_H_
