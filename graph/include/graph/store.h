// graph::LayerStore — named layers over a graph::Driver, with a crash-safe
// SQLite registry.
//
// Two faces over one table of layers:
//  - Docker's layer store: image layers imported from tarballs are named by
//    their chain id (chainID(L0) = diffID(L0), chainID(Ln) =
//    sha256(chainID(Ln-1) + " " + diffID(Ln))), carry diff id, parent, size
//    and a random driver id (Docker's cache-id), and are reference counted
//    (importing the same layer twice takes a second reference). Container
//    layers get an init layer between the image and the read-write layer
//    (Docker's "<cache-id>-init": /etc/hosts, /etc/resolv.conf,
//    /etc/hostname, /dev/console placeholders; /proc, /sys, /dev/pts, /dev/shm
//    directories; /etc/mtab -> /proc/mounts).
//  - containerd's snapshotter: keys and parents, kinds (active, view,
//    committed), Prepare/View/Commit/Stat/Update/Walk/Remove/Usage and
//    mounts described rather than done.
//
// Crash safety (the same discipline as thinpool's registry): a layer is
// recorded as `creating` before the driver is touched and becomes visible
// only when marked `ready`; removal first hides the record (its name is
// released and it is marked `removing`), then removes the driver layer, then
// deletes the record. A crash leaves at worst an invisible record that
// Check() reports and Check(repair) reaps, together with driver layers no
// record owns. Operations in progress in a live process hold a lock file
// and are left alone.
#ifndef DMTHIN_GRAPH_STORE_H_
#define DMTHIN_GRAPH_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/export.h"
#include "graph/driver.h"
#include "graph/filter.h"
#include "graph/stream.h"

namespace base::sqlite {
class SharedDb;
}

DMTHIN_API_BEGIN
namespace graph {

// The chain id of a layer with diff id `diff_id` on a parent whose chain id
// is `parent_chain_id` ("" for a base layer). Both are "sha256:<hex>".
absl::StatusOr<std::string> ChainId(absl::string_view parent_chain_id,
                                    absl::string_view diff_id);

// A random driver id: 64 lowercase hex characters.
std::string NewCacheId();

enum class LayerKind { kCommitted = 0, kActive = 1, kView = 2 };
const char* LayerKindName(LayerKind kind);  // "committed", "active", "view"

// Labels as every call that takes them checks them (InvalidArgument
// otherwise): keys not empty, keys and values UTF-8 without NUL, and
// containerd's limit, a label's key and value together <= 4096 bytes. For
// callers that validate at their edge, before opening a store.
absl::Status ValidateLabels(const std::map<std::string, std::string>& labels);

struct LayerInfo {
  std::string name;      // chain id for imported layers; any key otherwise
  LayerKind kind = LayerKind::kCommitted;
  std::string parent;    // parent's name ("" = base layer)
  std::string cache_id;  // the driver's id for this layer
  std::string init_id;   // the driver's id of the init layer ("" = none)
  std::string diff_id;   // imported layers: "sha256:..." of the tar
  std::string chain_id;  // imported layers: == name
  int64_t size = 0;      // imported layers: bytes of content applied
  uint64_t tar_size = 0; // imported layers: bytes of uncompressed tar
  int64_t refs = 1;      // references (imports of the same chain id)
  int64_t children = 0;  // layers with this one as parent
  absl::Time created;
  absl::Time updated;
  std::map<std::string, std::string> labels;
};

struct ImportOptions {
  std::string parent;  // name of an imported layer, "" = base
  // The layer's name; "" = its chain id. A given name is the caller's
  // (Docker's graphdriver face: dockerd names layers by its own cache ids and
  // keeps chain ids and references itself): importing under a name that is
  // taken is AlreadyExists, never a second reference. The chain id is
  // recorded either way.
  std::string name;
  std::map<std::string, std::string> labels;
  // Called now and then with the bytes read so far from the source.
  std::function<void(uint64_t bytes)> progress;
};

struct CreateLayerOptions {
  LayerKind kind = LayerKind::kActive;  // kActive or kView
  // Put a Docker-style init layer between the parent and this layer
  // (active layers only).
  bool init_layer = false;
  // The parent may be of any kind, not only committed (Docker's graphdriver
  // face: dockerd puts a container layer on its own read-write "-init"
  // layer). containerd's face leaves it false.
  bool any_parent = false;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> storage_options;
};

struct RemoveOptions {
  // Remove the layer even while it is mounted: its mount is taken away
  // from whoever is inside (overlay detaches it; vfs and btrfs delete the
  // directory under them). Without it a mounted layer is refused.
  bool force = false;
};

struct CheckReport {
  std::vector<std::string> problems;  // what is wrong
  std::vector<std::string> repaired;  // what repair did
  std::vector<std::string> skipped;   // operations in progress elsewhere
  bool clean() const { return problems.empty(); }
};

// Thread safety: a LayerStore object may be used from any number of threads
// at once (the servers over it call from gRPC/HTTP thread pools). Its
// registry connection is guarded by a mutex held only for registry reads
// and transactions, never across driver work, so a slow Import, Usage or
// Remove does not stall Stat or Walk in other threads. Several LayerStore
// objects — in one process or in several — may share a root: the registry
// serialises them (SQLite transactions) and per-layer lock files tell live
// operations from interrupted ones. Racing calls on one name get the
// answers containerd's snapshotters give: one Create wins and the others
// are AlreadyExists; a Remove racing a Stat/Mounts/Usage of the same layer
// makes that call NotFound; one Remove of a layer wins and the other is
// NotFound. Walk calls its callback without any lock held: the callback may
// call back into the store.
//
// Errors map one to one to containerd's errdefs: NotFound (no such layer),
// AlreadyExists (the name is taken), FailedPrecondition (the layer has
// children; not active; wrong driver), InvalidArgument (a bad name, filter,
// field path, or a parent that is not committed), Unavailable (the registry
// is locked by another process beyond the busy timeout). Other codes
// (Internal, DataLoss, ...) are failures of the machine, not of the call.
class LayerStore {
 public:
  // Opens the store in `root`: `root`/layers.db and `root`/locks/. A new
  // store is made only where `root` is missing or empty. A root holding
  // store data without a registry, an empty (0-byte) registry, or a file
  // that is not a layer store's registry is DataLoss, naming the recovery
  // (never a silent fresh start); a non-empty root that is no store is
  // FailedPrecondition. Opening an existing store writes nothing. The store
  // records the name of the driver it was created with and refuses another
  // (FailedPrecondition).
  static absl::StatusOr<std::unique_ptr<LayerStore>> Open(
      const std::string& root, std::unique_ptr<Driver> driver);
  ~LayerStore();

  Driver& driver() { return *driver_; }
  const std::string& root() const { return root_; }

  // The name of the driver recorded in the store at `root`, or "" if none
  // (no store yet).
  static absl::StatusOr<std::string> RecordedDriver(const std::string& root);

  // Imports an OCI layer tar (plain/gzip/zstd) as an image layer on
  // `options.parent`. Returns the layer (named by its chain id); importing a
  // chain id that exists adds a reference and returns the existing layer.
  absl::StatusOr<LayerInfo> Import(ByteSource& tar, const ImportOptions& options);

  // containerd Prepare (kind active) / View (kind view): a new layer `name`
  // on committed layer `parent` ("" = empty). AlreadyExists if `name` is
  // taken, NotFound if `parent` is unknown, InvalidArgument if `parent` is
  // not committed (containerd's answer).
  absl::StatusOr<LayerInfo> Create(const std::string& name,
                                   const std::string& parent,
                                   const CreateLayerOptions& options);

  // containerd Commit: active layer `key` becomes committed layer `name`.
  absl::StatusOr<LayerInfo> Commit(const std::string& name, const std::string& key,
                                   const std::map<std::string, std::string>& labels = {});

  absl::StatusOr<LayerInfo> Stat(const std::string& name);

  // containerd Update: only labels are mutable. No field paths replaces all
  // labels; "labels" likewise; "labels.KEY" sets or deletes one label. Any
  // other path is InvalidArgument.
  absl::StatusOr<LayerInfo> Update(const std::string& name,
                                   const std::map<std::string, std::string>& labels,
                                   const std::vector<std::string>& field_paths = {});

  // Every visible layer, sorted by name.
  absl::StatusOr<std::vector<LayerInfo>> List();

  // containerd Walk: calls `fn` for every visible layer that `filter`
  // matches, sorted by name; stops at (and returns) the first error `fn`
  // returns. Fields: name, parent, kind ("committed", "active", "view"),
  // labels.KEY. The layers are read in one registry read; `fn` runs after
  // it, without locks.
  absl::Status Walk(const Filter& filter,
                    const std::function<absl::Status(const LayerInfo&)>& fn);
  // The same with containerd's filter strings (any of them matches; none =
  // all). InvalidArgument for a filter that does not parse.
  absl::Status Walk(const std::vector<std::string>& filters,
                    const std::function<absl::Status(const LayerInfo&)>& fn);

  // Drops one reference to `name`; the last one removes the layer (and its
  // init layer). FailedPrecondition ("cannot remove ...: it has N children")
  // if other layers are built on it; FailedPrecondition with errno EBUSY
  // ("... is mounted ...") while the layer is mounted (driver Get count > 0,
  // in any process) unless `options.force`.
  absl::Status Remove(const std::string& name, const RemoveOptions& options = {});

  // Mounts the full view of `name` (driver Get) and returns the directory;
  // Unmount drops that reference (driver Put).
  absl::StatusOr<std::string> Mount(const std::string& name);
  absl::Status Unmount(const std::string& name);

  // Mounts `name`'s full view read-only at `target` (an existing
  // directory): a read-only bind of the driver's mount (Mount), whose
  // reference it holds — the layer cannot be removed meanwhile — until
  // UnmountReadOnly(name, target). For looking into a stopped container's
  // layer (devicemapper: its thin device's filesystem) without changing it.
  absl::Status MountReadOnly(const std::string& name, const std::string& target);
  absl::Status UnmountReadOnly(const std::string& name, const std::string& target);

  // The mounts that give `name`'s view, for callers that mount themselves;
  // read-only ("ro") for views and committed layers.
  absl::StatusOr<std::vector<MountSpec>> Mounts(const std::string& name);

  // OCI layer tar of `name`'s own changes (relative to its init layer or
  // parent); Changes lists them.
  absl::StatusOr<DiffResult> Diff(const std::string& name, ByteSink& sink);
  absl::StatusOr<std::vector<Change>> Changes(const std::string& name);
  // containerd Usage: disk space and inodes `name` itself takes (not its
  // parents), for every kind of layer, measured now (Driver::Usage).
  absl::StatusOr<DiskUsage> Usage(const std::string& name);

  // Driver metadata (GraphDriver.Data) of `name`.
  absl::StatusOr<std::map<std::string, std::string>> Metadata(const std::string& name);

  // Counts for `status`: layers by kind.
  absl::StatusOr<std::map<std::string, int64_t>> Counts();

  // Checks the registry file (SQLite integrity_check) and compares registry and
  // driver: interrupted creates/removes, driver layers no record owns,
  // records whose driver layer is gone, dangling parents. With `repair`,
  // reaps interrupted operations, drops records whose data is gone and
  // rebuilds damaged indexes. Driver layers no record owns are deleted only
  // with `repair` and `prune` (they may be all that is left of layers
  // whose records were lost); otherwise reported with where they are.
  absl::StatusOr<CheckReport> Check(bool repair, bool prune = false);

 private:
  class Impl;
  LayerStore(std::string root, std::unique_ptr<Driver> driver);
  // Open, once `root` (absolute) was examined: `is_new` makes the registry.
  // `conn`: the registry's connection, when the caller opened it (null:
  // opened here); `records`: the driver's records in it, if there.
  static absl::StatusOr<std::unique_ptr<LayerStore>> OpenExamined(
      const std::string& root, std::unique_ptr<Driver> driver, bool is_new,
      std::shared_ptr<base::sqlite::SharedDb> conn = nullptr, std::shared_ptr<LayerRecords> records = nullptr);
  friend absl::StatusOr<std::unique_ptr<LayerStore>> OpenLayerStore(
      const std::string&, const std::string&, const std::map<std::string, std::string>&);

  std::string root_;
  std::unique_ptr<Driver> driver_;
  std::unique_ptr<Impl> impl_;
};

// `root` as an absolute, lexically normal path (relative to the cwd; no
// symlinks resolved).
absl::StatusOr<std::string> AbsoluteRoot(const std::string& root);

// Opens the store kept in `root` (a relative root is made absolute, see
// AbsoluteRoot): the registry in `root` itself and the
// driver in `root`/<driver>. `driver_name` "" means the driver the store
// was created with, or, for a new store, the first driver in priority order
// that this machine supports (graph::OpenDriver). Asking for a driver other
// than the recorded one is FailedPrecondition.
absl::StatusOr<std::unique_ptr<LayerStore>> OpenLayerStore(
    const std::string& root, const std::string& driver_name,
    const std::map<std::string, std::string>& options = {});

}  // namespace graph
DMTHIN_API_END

#endif  // DMTHIN_GRAPH_STORE_H_
