// Bind-mount volumes are the engine's business; what the library checks is
// the host path it is asked to share.
#ifndef DMTHIN_VOLUME_BIND_PATH_H_
#define DMTHIN_VOLUME_BIND_PATH_H_

#include <string>

#include "absl/status/statusor.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace volume {

// OK (returning the path without trailing slashes) if `path` is absolute,
// has no "." or ".." components, exists, and no component of it is a
// symlink (so what is shared is what was named, not where a link points).
// With `within` (an absolute directory), `path` must also lie beneath it.
// The errors say why: InvalidArgument for the form, the errno (ENOENT,
// ELOOP for a symlink) otherwise.
absl::StatusOr<std::string> ValidateBindPath(const std::string& path,
                                             const std::string& within = "");

}  // namespace volume
DMTHIN_API_END

#endif  // DMTHIN_VOLUME_BIND_PATH_H_
