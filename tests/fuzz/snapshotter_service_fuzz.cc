// Fuzzes what dmthin-snapshotter does with a request (tools/snapshotter/
// service.*): the first byte picks one of the ten Snapshots methods, the
// rest is parsed as that method's protobuf request, exactly as gRPC hands it
// to the handler; the handler runs against a real layer store (vfs driver)
// in a temporary directory holding a committed base, an active layer and a
// view with labels. Keys, parents, labels, filters and field paths are all
// the fuzzer's.
//
// Invariants (a violation aborts):
//  - a failed call changes nothing: every layer's name, parent, kind,
//    labels and times are what they were;
//  - a failed call answers with one of containerd's errdefs codes
//    (NotFound, AlreadyExists, FailedPrecondition, InvalidArgument,
//    Unavailable, ResourceExhausted, Cancelled), never Internal or Unknown;
//  - a call that succeeds leaves the store consistent (Check finds no
//    problem); the store is then made anew for the next input.
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "graph/store.h"
#include "tools/snapshotter/service.h"

namespace {

namespace api = ::containerd::services::snapshots::v1;
namespace fs = std::filesystem;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "snapshotter_service_fuzz: %s\n", what.c_str());
  std::abort();
}

class Fixture {
 public:
  Fixture() {
    char tmpl[] = "/tmp/dmthin-snapshotter-fuzz-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) Fail("mkdtemp");
    dir_ = tmpl;
    Reset();
  }
  ~Fixture() {
    service_.reset();
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A new store with the fixture's layers.
  void Reset() {
    service_.reset();
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_ + "/store", ec);
    auto store = graph::OpenLayerStore(dir_ + "/store", "vfs");
    if (!store.ok()) Fail(absl::StrCat("opening the store: ", store.status().ToString()));
    store_ = std::move(*store);
    Must(store_->Create("default/1/base-key", "", Opts(graph::LayerKind::kActive, {{"a", "1"}})).status(),
         "prepare base");
    Must(store_->Commit("default/2/base", "default/1/base-key", {{"containerd.io/gc.root", "x"}}).status(),
         "commit base");
    Must(store_->Create("default/3/work", "default/2/base", Opts(graph::LayerKind::kActive, {{"b", "2"}})).status(),
         "prepare work");
    Must(store_->Create("default/4/view", "default/2/base", Opts(graph::LayerKind::kView, {})).status(),
         "view");
    service_ = std::make_unique<snapshotter::SnapshotsService>(store_.get());
    clean_ = State();
  }

  // Every layer as text: name, parent, kind, labels, times.
  std::string State() {
    std::string out;
    absl::Status s = store_->Walk(std::vector<std::string>{}, [&](const graph::LayerInfo& l) {
      absl::StrAppend(&out, l.name.size(), ":", l.name, " ", l.parent.size(), ":", l.parent, " ",
                      graph::LayerKindName(l.kind), " ", absl::ToUnixNanos(l.created), " ",
                      absl::ToUnixNanos(l.updated), " {");
      for (const auto& [k, v] : l.labels) absl::StrAppend(&out, k.size(), ":", k, "=", v.size(), ":", v, ";");
      absl::StrAppend(&out, "}\n");
      return absl::OkStatus();
    });
    if (!s.ok()) Fail(absl::StrCat("walking the store: ", s.ToString()));
    return out;
  }

  bool Consistent() {
    auto report = store_->Check(/*repair=*/false);
    if (!report.ok()) Fail(absl::StrCat("check: ", report.status().ToString()));
    for (const std::string& p : report->problems) std::fprintf(stderr, "check: %s\n", p.c_str());
    return report->problems.empty();
  }

  snapshotter::SnapshotsService& service() { return *service_; }
  const std::string& clean() const { return clean_; }

 private:
  static graph::CreateLayerOptions Opts(graph::LayerKind kind, std::map<std::string, std::string> labels) {
    graph::CreateLayerOptions o;
    o.kind = kind;
    o.labels = std::move(labels);
    return o;
  }
  static void Must(const absl::Status& s, const char* what) {
    if (!s.ok()) Fail(absl::StrCat(what, ": ", s.ToString()));
  }

  std::string dir_;
  std::unique_ptr<graph::LayerStore> store_;
  std::unique_ptr<snapshotter::SnapshotsService> service_;
  std::string clean_;
};

Fixture* the_fixture = nullptr;

// libFuzzer ends with exit(): the store and its directory go with it.
void RemoveFixture() {
  delete the_fixture;
  the_fixture = nullptr;
}

Fixture& TheFixture() {
  if (the_fixture == nullptr) {
    the_fixture = new Fixture();
    std::atexit(RemoveFixture);
  }
  return *the_fixture;
}

// Parses `bytes` into a request of type R and calls `call` with it; false if
// the bytes are not a valid R (gRPC would have refused them before).
template <typename R, typename F>
bool With(const uint8_t* data, size_t size, F call, grpc::Status* status) {
  R request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return false;
  *status = call(request);
  return true;
}

bool Expected(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::CANCELLED:
      return true;
    default:
      return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Fixture& f = TheFixture();
  snapshotter::SnapshotsService& svc = f.service();
  const uint8_t method = data[0] % 10;
  ++data;
  --size;
  grpc::Status status;
  bool parsed = false;
  bool mutates = true;
  switch (method) {
    case 0:
      parsed = With<api::PrepareSnapshotRequest>(data, size, [&](const auto& r) {
        api::PrepareSnapshotResponse resp;
        return svc.Prepare(nullptr, &r, &resp);
      }, &status);
      break;
    case 1:
      parsed = With<api::ViewSnapshotRequest>(data, size, [&](const auto& r) {
        api::ViewSnapshotResponse resp;
        return svc.View(nullptr, &r, &resp);
      }, &status);
      break;
    case 2:
      mutates = false;
      parsed = With<api::MountsRequest>(data, size, [&](const auto& r) {
        api::MountsResponse resp;
        return svc.Mounts(nullptr, &r, &resp);
      }, &status);
      break;
    case 3:
      parsed = With<api::CommitSnapshotRequest>(data, size, [&](const auto& r) {
        google::protobuf::Empty resp;
        return svc.Commit(nullptr, &r, &resp);
      }, &status);
      break;
    case 4:
      parsed = With<api::RemoveSnapshotRequest>(data, size, [&](const auto& r) {
        google::protobuf::Empty resp;
        return svc.Remove(nullptr, &r, &resp);
      }, &status);
      break;
    case 5:
      mutates = false;
      parsed = With<api::StatSnapshotRequest>(data, size, [&](const auto& r) {
        api::StatSnapshotResponse resp;
        return svc.Stat(nullptr, &r, &resp);
      }, &status);
      break;
    case 6:
      parsed = With<api::UpdateSnapshotRequest>(data, size, [&](const auto& r) {
        api::UpdateSnapshotResponse resp;
        return svc.Update(nullptr, &r, &resp);
      }, &status);
      break;
    case 7:
      mutates = false;
      parsed = With<api::ListSnapshotsRequest>(data, size, [&](const auto& r) {
        int batches = 0;
        grpc::Status s = svc.List(r, [&](const api::ListSnapshotsResponse& b) {
          ++batches;
          // What is streamed must serialize (gRPC does it next).
          std::string wire;
          return b.SerializeToString(&wire);
        });
        if (s.ok() && batches > 1) Fail("more than one batch from a 4-layer store");
        return s;
      }, &status);
      break;
    case 8:
      mutates = false;
      parsed = With<api::UsageRequest>(data, size, [&](const auto& r) {
        api::UsageResponse resp;
        return svc.Usage(nullptr, &r, &resp);
      }, &status);
      break;
    case 9:
      parsed = With<api::CleanupRequest>(data, size, [&](const auto& r) {
        google::protobuf::Empty resp;
        return svc.Cleanup(nullptr, &r, &resp);
      }, &status);
      break;
  }
  if (!parsed) return 0;
  const std::string after = f.State();
  if (!status.ok()) {
    if (!Expected(status.error_code())) {
      Fail(absl::StrCat("method ", method, ": unexpected code ", status.error_code(), ": ",
                        status.error_message()));
    }
    if (after != f.clean()) {
      Fail(absl::StrCat("method ", method, " failed (", status.error_message(), ") but changed the store:\nbefore:\n",
                        f.clean(), "after:\n", after));
    }
    return 0;
  }
  if (!mutates && after != f.clean()) Fail(absl::StrCat("read-only method ", method, " changed the store"));
  if (after != f.clean()) {
    if (!f.Consistent()) Fail(absl::StrCat("method ", method, " left the store inconsistent"));
    f.Reset();
  }
  return 0;
}
