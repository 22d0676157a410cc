// The content of a Docker-style init layer (private to the layer store).
#ifndef DMTHIN_GRAPH_STORE_INIT_LAYER_H_
#define DMTHIN_GRAPH_STORE_INIT_LAYER_H_

#include <string>

#include "absl/status/status.h"

namespace graph::store {

// Creates, inside the mounted view `root`, what a container runtime
// bind-mounts over or needs to exist, as Docker's initlayer did: directories
// /dev/pts, /dev/shm, /proc, /sys (0755); empty placeholder files
// /etc/resolv.conf, /etc/hosts, /etc/hostname, /dev/console, /.dockerenv
// (0644); /etc/mtab -> /proc/mounts. Entries that already exist in the view
// (from the image) are left alone. Never follows a symlink: an image whose
// /etc is a symlink gets no /etc entries rather than writes outside it.
absl::Status PopulateInitLayer(const std::string& root);

}  // namespace graph::store

#endif  // DMTHIN_GRAPH_STORE_INIT_LAYER_H_
