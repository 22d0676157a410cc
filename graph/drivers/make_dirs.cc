#include "graph/drivers/make_dirs.h"

#include <sys/stat.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace graph {

absl::Status MakeDirs(const std::string& path, absl::string_view driver) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return base::ErrnoError(errno, absl::StrCat(driver, ": mkdir ", prefix));
    }
  }
  return absl::OkStatus();
}

}  // namespace graph
