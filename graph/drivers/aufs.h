// aufs graph driver internals, exposed for unit tests (private header).
//
// Layout (Docker's aufs driver): <root>/diff/<id> holds a layer's own files
// with aufs whiteouts (`.wh.NAME`, `.wh..wh..opq`, which OCI borrowed, so
// layer tars apply and export without conversion); <root>/layers/<id> lists
// the layer's ancestors, nearest first, one per line; <root>/mnt/<id> is
// where Get mounts the union: the layer's diff dir read-write (or read-only
// for image layers) over every ancestor's diff dir as `ro+wh`.
#ifndef DMTHIN_GRAPH_DRIVERS_AUFS_H_
#define DMTHIN_GRAPH_DRIVERS_AUFS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace graph::aufs {

// The kernel's verdict: OK if /proc/filesystems lists aufs, else an
// UnsupportedError(kKernelLacksFilesystem, "aufs is not supported by this
// kernel ...").
absl::Status KernelSupport();

// Mount data for a union of `top` (mode "rw" or "ro") over `lowers`
// (nearest first). The first string is the data for mount(2); each further
// string is the data for one MS_REMOUNT that appends the remaining branches
// ("append:DIR=ro+wh"), because mount data is limited to one page.
std::vector<std::string> MountData(const std::string& top, bool top_writable,
                                   const std::vector<std::string>& lowers,
                                   size_t page_size);

// aufs' own bookkeeping entries at a branch root (never part of a diff).
bool IsAufsMetaName(const std::string& name);

}  // namespace graph::aufs

#endif  // DMTHIN_GRAPH_DRIVERS_AUFS_H_
