// Fuzzes dmthin-docker-plugin's request decoding (tools/docker-plugin/codec.*):
// any body is either decoded or refused with InvalidArgument — never a crash,
// an exception or a hang — and what is decoded, and any error message,
// encodes back to JSON that parses. VolumeDriver requests too, with their
// options' values through the size parser (the `size` option).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "base/size.h"
#include "tools/docker-plugin/codec.h"

namespace {

void MustParse(const std::string& encoded) {
  if (dockerplugin::Json::parse(encoded, nullptr, false).is_discarded()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view body(reinterpret_cast<const char*>(data), size);
  auto graph = dockerplugin::DecodeGraphRequest(body);
  if (graph.ok()) {
    dockerplugin::Json echo{{"ID", graph->id}, {"Parent", graph->parent}, {"MountLabel", graph->mount_label}};
    for (const auto& [k, v] : graph->storage_opt) echo["StorageOpt"][k] = v;
    MustParse(dockerplugin::Encode(echo));
  } else if (graph.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  } else {
    MustParse(dockerplugin::EncodeError(graph.status().message()));
  }
  auto volume = dockerplugin::DecodeVolumeRequest(body);
  if (volume.ok()) {
    dockerplugin::Json echo{{"Name", volume->name}, {"ID", volume->id}};
    for (const auto& [k, v] : volume->opts) {
      echo["Opts"][k] = v;
      auto size = base::ParseSize(v);
      if (!size.ok() && size.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    }
    MustParse(dockerplugin::Encode(echo));
  } else if (volume.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }
  auto init = dockerplugin::DecodeInitRequest(body);
  if (!init.ok() && init.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
  // Error messages carry request text (ids): invalid UTF-8 must not throw.
  MustParse(dockerplugin::EncodeError(body));
  return 0;
}
