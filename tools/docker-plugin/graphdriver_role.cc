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

Json Empty() { return Json::object(); }

}  // namespace

GraphDriverRole::GraphDriverRole(std::unique_ptr<graph::LayerStore> store,
                                 std::map<std::string, std::string> options)
    : store_(std::move(store)), options_(std::move(options)) {}

absl::StatusOr<graph::LayerInfo> GraphDriverRole::Layer(const std::string& id, const char* what) {
  RETURN_IF_ERROR(CheckId(id, what));
  absl::StatusOr<graph::LayerInfo> info = store_->Stat(id);
  if (absl::IsNotFound(info.status())) return absl::NotFoundError(absl::StrCat("no layer ", id));
  return info;
}

absl::Status GraphDriverRole::CheckLayer(const std::string& id, const char* what) {
  RETURN_IF_ERROR(CheckId(id, what));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fresh_.count(id) > 0) return absl::OkStatus();
  }
  return Layer(id, what).status();
}

absl::StatusOr<graph::LayerInfo> GraphDriverRole::LayerAndParent(const GraphRequest& req) {
  ASSIGN_OR_RETURN(graph::LayerInfo info, Layer(req.id, "ID"));
  if (!req.parent.empty()) RETURN_IF_ERROR(Layer(req.parent, "Parent").status());
  if (req.parent != info.parent) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", req.id, " sits on '", info.parent, "', not '",
                                                   req.parent, "'"));
  }
  return info;
}

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
  if (!req.parent.empty()) RETURN_IF_ERROR(CheckLayer(req.parent, "Parent"));
  if (!read_write) {
    // An image layer: made by the ApplyDiff that follows (one import).
    if (!req.storage_opt.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "storage option '", req.storage_opt.begin()->first,
          "' on image layer ", req.id, ": dockerd gives storage options to read-write layers only"));
    }
    if (store_->Stat(req.id).ok()) return absl::AlreadyExistsError(absl::StrCat("layer ", req.id, " exists"));
    std::lock_guard<std::mutex> lock(mu_);
    if (!fresh_.emplace(req.id, req.parent).second) {
      return absl::AlreadyExistsError(absl::StrCat("layer ", req.id, " exists (announced, not yet filled)"));
    }
    return Empty();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fresh_.count(req.id) > 0) return absl::AlreadyExistsError(absl::StrCat("layer ", req.id, " exists"));
  }
  graph::CreateLayerOptions options;
  options.kind = graph::LayerKind::kActive;
  options.any_parent = true;  // a container layer sits on its -init layer
  options.storage_options = req.storage_opt;
  absl::StatusOr<graph::LayerInfo> made = store_->Create(req.id, req.parent, options);
  if (absl::IsAlreadyExists(made.status())) return absl::AlreadyExistsError(absl::StrCat("layer ", req.id, " exists"));
  RETURN_IF_ERROR(made.status());
  return Empty();
}

absl::StatusOr<Json> GraphDriverRole::Remove(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(CheckId(req.id, "ID"));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fresh_.erase(req.id) > 0) return Empty();
  }
  RETURN_IF_ERROR(Layer(req.id, "ID").status());
  // dockerd Puts before it Removes: a layer still mounted is someone else's
  // (graphctl mount --ro) and is refused.
  RETURN_IF_ERROR(store_->Remove(req.id));
  return Empty();
}

absl::StatusOr<Json> GraphDriverRole::Get(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(Layer(req.id, "ID").status());
  ASSIGN_OR_RETURN(std::string dir, store_->Mount(req.id));
  return Json{{"Dir", dir}};
}

absl::StatusOr<Json> GraphDriverRole::Put(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(Layer(req.id, "ID").status());
  RETURN_IF_ERROR(store_->Unmount(req.id));
  return Empty();
}

absl::StatusOr<Json> GraphDriverRole::Exists(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  bool exists = CheckLayer(req.id, "ID").ok();
  return Json{{"Exists", exists}};
}

absl::StatusOr<Json> GraphDriverRole::Status() {
  Json rows = Json::array();
  rows.push_back({"Graph Driver", store_->driver().Name()});
  for (const auto& [key, value] : store_->driver().Status()) rows.push_back({key, value});
  return Json{{"Status", rows}};
}

absl::StatusOr<Json> GraphDriverRole::GetMetadata(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(Layer(req.id, "ID").status());
  ASSIGN_OR_RETURN(auto metadata, store_->Metadata(req.id));
  Json out = Json::object();
  for (const auto& [key, value] : metadata) out[key] = value;
  // Where to look with graphctl (graphctl --root LAYERSTORE mount LAYER --ro DIR).
  out["LayerStore"] = store_->root();
  out["Layer"] = req.id;
  return Json{{"Metadata", out}};
}

absl::StatusOr<Json> GraphDriverRole::Cleanup() {
  RETURN_IF_ERROR(store_->driver().Cleanup());
  return Empty();
}

absl::StatusOr<Json> GraphDriverRole::Changes(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  RETURN_IF_ERROR(LayerAndParent(req).status());
  ASSIGN_OR_RETURN(std::vector<graph::Change> changes, store_->Changes(req.id));
  Json out = Json::array();
  // moby's archive.Change: Kind 0 modify, 1 add, 2 delete (graph::ChangeKind).
  for (const graph::Change& c : changes) out.push_back({{"Path", c.path}, {"Kind", static_cast<int>(c.kind)}});
  return Json{{"Changes", out}};
}

absl::StatusOr<Json> GraphDriverRole::DiffSize(const std::string& body) {
  ASSIGN_OR_RETURN(GraphRequest req, DecodeGraphRequest(body));
  ASSIGN_OR_RETURN(graph::LayerInfo layer, LayerAndParent(req));
  std::string parent_cache;
  if (!req.parent.empty()) {
    ASSIGN_OR_RETURN(graph::LayerInfo parent, store_->Stat(req.parent));
    parent_cache = parent.cache_id;
  }
  ASSIGN_OR_RETURN(int64_t size, store_->driver().DiffSize(layer.cache_id, parent_cache));
  return Json{{"Size", size}};
}

void GraphDriverRole::Diff(const std::string& body, httplib::Response& res) {
  auto decoded = DecodeGraphRequest(body);
  absl::Status checked = decoded.status();
  if (checked.ok()) checked = LayerAndParent(*decoded).status();
  if (!checked.ok()) return ReplyJson(res, checked);
  graph::LayerStore* store = store_.get();
  auto out = PipeOut::Start([store, id = decoded->id](graph::ByteSink& sink) {
    return store->Diff(id, sink).status();
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
  absl::Status checked = CheckLayer(id, "id");
  if (checked.ok() && !parent.empty()) checked = CheckLayer(parent, "parent");
  if (checked.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = fresh_.find(id);
    if (it == fresh_.end()) {
      checked = absl::FailedPreconditionError(absl::StrCat(
          "layer ", id, " is not an empty image layer made by Create: ApplyDiff fills new layers only"));
    } else if (it->second != parent) {
      checked = absl::InvalidArgumentError(
          absl::StrCat("layer ", id, " was created on parent '", it->second, "', not '", parent, "'"));
    } else {
      // Taken out while applying: a second ApplyDiff of the same layer fails.
      fresh_.erase(it);
    }
  }
  if (!checked.ok()) {
    // Read and drop the body so the connection stays in step.
    reader([](const char*, size_t) { return true; });
    return checked;
  }

  graph::ImportOptions options;
  options.name = id;
  options.parent = parent;
  absl::StatusOr<graph::LayerInfo> imported = absl::UnknownError("not applied");
  auto piped = PipeIn(reader, [&](graph::ByteSource& source) {
    imported = store_->Import(source, options);
    return imported.status();
  });
  absl::Status status = piped.ok() ? piped->consumed : piped.status();
  if (status.ok() && !piped->body_complete) {
    status = absl::DataLossError("the layer tar was cut short (client went away)");
  }
  if (status.ok()) {
    *size = imported->size;
    return absl::OkStatus();
  }
  // A layer the import made from a tar cut short goes again; either way the
  // layer is announced and empty, as Create left it.
  if (imported.ok()) {
    graph::RemoveOptions force;
    force.force = true;
    if (absl::Status undone = store_->Remove(id, force); !undone.ok()) {
      return base::Annotate(status, absl::StrCat("applying layer ", id, " (and removing it again failed: ",
                                                 undone.message(), ")"));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  fresh_[id] = parent;
  return base::Annotate(status, absl::StrCat("applying layer ", id));
}

}  // namespace dockerplugin
