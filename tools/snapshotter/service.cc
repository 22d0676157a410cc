#include "tools/snapshotter/service.h"

#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "base/utf8.h"

namespace snapshotter {
namespace {

// One line on stderr per failed call: what was asked, and why it failed.
// NotFound and AlreadyExists are routine answers to containerd (it probes
// with Stat and Prepare) and are not logged. The key is the client's bytes:
// escaped, so a newline in it cannot forge a log line.
grpc::Status Reply(const char* method, const std::string& key, const absl::Status& status) {
  if (!status.ok() && !absl::IsNotFound(status) && !absl::IsAlreadyExists(status)) {
    std::cerr << "dmthin-snapshotter: " << method << " \"" << base::EscapeForText(key) << "\": "
              << base::EscapeForText(status.ToString()) << "\n";
  }
  return ToGrpc(status);
}

api::Kind KindOf(graph::LayerKind kind) {
  switch (kind) {
    case graph::LayerKind::kActive: return api::ACTIVE;
    case graph::LayerKind::kView: return api::VIEW;
    case graph::LayerKind::kCommitted: return api::COMMITTED;
  }
  return api::UNKNOWN;
}

void SetTime(absl::Time t, google::protobuf::Timestamp* out) {
  int64_t nanos = absl::ToUnixNanos(t);
  int64_t seconds = nanos / 1000000000;
  int64_t rest = nanos % 1000000000;
  if (rest < 0) {
    rest += 1000000000;
    --seconds;
  }
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(rest));
}

void FillInfo(const graph::LayerInfo& layer, api::Info* info) {
  info->set_name(layer.name);
  info->set_parent(layer.parent);
  info->set_kind(KindOf(layer.kind));
  SetTime(layer.created, info->mutable_created_at());
  SetTime(layer.updated, info->mutable_updated_at());
  auto* labels = info->mutable_labels();
  for (const auto& [k, v] : layer.labels) (*labels)[k] = v;
}

std::map<std::string, std::string> Labels(const google::protobuf::Map<std::string, std::string>& labels) {
  return std::map<std::string, std::string>(labels.begin(), labels.end());
}

void FillMounts(const std::vector<graph::MountSpec>& specs,
                google::protobuf::RepeatedPtrField<containerd::types::Mount>* mounts) {
  for (const graph::MountSpec& spec : specs) {
    containerd::types::Mount* m = mounts->Add();
    m->set_type(spec.type);
    m->set_source(spec.source);
    m->set_target(spec.target);
    for (const std::string& o : spec.options) m->add_options(o);
  }
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share their numbering (both are
  // google.rpc.Code), so NotFound, AlreadyExists, FailedPrecondition and
  // InvalidArgument reach containerd's errdefs as themselves.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status SnapshotsService::Create(const std::string& key, const std::string& parent,
                                      const google::protobuf::Map<std::string, std::string>& labels,
                                      graph::LayerKind kind,
                                      google::protobuf::RepeatedPtrField<containerd::types::Mount>* mounts) {
  graph::CreateLayerOptions options;
  options.kind = kind;
  options.labels = Labels(labels);
  absl::StatusOr<graph::LayerInfo> created = store_->Create(key, parent, options);
  if (!created.ok()) return created.status();
  absl::StatusOr<std::vector<graph::MountSpec>> specs = store_->Mounts(key);
  if (!specs.ok()) {
    // The caller gets no mounts, so it will not use the layer: take it back.
    absl::Status undo = store_->Remove(key);
    if (!undo.ok()) {
      std::cerr << "dmthin-snapshotter: removing \"" << base::EscapeForText(key)
                << "\" after failed mounts: " << base::EscapeForText(undo.ToString()) << "\n";
    }
    return specs.status();
  }
  FillMounts(*specs, mounts);
  return absl::OkStatus();
}

grpc::Status SnapshotsService::Prepare(grpc::ServerContext*, const api::PrepareSnapshotRequest* request,
                                       api::PrepareSnapshotResponse* response) {
  return Reply("Prepare", request->key(),
               Create(request->key(), request->parent(), request->labels(), graph::LayerKind::kActive,
                      response->mutable_mounts()));
}

grpc::Status SnapshotsService::View(grpc::ServerContext*, const api::ViewSnapshotRequest* request,
                                    api::ViewSnapshotResponse* response) {
  return Reply("View", request->key(),
               Create(request->key(), request->parent(), request->labels(), graph::LayerKind::kView,
                      response->mutable_mounts()));
}

grpc::Status SnapshotsService::Mounts(grpc::ServerContext*, const api::MountsRequest* request,
                                      api::MountsResponse* response) {
  absl::StatusOr<std::vector<graph::MountSpec>> specs = store_->Mounts(request->key());
  if (specs.ok()) FillMounts(*specs, response->mutable_mounts());
  return Reply("Mounts", request->key(), specs.status());
}

grpc::Status SnapshotsService::Commit(grpc::ServerContext*, const api::CommitSnapshotRequest* request,
                                      google::protobuf::Empty*) {
  return Reply("Commit", request->key(),
               store_->Commit(request->name(), request->key(), Labels(request->labels())).status());
}

grpc::Status SnapshotsService::Remove(grpc::ServerContext*, const api::RemoveSnapshotRequest* request,
                                      google::protobuf::Empty*) {
  return Reply("Remove", request->key(), store_->Remove(request->key()));
}

grpc::Status SnapshotsService::Stat(grpc::ServerContext*, const api::StatSnapshotRequest* request,
                                    api::StatSnapshotResponse* response) {
  absl::StatusOr<graph::LayerInfo> layer = store_->Stat(request->key());
  if (layer.ok()) FillInfo(*layer, response->mutable_info());
  return Reply("Stat", request->key(), layer.status());
}

grpc::Status SnapshotsService::Update(grpc::ServerContext*, const api::UpdateSnapshotRequest* request,
                                      api::UpdateSnapshotResponse* response) {
  const api::Info& info = request->info();
  std::vector<std::string> paths(request->update_mask().paths().begin(), request->update_mask().paths().end());
  absl::StatusOr<graph::LayerInfo> layer = store_->Update(info.name(), Labels(info.labels()), paths);
  if (layer.ok()) FillInfo(*layer, response->mutable_info());
  return Reply("Update", info.name(), layer.status());
}

grpc::Status SnapshotsService::List(grpc::ServerContext*, const api::ListSnapshotsRequest* request,
                                    grpc::ServerWriter<api::ListSnapshotsResponse>* writer) {
  return List(*request, [writer](const api::ListSnapshotsResponse& batch) { return writer->Write(batch); });
}

grpc::Status SnapshotsService::List(const api::ListSnapshotsRequest& request,
                                    const std::function<bool(const api::ListSnapshotsResponse&)>& write) {
  // containerd's filters, any of which matches (graph/filter.h); Walk calls
  // back without holding the store's locks, so a slow client stalls no one.
  std::vector<std::string> filters(request.filters().begin(), request.filters().end());
  // containerd's own service streams batches of 100.
  constexpr int kBatch = 100;
  api::ListSnapshotsResponse batch;
  absl::Status status = store_->Walk(filters, [&](const graph::LayerInfo& layer) -> absl::Status {
    FillInfo(layer, batch.add_info());
    if (batch.info_size() == kBatch) {
      if (!write(batch)) return absl::CancelledError("client went away");
      batch.Clear();
    }
    return absl::OkStatus();
  });
  if (status.ok() && batch.info_size() > 0 && !write(batch)) {
    status = absl::CancelledError("client went away");
  }
  return Reply("List", absl::StrJoin(filters, " | "), status);
}

grpc::Status SnapshotsService::Usage(grpc::ServerContext*, const api::UsageRequest* request,
                                     api::UsageResponse* response) {
  absl::StatusOr<graph::DiskUsage> usage = store_->Usage(request->key());
  if (usage.ok()) {
    response->set_size(usage->bytes);
    response->set_inodes(usage->inodes);
  }
  return Reply("Usage", request->key(), usage.status());
}

grpc::Status SnapshotsService::Cleanup(grpc::ServerContext*, const api::CleanupRequest*, google::protobuf::Empty*) {
  // Reaps what interrupted creates and removals left (records and driver
  // layers nobody owns); operations in progress elsewhere are left alone.
  absl::StatusOr<graph::CheckReport> report = store_->Check(/*repair=*/true);
  if (report.ok()) {
    for (const std::string& r : report->repaired) {
      std::cerr << "dmthin-snapshotter: Cleanup: " << base::EscapeForText(r) << "\n";
    }
  }
  return Reply("Cleanup", "", report.status());
}

}  // namespace snapshotter
