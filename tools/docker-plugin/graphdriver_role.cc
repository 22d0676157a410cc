#include "tools/docker-plugin/graphdriver_role.h"

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "tools/docker-plugin/pipe_stream.h"

namespace dockerplugin {
namespace {

constexpr char kRole[] = "GraphDriver";

absl::Status CheckId(const std::string& id, const char* what) {
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat("request has no ", what));
  absl::Status valid = graph::ValidateLayerId(id);
  if (!valid.ok()) return base::Annotate(valid, absl::StrCat("bad ", what));
  return absl::OkStatus();
}

// A layer the driver has (its id checked first).
absl::Status CheckLayer(const graph::Driver& driver, const std::string& id, const char* what) {
  RETURN_IF_ERROR(CheckId(id, what));
  if (!driver.Exists(id)) return absl::NotFoundError(absl::StrCat("no layer ", id));
  return absl::OkStatus();
}

// A request naming a layer and, optionally, a parent the driver has.
absl::StatusOr<GraphRequest> LayerRequest(const graph::Driver& driver, const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(CheckLayer(driver, req.id, "ID"));
  if (!req.parent.empty()) RETURN_IF_ERROR(CheckLayer(driver, req.parent, "Parent"));
  return req;
}

Json Empty() { return Json::object(); }

}  // namespace

GraphDriverRole::GraphDriverRole(std::unique_ptr<graph::Driver> driver,
                                 std::map<std::string, std::string> options)
    : driver_(std::move(driver)), options_(std::move(options)) {}

void GraphDriverRole::Register(Router& router) {
  router.AddRole(kRole);
  auto json = [&](const char* method, Router::JsonHandler handler) {
    router.HandleJson(absl::StrCat(kRole, ".", method), std::move(handler));
  };
  json("Init", [this](const std::string& b) { return Init(b); });
  json("Create", [this](const std::string& b) { return Create(b, false); });
  json("CreateReadWrite", [this](const std::string& b) { return Create(b, true); });
  json("Remove", [this](const std::string& b) { return Remove(b); });
  json("Get", [this](const std::string& b) { return Get(b); });
  json("Put", [this](const std::string& b) { return Put(b); });
  json("Exists", [this](const std::string& b) { return Exists(b); });
  json("Status", [this](const std::string&) { return Status(); });
  json("GetMetadata", [this](const std::string& b) { return GetMetadata(b); });
  json("Cleanup", [this](const std::string&) { return Cleanup(); });
  json("Capabilities", [](const std::string&) -> absl::StatusOr<Json> {
    // Diff writes a fresh tar of the layer's content, not the bytes ApplyDiff
    // read: dockerd keeps tar-split data to reproduce pushed layers exactly.
    return Json{{"Capabilities", {{"ReproducesExactDiffs", false}}}};
  });
  json("Changes", [this](const std::string& b) { return Changes(b); });
  json("DiffSize", [this](const std::string& b) { return DiffSize(b); });
  router.HandleJsonIn(absl::StrCat(kRole, ".Diff"),
                      [this](const std::string& b, httplib::Response& res) { Diff(b, res); });
  router.HandleStream(absl::StrCat(kRole, ".ApplyDiff"),
                      [this](const httplib::Request& req, httplib::Response& res,
                             const httplib::ContentReader& reader) { ApplyDiff(req, res, reader); });
}

absl::StatusOr<Json> GraphDriverRole::Init(const std::string& body) {
  ASSIGN_OR_RETURN(InitRequest req, DecodeInitRequest(body));
  if (req.id_maps) {
    return absl::FailedPreconditionError("dmthin plugin does not support user namespace remapping");
  }
  // dockerd's --storage-opt: the driver was opened with the plugin's own
  // options, so only those are in force.
  for (const std::string& kv : req.opts) {
    size_t eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    auto it = options_.find(key);
    if (eq == std::string::npos || it == options_.end() || it->second != kv.substr(eq + 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "storage option '", kv, "' is not in force: give driver options to the plugin "
          "(dmthin-docker-plugin --storage-opt), not to dockerd"));
    }
  }
  return Empty();
}

absl::StatusOr<Json> GraphDriverRole::Create(const std::string& body, bool read_write) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(CheckId(req.id, "ID"));
  if (!req.parent.empty()) RETURN_IF_ERROR(CheckLayer(*driver_, req.parent, "Parent"));
  graph::CreateOptions options;
  options.read_write = read_write;
  options.mount_label = req.mount_label;
  options.storage_options = req.storage_opt;
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(driver_->Create(req.id, req.parent, options));
  if (!read_write) fresh_[req.id] = Fresh{req.parent, options};
  return Empty();
}

absl::StatusOr<Json> GraphDriverRole::Remove(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(CheckLayer(*driver_, req.id, "ID"));
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(driver_->Remove(req.id));
  fresh_.erase(req.id);
  return Empty();
}

absl::StatusOr<Json> GraphDriverRole::Get(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(CheckLayer(*driver_, req.id, "ID"));
  ASSIGN_OR_RETURN(std::string dir, driver_->Get(req.id, req.mount_label));
  return Json{{"Dir", dir}};
}

absl::StatusOr<Json> GraphDriverRole::Put(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(CheckLayer(*driver_, req.id, "ID"));
  RETURN_IF_ERROR(driver_->Put(req.id));
  return Empty();
}

absl::StatusOr<Json> GraphDriverRole::Exists(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  bool exists = CheckId(req.id, "ID").ok() && driver_->Exists(req.id);
  return Json{{"Exists", exists}};
}

absl::StatusOr<Json> GraphDriverRole::Status() {
  Json rows = Json::array();
  rows.push_back({"Graph Driver", driver_->Name()});
  for (const auto& [key, value] : driver_->Status()) rows.push_back({key, value});
  return Json{{"Status", rows}};
}

absl::StatusOr<Json> GraphDriverRole::GetMetadata(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(CheckLayer(*driver_, req.id, "ID"));
  ASSIGN_OR_RETURN(auto metadata, driver_->Metadata(req.id));
  Json out = Json::object();
  for (const auto& [key, value] : metadata) out[key] = value;
  return Json{{"Metadata", out}};
}

absl::StatusOr<Json> GraphDriverRole::Cleanup() {
  RETURN_IF_ERROR(driver_->Cleanup());
  return Empty();
}

absl::StatusOr<Json> GraphDriverRole::Changes(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, LayerRequest(*driver_, body));
  ASSIGN_OR_RETURN(std::vector<graph::Change> changes, driver_->Changes(req.id, req.parent));
  Json out = Json::array();
  // moby's archive.Change: Kind 0 modify, 1 add, 2 delete (graph::ChangeKind).
  for (const graph::Change& c : changes) out.push_back({{"Path", c.path}, {"Kind", static_cast<int>(c.kind)}});
  return Json{{"Changes", out}};
}

absl::StatusOr<Json> GraphDriverRole::DiffSize(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, LayerRequest(*driver_, body));
  ASSIGN_OR_RETURN(int64_t size, driver_->DiffSize(req.id, req.parent));
  return Json{{"Size", size}};
}

void GraphDriverRole::Diff(const std::string& body, httplib::Response& res) {
  auto decoded = LayerRequest(*driver_, body);
  if (!decoded.ok()) return ReplyJson(res, decoded.status());
  graph::Driver* driver = driver_.get();
  auto out = PipeOut::Start([driver, id = decoded->id, parent = decoded->parent](graph::ByteSink& sink) {
    return driver->Diff(id, parent, sink).status();
  });
  if (!out.ok()) return ReplyJson(res, out.status());
  std::shared_ptr<PipeOut> pipe = *out;
  res.status = 200;
  res.set_chunked_content_provider(
      "application/x-tar", [pipe](size_t, httplib::DataSink& sink) { return pipe->Provide(sink); });
}

void GraphDriverRole::ApplyDiff(const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader) {
  std::string id = req.get_param_value("id");
  std::string parent = req.get_param_value("parent");
  int64_t size = 0;
  absl::Status applied = ApplyDiffStream(id, parent, reader, &size);
  if (!applied.ok()) return ReplyJson(res, applied);
  ReplyJson(res, Json{{"Size", size}});
}

absl::Status GraphDriverRole::ApplyDiffStream(const std::string& id, const std::string& parent,
                                              const httplib::ContentReader& reader, int64_t* size) {
  absl::Status checked = CheckLayer(*driver_, id, "id");
  if (checked.ok() && !parent.empty()) checked = CheckLayer(*driver_, parent, "parent");
  Fresh fresh;
  if (checked.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = fresh_.find(id);
    if (it == fresh_.end()) {
      checked = absl::FailedPreconditionError(absl::StrCat(
          "layer ", id, " is not an empty image layer made by Create: ApplyDiff fills new layers only"));
    } else if (it->second.parent != parent) {
      checked = absl::InvalidArgumentError(absl::StrCat("layer ", id, " was created on parent '",
                                                        it->second.parent, "', not '", parent, "'"));
    } else {
      // Taken out while applying: a second ApplyDiff of the same layer fails.
      fresh = std::move(it->second);
      fresh_.erase(it);
    }
  }
  if (!checked.ok()) {
    // Read and drop the body so the connection stays in step.
    reader([](const char*, size_t) { return true; });
    return checked;
  }

  graph::Driver* driver = driver_.get();
  absl::StatusOr<graph::ApplyDiffResult> result = absl::UnknownError("not applied");
  auto piped = PipeIn(reader, [&](graph::ByteSource& source) {
    result = driver->ApplyDiff(id, parent, source);
    return result.status();
  });
  absl::Status status = piped.ok() ? piped->consumed : piped.status();
  if (status.ok() && !piped->body_complete) {
    status = absl::DataLossError("the layer tar was cut short (client went away)");
  }
  if (status.ok()) {
    *size = result->size;
    return absl::OkStatus();
  }
  // Make the layer empty again, as Create left it.
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status undone = driver_->Remove(id);
  if (undone.ok()) undone = driver_->Create(id, fresh.parent, fresh.options);
  if (!undone.ok()) {
    return base::Annotate(status, absl::StrCat("applying layer ", id, " (and emptying it again failed: ",
                                               undone.message(), ")"));
  }
  fresh_[id] = std::move(fresh);
  return base::Annotate(status, absl::StrCat("applying layer ", id));
}

}  // namespace dockerplugin
