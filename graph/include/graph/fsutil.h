// graph's file helpers live in base/fsutil.h (libvolume uses them too);
// these declarations keep graph code naming them as graph's own.
#ifndef DMTHIN_GRAPH_FSUTIL_H_
#define DMTHIN_GRAPH_FSUTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "base/export.h"
#include "base/fsutil.h"
#include "graph/driver.h"

DMTHIN_API_BEGIN
namespace graph {

using base::BackingFsName;
using base::CopyStats;
using base::CopyTree;
using base::DirEntry;
using base::IsMountPoint;
using base::ListDirBeneath;
using base::OpenBeneath;
using base::RemoveTree;

// Allocated bytes and distinct inodes of the tree at `path`
// (base::TreeUsage) as a layer's DiskUsage.
inline absl::StatusOr<DiskUsage> TreeUsage(const std::string& path) {
  absl::StatusOr<base::TreeUsageResult> u = base::TreeUsage(path);
  if (!u.ok()) return u.status();
  DiskUsage usage;
  usage.bytes = u->bytes;
  usage.inodes = u->inodes;
  return usage;
}

}  // namespace graph
DMTHIN_API_END

#endif  // DMTHIN_GRAPH_FSUTIL_H_
