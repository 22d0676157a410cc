// graph's file helpers live in base/fsutil.h (libvolume uses them too);
// these declarations keep graph code naming them as graph's own.
#ifndef DMTHIN_GRAPH_FSUTIL_H_
#define DMTHIN_GRAPH_FSUTIL_H_

#include "base/fsutil.h"

namespace graph {

using base::BackingFsName;
using base::CopyStats;
using base::CopyTree;
using base::DirEntry;
using base::IsMountPoint;
using base::ListDirBeneath;
using base::OpenBeneath;
using base::RemoveTree;

}  // namespace graph

#endif  // DMTHIN_GRAPH_FSUTIL_H_
