// Fuzzes table text parsing: an accepted table must format to text that
// parses back to an equal table (the adopt-by-equality property), and
// formatting must be stable.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "libdm/table.h"
#include "libdm/thin.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto table = dm::Table::ParseText(text);
  if (table.ok()) {
    (void)table->Validate();
    std::string formatted = table->ToString();
    auto again = dm::Table::ParseText(formatted);
    if (!again.ok() || !(*again == *table)) std::abort();
    if (again->ToString() != formatted) std::abort();
  }
  // Thin-pool messages never format ids over 24 bits.
  if (size >= 8) {
    uint32_t a = data[0] | data[1] << 8 | data[2] << 16 | uint32_t{data[3]} << 24;
    uint32_t b = data[4] | data[5] << 8 | data[6] << 16 | uint32_t{data[7]} << 24;
    auto m = dm::FormatThinPoolMessage(dm::thin_msg::CreateSnap{a, b});
    if (m.ok() && (a > dm::kMaxThinDeviceId || b > dm::kMaxThinDeviceId || a == b)) std::abort();
  }
  return 0;
}
