#include "base/size.h"

#include <cctype>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace base {

absl::StatusOr<uint64_t> ParseSize(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid size '", text, "': ", why,
        " (use a number with K, M, G, T (powers of 1024) or s (512-byte sectors), e.g. 10G)"));
  };
  absl::string_view s = absl::StripAsciiWhitespace(text);
  if (s.empty()) return bad("empty");
  size_t i = 0;
  unsigned __int128 whole = 0;
  while (i < s.size() && absl::ascii_isdigit(s[i])) {
    whole = whole * 10 + (s[i] - '0');
    if (whole > (static_cast<unsigned __int128>(1) << 64)) return bad("too large");
    ++i;
  }
  if (i == 0) return bad(s[0] == '-' ? "negative" : "no number");
  // Up to 9 fractional digits, kept exactly as a ratio.
  uint64_t frac = 0, frac_scale = 1;
  if (i < s.size() && s[i] == '.') {
    ++i;
    size_t start = i;
    while (i < s.size() && absl::ascii_isdigit(s[i])) {
      if (frac_scale < 1000000000ULL) {
        frac = frac * 10 + (s[i] - '0');
        frac_scale *= 10;
      }
      ++i;
    }
    if (i == start) return bad("no digits after '.'");
  }
  std::string unit = absl::AsciiStrToLower(absl::StripAsciiWhitespace(s.substr(i)));
  uint64_t mult;
  if (unit.empty() || unit == "b") mult = 1;
  else if (unit == "s") mult = 512;
  else if (unit == "k" || unit == "kb" || unit == "kib") mult = 1ULL << 10;
  else if (unit == "m" || unit == "mb" || unit == "mib") mult = 1ULL << 20;
  else if (unit == "g" || unit == "gb" || unit == "gib") mult = 1ULL << 30;
  else if (unit == "t" || unit == "tb" || unit == "tib") mult = 1ULL << 40;
  else if (unit == "p" || unit == "pb" || unit == "pib") mult = 1ULL << 50;
  else return bad(absl::StrCat("unknown unit '", s.substr(i), "'"));
  unsigned __int128 bytes = whole * mult;
  unsigned __int128 frac_bytes = static_cast<unsigned __int128>(frac) * mult;
  if (frac_bytes % frac_scale != 0) return bad("not a whole number of bytes");
  bytes += frac_bytes / frac_scale;
  if (bytes > (static_cast<unsigned __int128>(1) << 63)) return bad("too large");
  return static_cast<uint64_t>(bytes);
}

std::string FormatSize(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, v >= 100 ? "%.0f %s" : v >= 10 ? "%.1f %s" : "%.2f %s", v,
                kUnits[u]);
  return buf;
}

}  // namespace base
