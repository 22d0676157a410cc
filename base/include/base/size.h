// Sizes as people write them: "10G", "512M", "64K", "1.5T", "2048s" (512-byte
// sectors), "4096" (bytes). Suffixes are binary (K = 1024); "KiB"/"KB" and
// lowercase forms mean the same.
#ifndef DMTHIN_BASE_SIZE_H_
#define DMTHIN_BASE_SIZE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace base {

// Bytes denoted by `text`; InvalidArgument naming the text when it is empty,
// malformed, negative, fractional below a byte, or above 2^63.
absl::StatusOr<uint64_t> ParseSize(absl::string_view text);

// "0 B", "512 B", "64.0 KiB", "1.50 GiB": three significant digits.
std::string FormatSize(uint64_t bytes);

}  // namespace base
DMTHIN_API_END

#endif  // DMTHIN_BASE_SIZE_H_
