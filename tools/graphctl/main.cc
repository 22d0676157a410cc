// graphctl: layers on the command line — import OCI layer tarballs, create
// container layers and views, label them, mount them, export diffs, measure
// their usage, list them with containerd's filters, check and repair the
// store. It parses, calls libgraph (graph::LayerStore), and prints.
//
// Files: context.{h,cc} (global options, the store, argument parsing),
// layer_verbs.cc (verbs on one layer), store_verbs.cc (ls, status, check),
// output.cc (how layers are shown).
#include <string>

#include "absl/status/statusor.h"
#include "graph/store.h"
#include "tools/common/cli.h"
#include "tools/graphctl/context.h"

int main(int argc, char** argv) {
  using graphctl::Ctx;
  cli::App app("graphctl",
               "Container image and container layers: import OCI layer tarballs, create\n"
               "read-write container layers and read-only views, label, mount, diff, measure,\n"
               "list with filters, check.\n"
               "Driver options (--storage-opt, as dockerd's) are given each time the store\n"
               "is opened; e.g. devicemapper on a pool of sparse files, 4G per layer:\n"
               "  graphctl --driver devicemapper --storage-opt dm.loopdatasize=20G \\\n"
               "           --storage-opt dm.basesize=4G import base.tar\n"
               "Exit status: 0 ok, 1 failed, 2 usage.");
  app.AddGlobal({{"root", "DIR", "the layer store (default /var/lib/dmthin/graph)"},
                 [](const std::string& v) {
                   // Absolute at the edge: every path printed (mount, inspect) is absolute.
                   absl::StatusOr<std::string> abs = graph::AbsoluteRoot(v);
                   Ctx().root = abs.ok() ? *abs : v;
                 }});
  app.AddGlobal({{"driver", "NAME",
                  "overlay, btrfs, vfs, aufs, ... (default: the store's, else the first usable)"},
                 [](const std::string& v) { Ctx().driver = v; }});
  app.AddGlobal({{"storage-opt", "KEY=VAL",
                  "a driver option, repeatable: dm.basesize=20G, overlay.mount_api=legacy, ...", true},
                 [](const std::string& v) { Ctx().storage_opts.push_back(v); }});
  graphctl::AddLayerVerbs(app);
  graphctl::AddStoreVerbs(app);
  return app.Main(argc, argv);
}
