// The GraphDriver role: Docker's graph-driver plugin protocol (moby
// daemon/graphdriver/proxy.go) served from a graph::Driver.
//
// Docker's ids are the driver's ids: dockerd keeps its own layer store
// (chain ids, diff ids, reference counts, the `-init` layers it creates
// itself) and only asks the graph driver for directories and diffs, as it does
// with its built-in drivers. graph::LayerStore would keep a second registry of
// the same facts under other names, so the plugin drives graph::Driver
// directly.
#ifndef DMTHIN_TOOLS_DOCKER_PLUGIN_GRAPHDRIVER_ROLE_H_
#define DMTHIN_TOOLS_DOCKER_PLUGIN_GRAPHDRIVER_ROLE_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "graph/driver.h"
#include "tools/docker-plugin/codec.h"
#include "tools/docker-plugin/router.h"

namespace dockerplugin {

class GraphDriverRole {
 public:
  // `options` are the driver options the driver was opened with (the
  // plugin's --storage-opt); Init accepts dockerd's --storage-opt only where
  // they agree.
  GraphDriverRole(std::unique_ptr<graph::Driver> driver, std::map<std::string, std::string> options);

  // Adds "GraphDriver" and its methods to `router`.
  void Register(Router& router);

  graph::Driver& driver() { return *driver_; }

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

  std::unique_ptr<graph::Driver> driver_;
  std::map<std::string, std::string> options_;

  // Image layers made by Create and not yet filled: the only layers
  // ApplyDiff accepts (Docker's layer store creates and applies in one go).
  // A failed ApplyDiff makes the layer empty again, as Create left it.
  struct Fresh {
    std::string parent;
    graph::CreateOptions options;
  };
  std::mutex mu_;
  std::map<std::string, Fresh> fresh_;
};

}  // namespace dockerplugin

#endif  // DMTHIN_TOOLS_DOCKER_PLUGIN_GRAPHDRIVER_ROLE_H_
