// UTF-8 checks for text that crosses an edge: layer names and labels are
// validated with them, and tools escape what the filesystem holds before
// printing it.
#ifndef DMTHIN_BASE_UTF8_H_
#define DMTHIN_BASE_UTF8_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace base {

// Length of the well-formed UTF-8 sequence at the start of `s` (1..4), or 0
// if it does not start with one (stray continuation byte, overlong form,
// surrogate, beyond U+10FFFF, cut short). 0 for an empty `s`.
size_t Utf8SequenceLength(absl::string_view s);

// True if all of `s` is well-formed UTF-8.
bool IsValidUtf8(absl::string_view s);

// `s` for a terminal or a line-oriented text stream: printable ASCII and
// well-formed non-ASCII UTF-8 as they are; a backslash as "\\"; newline,
// tab and carriage return as "\n", "\t", "\r"; every other control
// character (C0, DEL, C1) and
// every byte that is not part of well-formed UTF-8 as "\xNN". Reversible,
// one line, never raw control bytes.
std::string EscapeForText(absl::string_view s);

}  // namespace base
DMTHIN_API_END

#endif  // DMTHIN_BASE_UTF8_H_
