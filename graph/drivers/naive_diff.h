// Generic Diff / Changes / DiffSize / ApplyDiff for any driver, by mounting
// (Get) the layer and its parent and comparing the two trees — Docker's
// NaiveDiffDriver. Drivers with a native diff (overlay's upper dir) use these
// as the fallback; full-copy drivers (vfs, btrfs) use them always.
#ifndef DMTHIN_GRAPH_DRIVERS_NAIVE_DIFF_H_
#define DMTHIN_GRAPH_DRIVERS_NAIVE_DIFF_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "graph/archive.h"
#include "graph/driver.h"

namespace graph {

// Changes turning tree `old_dir` into tree `new_dir` ("" old_dir = empty),
// sorted by path. A path is modified when its type, mode, owner, device,
// symlink target, xattrs or (non-directories) size or mtime differ; a
// directory holding changes is reported modified too (so its metadata
// travels with the diff).
absl::StatusOr<std::vector<Change>> ComputeChanges(const std::string& new_dir,
                                                   const std::string& old_dir);

// Bytes of regular-file content added or modified (hard links counted once).
absl::StatusOr<int64_t> ChangesSize(const std::string& new_dir,
                                    const std::vector<Change>& changes);

// Driver-level helpers: Get `id` (and `parent` when not empty), compare,
// Put. ApplyDiff Gets `id` and applies with `whiteouts`.
absl::StatusOr<std::vector<Change>> NaiveChanges(Driver& driver, const std::string& id,
                                                 const std::string& parent);
absl::StatusOr<DiffResult> NaiveDiff(Driver& driver, const std::string& id,
                                     const std::string& parent, ByteSink& sink);
absl::StatusOr<int64_t> NaiveDiffSize(Driver& driver, const std::string& id,
                                      const std::string& parent);
absl::StatusOr<ApplyDiffResult> NaiveApplyDiff(Driver& driver, const std::string& id,
                                               ByteSource& source, WhiteoutFormat whiteouts);

}  // namespace graph

#endif  // DMTHIN_GRAPH_DRIVERS_NAIVE_DIFF_H_
