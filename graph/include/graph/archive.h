// Layer tarballs: applying OCI layer tars into a layer directory and writing
// them back out, with whiteouts converted to each driver's native form.
//
// Security: ApplyLayer never creates, modifies or removes anything outside
// the directory `root_fd` names. Entry paths are relative to the layer root
// (a leading "/" or "./" is stripped); any ".." component is rejected;
// parent directories are resolved with openat2(RESOLVE_IN_ROOT |
// RESOLVE_NO_MAGICLINKS) so symlinks inside the layer can never lead out; the
// last component is never followed; symlinks whose target climbs above the
// layer root and hardlinks whose target is not inside the layer are
// rejected. On error the layer is left partially written: the caller removes
// it (RemoveTree).
#ifndef DMTHIN_GRAPH_ARCHIVE_H_
#define DMTHIN_GRAPH_ARCHIVE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/export.h"
#include "graph/driver.h"
#include "graph/stream.h"

DMTHIN_API_BEGIN
namespace graph {

// How a driver stores "this path is deleted" and "this directory hides its
// lower contents".
enum class WhiteoutFormat {
  // overlayfs: whiteout = character device 0/0; opaque directory =
  // xattr trusted.overlay.opaque="y".
  kOverlay,
  // aufs: `.wh.NAME` and `.wh..wh..opq` files kept as they are (aufs's own
  // format, which OCI borrowed).
  kAufs,
  // Full-copy drivers (vfs, btrfs snapshots): the layer already holds the
  // parent's files, so a whiteout deletes its target and an opaque marker
  // deletes the directory's lower contents.
  kDelete,
};

const char* WhiteoutFormatName(WhiteoutFormat format);

struct ApplyOptions {
  WhiteoutFormat whiteouts = WhiteoutFormat::kDelete;
  // Set numeric owners from the tar (needs CAP_CHOWN). Off: files belong to
  // the caller (rootless / unit tests).
  bool preserve_owners = true;
  // Refuse a regular file whose size exceeds this.
  int64_t max_file_size = int64_t{1} << 40;  // 1 TiB
};

// Applies the OCI layer tar read from `source` (plain tar, gzip, zstd, xz or
// bzip2; detected from the data) into the directory `root_fd`. Returns the
// content size and the diff id: sha256 of the whole uncompressed stream
// (including the end-of-archive blocks and any trailing padding).
absl::StatusOr<ApplyDiffResult> ApplyLayer(int root_fd, ByteSource& source,
                                           const ApplyOptions& options);

// Writes every entry under `root_fd` (sorted, depth first; the root itself
// is not written) as an uncompressed pax tar, converting `native` whiteouts
// to OCI ones. Regular files with several links inside the tree become tar
// hardlinks; whiteout devices never do. trusted.overlay.* xattrs are not
// exported.
absl::StatusOr<DiffResult> WriteLayerTree(int root_fd, WhiteoutFormat native,
                                          ByteSink& sink);

// Writes `changes` (as returned by Changes, sorted by path) with content
// taken from the full view `root_fd`: deletions become `.wh.NAME` entries.
absl::StatusOr<DiffResult> WriteLayerChanges(int root_fd,
                                             const std::vector<Change>& changes,
                                             ByteSink& sink);

}  // namespace graph
DMTHIN_API_END

#endif  // DMTHIN_GRAPH_ARCHIVE_H_
