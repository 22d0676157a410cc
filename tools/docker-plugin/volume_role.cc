#include "tools/docker-plugin/volume_role.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/size.h"
#include "base/status.h"

namespace dockerplugin {
namespace {

constexpr char kRole[] = "VolumeDriver";

absl::StatusOr<VolumeRequest> NamedRequest(const std::string& body) {
  ASSIGN_OR_RETURN(VolumeRequest req, DecodeVolumeRequest(body));
  RETURN_IF_ERROR(volume::ValidateVolumeName(req.name));
  return req;
}

// Docker's caller id for Mount/Unmount; one is always sent, but an empty
// one still counts as a caller.
std::string Caller(const VolumeRequest& req) { return req.id.empty() ? "-" : req.id; }

}  // namespace

VolumeDriverRole::VolumeDriverRole(std::unique_ptr<volume::VolumeStore> store)
    : store_(std::move(store)) {}

void VolumeDriverRole::Register(Router& router) {
  router.AddRole(kRole);
  auto json = [&](const char* method, Router::JsonHandler handler) {
    router.HandleJson(absl::StrCat(kRole, ".", method), std::move(handler));
  };
  json("Create", [this](const std::string& b) { return Create(b); });
  json("Remove", [this](const std::string& b) { return Remove(b); });
  json("Mount", [this](const std::string& b) { return Mount(b); });
  json("Unmount", [this](const std::string& b) { return Unmount(b); });
  json("Path", [this](const std::string& b) { return Path(b); });
  json("Get", [this](const std::string& b) { return Get(b); });
  json("List", [this](const std::string&) { return List(); });
  json("Capabilities", [](const std::string&) -> absl::StatusOr<Json> {
    return Json{{"Capabilities", {{"Scope", "local"}}}};
  });
}

absl::StatusOr<Json> VolumeDriverRole::Create(const std::string& body) {
  ASSIGN_OR_RETURN(VolumeRequest req, NamedRequest(body));
  volume::CreateOptions co;
  std::string from;
  bool nocopy = false;
  for (const auto& [key, value] : req.opts) {
    if (key == "size") {
      absl::StatusOr<uint64_t> size = base::ParseSize(value);
      if (!size.ok()) return base::Annotate(size.status(), "option size");
      co.size_bytes = *size;
    } else if (key == "fs") {
      co.fs = value;
    } else if (key == "from") {
      from = value;
    } else if (key == "nocopy") {
      nocopy = value.empty() || value == "true" || value == "1";
    } else if (key == "backend") {
      ASSIGN_OR_RETURN(co.backend, volume::ParseBackend(value));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown volume option \"", key, "\" (size, fs, from, nocopy, backend)"));
    }
  }
  if (!from.empty()) {
    if (co.size_bytes != 0 || !co.fs.empty() || co.backend) {
      return absl::InvalidArgumentError(
          "option from takes the source's size, fs and backend; drop size/fs/backend");
    }
    RETURN_IF_ERROR(store_->Snapshot(from, req.name, co.labels).status());
  } else {
    RETURN_IF_ERROR(store_->Create(req.name, co).status());
  }
  if (nocopy) RETURN_IF_ERROR(store_->Populate(req.name, "", /*skip=*/true));
  return Json::object();
}

absl::StatusOr<Json> VolumeDriverRole::Remove(const std::string& body) {
  ASSIGN_OR_RETURN(VolumeRequest req, NamedRequest(body));
  RETURN_IF_ERROR(store_->Remove(req.name));
  return Json::object();
}

absl::StatusOr<Json> VolumeDriverRole::Mount(const std::string& body) {
  ASSIGN_OR_RETURN(VolumeRequest req, NamedRequest(body));
  ASSIGN_OR_RETURN(std::string path, store_->Mount(req.name, Caller(req)));
  return Json{{"Mountpoint", path}};
}

absl::StatusOr<Json> VolumeDriverRole::Unmount(const std::string& body) {
  ASSIGN_OR_RETURN(VolumeRequest req, NamedRequest(body));
  RETURN_IF_ERROR(store_->Unmount(req.name, Caller(req)));
  return Json::object();
}

absl::StatusOr<Json> VolumeDriverRole::Path(const std::string& body) {
  ASSIGN_OR_RETURN(VolumeRequest req, NamedRequest(body));
  ASSIGN_OR_RETURN(std::string path, store_->Path(req.name));
  return Json{{"Mountpoint", path}};
}

absl::StatusOr<Json> VolumeDriverRole::Get(const std::string& body) {
  ASSIGN_OR_RETURN(VolumeRequest req, NamedRequest(body));
  ASSIGN_OR_RETURN(volume::VolumeInfo v, store_->Get(req.name));
  Json status = {{"backend", std::string(volume::BackendName(v.backend))},
                 {"fs", v.fs},
                 {"size_bytes", v.size_bytes},
                 {"mount_refs", v.mount_refs}};
  if (!v.origin.empty()) status["origin"] = v.origin;
  absl::StatusOr<volume::Usage> usage = store_->GetUsage(v.name);
  if (usage.ok()) status["used_bytes"] = usage->used_bytes;
  return Json{{"Volume", {{"Name", v.name}, {"Mountpoint", v.path}, {"Status", status}}}};
}

absl::StatusOr<Json> VolumeDriverRole::List() {
  ASSIGN_OR_RETURN(std::vector<volume::VolumeInfo> volumes, store_->List());
  Json list = Json::array();
  for (const volume::VolumeInfo& v : volumes) {
    list.push_back({{"Name", v.name}, {"Mountpoint", v.path}});
  }
  return Json{{"Volumes", list}};
}

}  // namespace dockerplugin
