// SnapshotsService: containerd's snapshots gRPC service
// (containerd.services.snapshots.v1.Snapshots) over one graph::LayerStore.
// containerd keys and names are the store's layer names as they come
// (containerd prefixes them with the namespace: "default/12/sha256:...");
// the drivers see only the store's cache ids, never a key. No handler uses
// its ServerContext: each may be called with nullptr (the fuzz target,
// tests/fuzz/snapshotter_service_fuzz.cc, does).
#ifndef DMTHIN_TOOLS_SNAPSHOTTER_SERVICE_H_
#define DMTHIN_TOOLS_SNAPSHOTTER_SERVICE_H_

#include <functional>

#include "absl/status/status.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"
#include "graph/store.h"

namespace snapshotter {

namespace api = ::containerd::services::snapshots::v1;

// The gRPC status containerd's errdefs.FromGRPC turns back into the error
// it expects (absl's codes are gRPC's codes).
grpc::Status ToGrpc(const absl::Status& status);

class SnapshotsService final : public api::Snapshots::Service {
 public:
  // `store` outlives the service. gRPC calls from its thread pool: the
  // store is safe for concurrent use (graph/store.h), so calls run in
  // parallel.
  explicit SnapshotsService(graph::LayerStore* store) : store_(store) {}

  grpc::Status Prepare(grpc::ServerContext*, const api::PrepareSnapshotRequest* request,
                       api::PrepareSnapshotResponse* response) override;
  grpc::Status View(grpc::ServerContext*, const api::ViewSnapshotRequest* request,
                    api::ViewSnapshotResponse* response) override;
  grpc::Status Mounts(grpc::ServerContext*, const api::MountsRequest* request,
                      api::MountsResponse* response) override;
  grpc::Status Commit(grpc::ServerContext*, const api::CommitSnapshotRequest* request,
                      google::protobuf::Empty*) override;
  grpc::Status Remove(grpc::ServerContext*, const api::RemoveSnapshotRequest* request,
                      google::protobuf::Empty*) override;
  grpc::Status Stat(grpc::ServerContext*, const api::StatSnapshotRequest* request,
                    api::StatSnapshotResponse* response) override;
  grpc::Status Update(grpc::ServerContext*, const api::UpdateSnapshotRequest* request,
                      api::UpdateSnapshotResponse* response) override;
  grpc::Status List(grpc::ServerContext*, const api::ListSnapshotsRequest* request,
                    grpc::ServerWriter<api::ListSnapshotsResponse>* writer) override;
  // List's work with the stream as a callback (false: the client went
  // away), so tests and the fuzz target drive it without a server.
  grpc::Status List(const api::ListSnapshotsRequest& request,
                    const std::function<bool(const api::ListSnapshotsResponse&)>& write);
  grpc::Status Usage(grpc::ServerContext*, const api::UsageRequest* request,
                     api::UsageResponse* response) override;
  grpc::Status Cleanup(grpc::ServerContext*, const api::CleanupRequest* request,
                       google::protobuf::Empty*) override;

 private:
  absl::Status Create(const std::string& key, const std::string& parent,
                      const google::protobuf::Map<std::string, std::string>& labels, graph::LayerKind kind,
                      google::protobuf::RepeatedPtrField<containerd::types::Mount>* mounts);

  graph::LayerStore* store_;
};

}  // namespace snapshotter

#endif  // DMTHIN_TOOLS_SNAPSHOTTER_SERVICE_H_
