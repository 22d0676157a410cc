#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "graph/archive/internal.h"

namespace graph::archive_internal {

absl::StatusOr<std::string> CleanPath(absl::string_view raw) {
  if (raw.size() > kMaxPath) {
    return absl::InvalidArgumentError(
        absl::StrCat("path of ", raw.size(), " bytes exceeds ", kMaxPath));
  }
  std::string out;
  out.reserve(raw.size());
  for (absl::string_view comp : absl::StrSplit(raw, '/')) {
    if (comp.empty() || comp == ".") continue;
    if (comp == "..") {
      return absl::InvalidArgumentError(absl::StrCat(
          "path \"", absl::CHexEscape(raw.substr(0, 200)), raw.size() > 200 ? "..." : "",
          "\" has a \"..\" component"));
    }
    if (comp.size() > 255) {
      return absl::InvalidArgumentError(absl::StrCat(
          "path component of ", comp.size(), " bytes exceeds 255"));
    }
    if (!out.empty()) out.push_back('/');
    out.append(comp.data(), comp.size());
  }
  return out;
}

absl::Status CheckSymlinkTarget(absl::string_view parent, absl::string_view target) {
  if (target.size() > kMaxPath) {
    return absl::InvalidArgumentError(
        absl::StrCat("symlink target of ", target.size(), " bytes exceeds ", kMaxPath));
  }
  if (!target.empty() && target[0] == '/') return absl::OkStatus();
  int depth = 0;
  for (absl::string_view comp : absl::StrSplit(parent, '/', absl::SkipEmpty())) {
    (void)comp;
    ++depth;
  }
  for (absl::string_view comp : absl::StrSplit(target, '/', absl::SkipEmpty())) {
    if (comp == ".") continue;
    if (comp == "..") {
      if (--depth < 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "symlink target \"", absl::CHexEscape(target.substr(0, 200)), target.size() > 200 ? "..." : "",
            "\" leads out of the layer"));
      }
    } else {
      ++depth;
    }
  }
  return absl::OkStatus();
}

}  // namespace graph::archive_internal
