// The JSON of Docker's plugin protocol: request bodies decoded into checked
// structs, response bodies encoded. Pure code (no I/O), so the decoders can be
// fuzzed (tests/fuzz/docker_plugin_codec_fuzz.cc).
//
// Docker's Go client (moby pkg/plugins, daemon/graphdriver/proxy.go) sends
// `{"ID":..,"Parent":..,"MountLabel":..,"StorageOpt":{..}}` with empty fields
// left out, an empty body for argument-less calls, and reads `{"Err":".."}`
// on failure. Unknown fields are ignored (as Go's encoding/json does); a
// known field of the wrong type, a body that is not one JSON object, or
// invalid UTF-8 is InvalidArgument.
#ifndef DMTHIN_TOOLS_DOCKER_PLUGIN_CODEC_H_
#define DMTHIN_TOOLS_DOCKER_PLUGIN_CODEC_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace dockerplugin {

using Json = nlohmann::ordered_json;

// Parses a request body: "" and "null" are an empty object; anything other
// than a JSON object is InvalidArgument.
absl::StatusOr<Json> ParseRequestBody(absl::string_view body);

// GraphDriver.{Create,CreateReadWrite,Remove,Get,Put,Exists,GetMetadata,
// Diff,Changes,DiffSize}: moby's graphDriverRequest.
struct GraphRequest {
  std::string id;
  std::string parent;
  std::string mount_label;
  std::map<std::string, std::string> storage_opt;
};
absl::StatusOr<GraphRequest> DecodeGraphRequest(absl::string_view body);

// GraphDriver.Init: moby's graphDriverInitRequest.
struct InitRequest {
  std::string home;
  std::vector<std::string> opts;  // dockerd's --storage-opt, "KEY=VALUE"
  bool id_maps = false;           // UIDMaps or GIDMaps not empty (userns-remap)
};
absl::StatusOr<InitRequest> DecodeInitRequest(absl::string_view body);

// VolumeDriver.{Create,Remove,Mount,Unmount,Path,Get}: moby's volume plugin
// request, {"Name": .., "Opts": {..}, "ID": ..} (Opts on Create only, ID on
// Mount and Unmount).
struct VolumeRequest {
  std::string name;
  std::string id;
  std::map<std::string, std::string> opts;
};
absl::StatusOr<VolumeRequest> DecodeVolumeRequest(absl::string_view body);

// Serialises a response (invalid UTF-8 in strings is replaced, never thrown).
std::string Encode(const Json& doc);

// {"Err": message}.
std::string EncodeError(absl::string_view message);

}  // namespace dockerplugin

#endif  // DMTHIN_TOOLS_DOCKER_PLUGIN_CODEC_H_
