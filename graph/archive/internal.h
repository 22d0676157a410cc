// Private helpers of the archive path (not installed).
#ifndef DMTHIN_GRAPH_ARCHIVE_INTERNAL_H_
#define DMTHIN_GRAPH_ARCHIVE_INTERNAL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace graph::archive_internal {

inline constexpr absl::string_view kWhiteoutPrefix = ".wh.";
inline constexpr absl::string_view kWhiteoutMetaPrefix = ".wh..wh.";
inline constexpr absl::string_view kOpaqueMarker = ".wh..wh..opq";
inline constexpr size_t kMaxPath = 4096;

// Normalises a tar entry path to "a/b/c" ("" = the layer root): leading
// "/" and "./" are stripped, empty and "." components dropped. Rejects any
// ".." component, over-long paths and components.
absl::StatusOr<std::string> CleanPath(absl::string_view raw);

// Rejects a relative symlink target that, taken from directory `parent`
// (a cleaned path), climbs above the layer root. Absolute targets are
// rooted in the layer and accepted.
absl::Status CheckSymlinkTarget(absl::string_view parent, absl::string_view target);

}  // namespace graph::archive_internal

#endif  // DMTHIN_GRAPH_ARCHIVE_INTERNAL_H_
