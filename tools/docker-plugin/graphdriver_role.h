// The GraphDriver role: Docker's graph-driver plugin protocol (moby
// daemon/graphdriver/proxy.go) served from a graph::LayerStore.
//
// dockerd's ids are the store's layer names: dockerd keeps its own layer
// store (chain ids, diff ids, references) and creates the `-init` layers
// itself, so its image layers are named imports (the store still records
// their diff and chain ids), its `-init` and container layers active layers
// on the parent it gives. The store is the one registry of the root, so
// `graphctl --root DIR` sees dockerd's layers (ls, inspect, mount --ro).
#ifndef DMTHIN_TOOLS_DOCKER_PLUGIN_GRAPHDRIVER_ROLE_H_
#define DMTHIN_TOOLS_DOCKER_PLUGIN_GRAPHDRIVER_ROLE_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "graph/store.h"
#include "tools/docker-plugin/codec.h"
#include "tools/docker-plugin/router.h"

namespace dockerplugin {

class GraphDriverRole {
 public:
  // `options` are the driver options the driver was opened with (the
  // plugin's --storage-opt); Init accepts dockerd's --storage-opt only where
  // they agree.
  GraphDriverRole(std::unique_ptr<graph::LayerStore> store, std::map<std::string, std::string> options);

  // Adds "GraphDriver" and its methods to `router`.
  void Register(Router& router);

  graph::LayerStore& store() { return *store_; }

 private:
  absl::StatusOr<Json> Init(const std::string& body);
  absl::StatusOr<Json> Create(const std::string& body, bool read_write);
  absl::StatusOr<Json> Remove(const std::string& body);
  absl::StatusOr<Json> Get(const std::string& body);
  absl::StatusOr<Json> Put(const std::string& body);
  absl::StatusOr<Json> Exists(const std::string& body);
  absl::StatusOr<Json> Status();
  absl::StatusOr<Json> GetMetadata(const std::string& body);
  absl::StatusOr<Json> Cleanup();
  absl::StatusOr<Json> Changes(const std::string& body);
  absl::StatusOr<Json> DiffSize(const std::string& body);
  void Diff(const std::string& body, httplib::Response& res);
  void ApplyDiff(const httplib::Request& req, httplib::Response& res,
                 const httplib::ContentReader& reader);
  absl::Status ApplyDiffStream(const std::string& id, const std::string& parent,
                               const httplib::ContentReader& reader, int64_t* size);

  // A layer the store or fresh_ has (`what` names the field in errors).
  absl::Status CheckLayer(const std::string& id, const char* what);
  // A layer the store has and its record; NotFound "no layer ID".
  absl::StatusOr<graph::LayerInfo> Layer(const std::string& id, const char* what);
  // The store layer a request names, with its parent checked against the
  // one the layer sits on (dockerd always gives that one).
  absl::StatusOr<graph::LayerInfo> LayerAndParent(const GraphRequest& req);

  std::unique_ptr<graph::LayerStore> store_;
  std::map<std::string, std::string> options_;

  // Image layers announced by Create and not yet filled: the only layers
  // ApplyDiff accepts. dockerd's layer store always sends Create then
  // ApplyDiff, so the layer is made by ApplyDiff in one store import (named
  // by its id, on its parent): a failed or cut-short tar leaves nothing,
  // and the layer stays announced, as Create left it.
  std::mutex mu_;
  std::map<std::string, std::string> fresh_;  // id -> parent
};

}  // namespace dockerplugin

#endif  // DMTHIN_TOOLS_DOCKER_PLUGIN_GRAPHDRIVER_ROLE_H_
