// Fuzzes the thin-pool and thin status parsers: whatever they accept must
// format back to text that parses to the same value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "libdm/thin.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  if (auto pool = dm::ParseThinPoolStatus(text); pool.ok()) {
    auto again = dm::ParseThinPoolStatus(dm::FormatThinPoolStatus(*pool));
    if (!again.ok() || !(*again == *pool)) std::abort();
  }
  if (auto thin = dm::ParseThinStatus(text); thin.ok()) {
    auto again = dm::ParseThinStatus(dm::FormatThinStatus(*thin));
    if (!again.ok() || !(*again == *thin)) std::abort();
  }
  return 0;
}
