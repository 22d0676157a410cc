#include "base/utf8.h"

#include <cstdint>

#include "absl/strings/str_format.h"

namespace base {

size_t Utf8SequenceLength(absl::string_view s) {
  if (s.empty()) return 0;
  auto at = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  uint8_t b0 = at(0);
  if (b0 < 0x80) return 1;
  size_t n;
  uint8_t lo = 0x80, hi = 0xbf;  // allowed range of the second byte
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    n = 2;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    n = 3;
    if (b0 == 0xe0) lo = 0xa0;  // overlong
    if (b0 == 0xed) hi = 0x9f;  // surrogates
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    n = 4;
    if (b0 == 0xf0) lo = 0x90;  // overlong
    if (b0 == 0xf4) hi = 0x8f;  // > U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < n) return 0;
  if (at(1) < lo || at(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (at(i) < 0x80 || at(i) > 0xbf) return 0;
  }
  return n;
}

bool IsValidUtf8(absl::string_view s) {
  while (!s.empty()) {
    size_t n = Utf8SequenceLength(s);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

std::string EscapeForText(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    unsigned char c = static_cast<unsigned char>(s[0]);
    size_t n = Utf8SequenceLength(s);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7f || n == 0) {
      out += absl::StrFormat("\\x%02x", c);
      n = 1;
    } else if (n == 2 && c == 0xc2 && static_cast<unsigned char>(s[1]) < 0xa0) {
      // C1 controls (U+0080..U+009F): terminals act on them too.
      out += absl::StrFormat("\\x%02x\\x%02x", c, static_cast<unsigned char>(s[1]));
    } else {
      out.append(s.data(), n);
    }
    s.remove_prefix(n == 0 ? 1 : n);
  }
  return out;
}

}  // namespace base
