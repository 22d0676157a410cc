// Fuzzes the containerd filter parser (graph/filter.h): an accepted filter
// prints to a canonical text that parses back to the same text, matching
// never crashes, and a rejected one says where (InvalidArgument).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "graph/filter.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<graph::Filter> f = graph::Filter::Parse(text);
  if (!f.ok()) {
    if (f.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  std::string canonical = f->ToString();
  absl::StatusOr<graph::Filter> again = graph::Filter::Parse(canonical);
  if (!again.ok() || again->ToString() != canonical) std::abort();
  // Match against an object whose every field is the input itself, and one
  // with no fields.
  (void)f->Match([&](const std::vector<std::string>&) -> std::optional<absl::string_view> {
    return absl::string_view(text);
  });
  (void)f->Match([](const std::vector<std::string>&) -> std::optional<absl::string_view> {
    return std::nullopt;
  });
  return 0;
}
