// Helpers shared by libdm's parsers of target params and status text.
// Private to libdm.
#ifndef DMTHIN_LIBDM_PARSE_UTIL_H_
#define DMTHIN_LIBDM_PARSE_UTIL_H_

#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"

namespace dm::internal {

// Lets std::visit take one lambda per alternative.
template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

// Strict unsigned decimal (no sign, no spaces, no hex); false also when the
// value does not fit in T.
template <typename T>
bool ParseDecimal(absl::string_view s, T* out) {
  if (s.empty() || s.size() > 20) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return absl::SimpleAtoi(s, out);
}

}  // namespace dm::internal

#endif  // DMTHIN_LIBDM_PARSE_UTIL_H_
