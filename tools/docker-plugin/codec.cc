#include "tools/docker-plugin/codec.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace dockerplugin {
namespace {

// A string field (absent or null = ""); another type is an error.
absl::Status GetString(const Json& doc, const char* key, std::string* out) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return absl::InvalidArgumentError(absl::StrCat("field ", key, " must be a string"));
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status GetStringMap(const Json& doc, const char* key, std::map<std::string, std::string>* out) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return absl::InvalidArgumentError(absl::StrCat("field ", key, " must be an object"));
  for (const auto& [k, v] : it->items()) {
    if (!v.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("field ", key, ".", k, " must be a string"));
    }
    (*out)[k] = v.get<std::string>();
  }
  return absl::OkStatus();
}

absl::Status GetStringList(const Json& doc, const char* key, std::vector<std::string>* out) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return absl::InvalidArgumentError(absl::StrCat("field ", key, " must be an array"));
  for (const Json& v : *it) {
    if (!v.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("field ", key, " must hold strings"));
    }
    out->push_back(v.get<std::string>());
  }
  return absl::OkStatus();
}

// True if `key` holds a non-empty array; an error if it holds a non-array.
absl::StatusOr<bool> NonEmptyArray(const Json& doc, const char* key) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) return false;
  if (!it->is_array()) return absl::InvalidArgumentError(absl::StrCat("field ", key, " must be an array"));
  return !it->empty();
}

}  // namespace

absl::StatusOr<Json> ParseRequestBody(absl::string_view body) {
  if (body.empty()) return Json::object();
  Json doc = Json::parse(body.begin(), body.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError("request body is not valid JSON");
  if (doc.is_null()) return Json::object();
  if (!doc.is_object()) return absl::InvalidArgumentError("request body must be a JSON object");
  return doc;
}

absl::StatusOr<GraphRequest> DecodeGraphRequest(absl::string_view body) {
  auto doc = ParseRequestBody(body);
  if (!doc.ok()) return doc.status();
  GraphRequest req;
  absl::Status s = GetString(*doc, "ID", &req.id);
  if (s.ok()) s = GetString(*doc, "Parent", &req.parent);
  if (s.ok()) s = GetString(*doc, "MountLabel", &req.mount_label);
  if (s.ok()) s = GetStringMap(*doc, "StorageOpt", &req.storage_opt);
  if (!s.ok()) return s;
  return req;
}

absl::StatusOr<InitRequest> DecodeInitRequest(absl::string_view body) {
  auto doc = ParseRequestBody(body);
  if (!doc.ok()) return doc.status();
  InitRequest req;
  absl::Status s = GetString(*doc, "Home", &req.home);
  if (s.ok()) s = GetStringList(*doc, "Opts", &req.opts);
  if (!s.ok()) return s;
  for (const char* key : {"UIDMaps", "GIDMaps"}) {
    auto present = NonEmptyArray(*doc, key);
    if (!present.ok()) return present.status();
    req.id_maps = req.id_maps || *present;
  }
  return req;
}

absl::StatusOr<VolumeRequest> DecodeVolumeRequest(absl::string_view body) {
  auto doc = ParseRequestBody(body);
  if (!doc.ok()) return doc.status();
  VolumeRequest req;
  absl::Status s = GetString(*doc, "Name", &req.name);
  if (s.ok()) s = GetString(*doc, "ID", &req.id);
  if (s.ok()) s = GetStringMap(*doc, "Opts", &req.opts);
  if (!s.ok()) return s;
  return req;
}

std::string Encode(const Json& doc) {
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string EncodeError(absl::string_view message) {
  Json doc;
  doc["Err"] = std::string(message);
  return Encode(doc);
}

}  // namespace dockerplugin
